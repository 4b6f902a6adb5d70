"""Golden replay: ask the candidate and the stable version the same questions, compare answers.

The converter records golden inputs in the artifact manifest (`Manifest.golden`). Before a
rollout step passes, those inputs are sent to both versions' Triton servers (HTTP, the entry
model of the task, the same protocol every version speaks) and the answers compared:

* embeddings (feature-extraction): drift = 1 - mean cosine similarity;
* labels (text-classification) and filled tokens (fill-mask): drift = 1 - agreement;
* generated text (text-generation, greedy: top_k 1, fixed seed): drift = 1 - mean
  position-wise agreement of the whitespace tokens.

A metric window cannot see this kind of regression (a model that answers fast and without
errors, but differently), which is why it gates the step next to the Prometheus checks.
Never imports kopf or kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

# entry model -> (output tensor, comparison kind)
OUTPUTS = {
    "feature_extraction": ("EMBEDDING", "embedding"),
    "fill_mask": ("TOKEN", "token"),
    "text_classification": ("LABEL", "label"),
    "text_generation": ("TEXT_OUTPUT", "tokens"),
}
GENERATION_TOKENS = 8
TIMEOUT_SECONDS = 30.0


class ReplayError(RuntimeError):
    """A version could not answer a golden input (the message says which and why)."""


@dataclass(frozen=True)
class ReplayTargets:
    """Where to replay: the candidate's and the stable's Triton HTTP base URLs and the inputs.

    `inputs` are the candidate manifest's golden inputs; `entry_model` is the Triton model the
    clients call (`Manifest.entry_model`, `ENTRY_MODEL[task]`).
    """

    candidate_url: str
    stable_url: str
    entry_model: str
    inputs: tuple[str, ...]

    @classmethod
    def from_manifest(cls, manifest, candidate_url: str, stable_url: str) -> "ReplayTargets":
        """From the candidate's `lmo_runtime.manifest.Manifest` (its golden inputs)."""
        if manifest.golden is None or not manifest.golden.inputs:
            raise ReplayError(f"artifact {manifest.key[:8]} recorded no golden inputs")
        return cls(candidate_url, stable_url, manifest.entry_model, tuple(manifest.golden.inputs))


@dataclass(frozen=True)
class Drift:
    drift: float  # 0 = identical answers, 1 = nothing in common
    metric: str  # "1-cosine" | "1-agreement"
    samples: int


def _client(url: str):
    import tritonclient.http as httpclient

    parts = urlsplit(url if "://" in url else f"http://{url}")
    return httpclient.InferenceServerClient(
        parts.netloc,
        ssl=parts.scheme == "https",
        connection_timeout=TIMEOUT_SECONDS,
        network_timeout=TIMEOUT_SECONDS,
    )


def ask(url: str, entry_model: str, text: str):
    """One golden input to one version; the answer as a vector (embedding) or a string."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    if entry_model not in OUTPUTS:
        raise ReplayError(f"no golden replay for entry model {entry_model!r}")
    output, kind = OUTPUTS[entry_model]
    inputs = [httpclient.InferInput("TEXT", [1, 1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    if kind == "tokens":
        extra = {
            "MAX_TOKENS": ("INT32", np.int32, GENERATION_TOKENS),
            "TOP_K": ("INT32", np.int32, 1),
            "SEED": ("INT64", np.int64, 0),
        }
        for name, (dtype, np_type, value) in extra.items():
            t = httpclient.InferInput(name, [1, 1], dtype)
            t.set_data_from_numpy(np.array([[value]], dtype=np_type))
            inputs.append(t)
    client = _client(url)
    try:
        result = client.infer(
            entry_model, inputs, outputs=[httpclient.InferRequestedOutput(output)]
        )
    except InferenceServerException as err:
        raise ReplayError(f"{url} failed on golden input {text[:40]!r}: {err.message()}") from err
    except OSError as err:
        raise ReplayError(f"{url} unreachable: {err}") from err
    finally:
        client.close()
    value = result.as_numpy(output)
    if kind == "embedding":
        return np.asarray(value, dtype=np.float64).reshape(-1)
    item = np.asarray(value).reshape(-1)[0]
    return item.decode() if isinstance(item, bytes) else str(item)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0 or a.shape != b.shape:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def token_agreement(a: str, b: str) -> float:
    ta, tb = a.split(), b.split()
    if not ta and not tb:
        return 1.0
    same = sum(x == y for x, y in zip(ta, tb))
    return same / max(len(ta), len(tb))


def compare(kind: str, candidate: list, stable: list) -> Drift:
    """Drift between two lists of answers to the same inputs."""
    n = len(candidate)
    if kind == "embedding":
        sim = float(np.mean([cosine(a, b) for a, b in zip(candidate, stable)]))
        return Drift(max(0.0, 1.0 - sim), "1-cosine", n)
    if kind == "tokens":
        agree = float(np.mean([token_agreement(a, b) for a, b in zip(candidate, stable)]))
    else:
        agree = float(np.mean([a == b for a, b in zip(candidate, stable)]))
    return Drift(1.0 - agree, "1-agreement", n)


def replay_drift(targets: ReplayTargets) -> Drift:
    """Replay every golden input against both versions and measure the drift."""
    if not targets.inputs:
        raise ReplayError("no golden inputs to replay")
    kind = OUTPUTS.get(targets.entry_model, (None, None))[1]
    if kind is None:
        raise ReplayError(f"no golden replay for entry model {targets.entry_model!r}")
    cand = [ask(targets.candidate_url, targets.entry_model, t) for t in targets.inputs]
    base = [ask(targets.stable_url, targets.entry_model, t) for t in targets.inputs]
    return compare(kind, cand, base)
