"""Input drift: a cheap running summary of what a version is asked, against a reference.

Served side (`TritonDrift`, inside lmo's Triton Python models, per model): every input text's
token count goes into the histogram `lmo_input_tokens` and its unknown tokens into
`lmo_input_unknown_tokens_total`; for feature extraction a running mean of the returned
embeddings (exponential, `EMBEDDING_ALPHA` per text) is exported as its norm
(`lmo_input_embedding_mean_norm`) and its cosine to the reference mean
(`lmo_input_embedding_cosine`). The reference itself is exported as gauges
(`lmo_input_reference_tokens_mean`, `lmo_input_reference_unknown_ratio`,
`lmo_input_reference_embedding_mean_norm`) so one PromQL expression compares the two (the
chart's LmoInputDrift alert).

Reference side (`reference_summary`, at conversion): the same numbers over the conversion's
sample texts with the served tokenizer, written as `lmo_reference.json` beside model.py and
copied into the manifest (`input_reference`).

Copied into every model repository as `lmo_drift.py` (see lmo_runtime.payloads.ship): only
numpy is needed.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = "lmo_reference.json"
TOKEN_BUCKETS = [4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]
EMBEDDING_ALPHA = 0.01  # weight of one new text in the running mean embedding


def unknown_id(tokenizer: Any) -> int | None:
    """The id of the tokenizer's unknown token (None for byte-level BPE, which has none)."""
    token = getattr(getattr(tokenizer, "model", None), "unk_token", None)
    if not token:
        return None
    return tokenizer.token_to_id(token)


def token_counts(encodings: list[Any], unk: int | None) -> tuple[list[int], list[int]]:
    """(tokens per text, unknown tokens per text) of `tokenizers` encodings."""
    lengths = [len(e.ids) for e in encodings]
    unknown = [0 if unk is None else sum(1 for i in e.ids if i == unk) for e in encodings]
    return lengths, unknown


def reference_summary(tokenizer: Any, texts: list[str],
                      embeddings: list[list[float]] | None = None) -> dict[str, Any]:
    """The reference of `texts` (the conversion sample) with the served `tokenizer`."""
    lengths, unknown = token_counts(tokenizer.encode_batch(texts), unknown_id(tokenizer))
    total = sum(lengths)
    out: dict[str, Any] = {
        "texts": len(texts),
        "tokensMean": round(total / max(1, len(lengths)), 4),
        "tokensHistogram": {
            str(int(b)): sum(1 for n in lengths if n <= b) for b in TOKEN_BUCKETS
        },
        "unknownRatio": round(sum(unknown) / max(1, total), 6),
    }
    if embeddings:
        mean = np.asarray(embeddings, dtype=np.float64).mean(0)
        out["embeddingMean"] = [round(float(x), 6) for x in mean]
        out["embeddingMeanNorm"] = round(float(np.linalg.norm(mean)), 6)
    return out


def write_reference(version_dir: Path, reference: dict[str, Any]) -> Path:
    path = Path(version_dir) / REFERENCE_FILE
    path.write_text(json.dumps(reference, indent=1))
    return path


def load_reference(version_dir: Path | str) -> dict[str, Any] | None:
    path = Path(version_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


class RunningMean:
    """Exponential running mean of vectors; thread-safe."""

    def __init__(self, alpha: float = EMBEDDING_ALPHA):
        self.alpha = alpha
        self.mean: np.ndarray | None = None
        self.lock = threading.Lock()

    def update(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        with self.lock:
            for row in rows:
                self.mean = row.copy() if self.mean is None else (
                    (1 - self.alpha) * self.mean + self.alpha * row)
            return self.mean.copy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


class TritonDrift:
    """The drift metrics of one Triton model (`pb_utils.MetricFamily`), labelled `model`."""

    def __init__(self, pb_utils: Any, model: str, version_dir: Path | str,
                 embeddings: bool = False):
        MF = pb_utils.MetricFamily
        labels = {"model": model}
        self.reference = load_reference(version_dir) or {}
        # Triton deletes a metric with its Python object: keep every one. The backend wants a
        # metric freed before its family; CPython frees a list's items last to first.
        self._keep: list[Any] = []

        def metric(name: str, description: str, kind: Any, **kw: Any) -> Any:
            family = MF(name=name, description=description, kind=kind)
            m = family.Metric(labels=labels, **kw)
            self._keep += [family, m]
            return m

        self.tokens = metric("lmo_input_tokens", "Tokens per input text", MF.HISTOGRAM,
                             buckets=TOKEN_BUCKETS)
        self.unknown = metric("lmo_input_unknown_tokens_total",
                              "Unknown tokens in input texts", MF.COUNTER)
        if self.reference:
            metric("lmo_input_reference_tokens_mean",
                   "Mean tokens per text of the conversion sample", MF.GAUGE
                   ).set(float(self.reference.get("tokensMean", 0.0)))
            metric("lmo_input_reference_unknown_ratio",
                   "Unknown-token ratio of the conversion sample", MF.GAUGE
                   ).set(float(self.reference.get("unknownRatio", 0.0)))
        self.ref_mean = None
        self.running = None
        if embeddings:
            self.running = RunningMean()
            self.mean_norm = metric("lmo_input_embedding_mean_norm",
                                    "Norm of the running mean of returned embeddings", MF.GAUGE)
            if self.reference.get("embeddingMean"):
                self.ref_mean = np.asarray(self.reference["embeddingMean"], dtype=np.float64)
                metric("lmo_input_reference_embedding_mean_norm",
                       "Norm of the mean embedding of the conversion sample", MF.GAUGE
                       ).set(float(self.reference.get("embeddingMeanNorm", 0.0)))
                self.cosine = metric(
                    "lmo_input_embedding_cosine",
                    "Cosine between the running mean embedding and the conversion sample's",
                    MF.GAUGE)

    def observe(self, lengths: list[int], unknown: list[int]) -> None:
        for n in lengths:
            self.tokens.observe(float(n))
        bad = sum(unknown)
        if bad:
            self.unknown.increment(bad)

    def observe_embeddings(self, rows: np.ndarray) -> None:
        if self.running is None or len(rows) == 0:
            return
        mean = self.running.update(rows)
        norm = float(np.linalg.norm(mean))
        if math.isfinite(norm):
            self.mean_norm.set(norm)
        if self.ref_mean is not None and len(self.ref_mean) == len(mean):
            self.cosine.set(cosine(mean, self.ref_mean))


def write_references(repo_dir: Path, entry: str, texts: list[str],
                     golden: Any = None) -> dict[str, Any] | None:
    """At conversion: the reference of the sample `texts` (tokenized with the served
    tokenizer of the entry model, truncated as it serves) written beside every shipped
    lmo_drift.py of the repository; the embedding mean from the golden embeddings of
    feature extraction. Returns the reference (for the manifest), None without a tokenizer."""
    repo_dir = Path(repo_dir)
    dirs = sorted(p.parent for p in repo_dir.glob("*/*/lmo_drift.py"))
    version_dir = repo_dir / entry / "1"
    tokenizer_file = version_dir / "tokenizer.json"
    if not dirs or not tokenizer_file.is_file():
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    meta = version_dir / "lmo_model.json"
    if meta.is_file():
        tokenizer.enable_truncation(max_length=int(json.loads(meta.read_text())["max_length"]))
    embeddings = None
    if golden is not None and getattr(golden, "kind", "") == "embedding":
        embeddings = golden.outputs
    reference = reference_summary(tokenizer, texts, embeddings)
    for d in dirs:
        write_reference(d, reference)
    return reference
