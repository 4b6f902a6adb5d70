"""The contract between the operator and the conversion runtime.

* `ConversionRequest`: everything that determines an artifact. Its `key()` is the content
  address: `<store>/<key>/` holds the artifact, the conversion Job is named
  `<lm>-<version>-convert-<key[:8]>`, and the same request is never converted twice.
* `Manifest`: written as `manifest.json` beside the Triton model repository
  (`<store>/<key>/manifest.json`, repository in `<store>/<key>/model_repository/`).
  The operator copies its summary into `status.versions[].artifact`; a manifest with
  `accepted: false` records a refusal (accuracy gate, digest mismatch...) and is never served.

Both sides import this module; it depends on pydantic only (no torch, no kopf).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lmo_runtime import __version__ as CONVERTER_VERSION
from lmo_runtime.front.wire import ENTRY_MODEL  # noqa: F401 - the task's public model

MANIFEST_FILE = "manifest.json"
# Golden inputs copied out of the manifest (the conversion summary, status.versions[].artifact)
# are bounded: at most this many, each cut to this many characters.
GOLDEN_COPY_INPUTS = 8
GOLDEN_COPY_CHARS = 200
REPOSITORY_DIR = "model_repository"


# ConversionRequest fields left out of key() while None (added after keys were in use).
OPTIONAL_KEY_FIELDS = ("evaluation", "queue_max_size", "queue_timeout_microseconds",
                       "accelerator")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Evaluation(_Model):
    """The user's own evaluation data (`spec.versions[].optimize.evaluation`).

    JSON Lines at `uri` (s3://, file://, pvc://, or configmap://NAME/KEY for a ConfigMap
    mounted into the conversion Job); the text of each record is at `field`; the first
    `limit` records are used. They replace the built-in English sentences for the accuracy
    gate and the int8-static calibration (`lmo_runtime.evaluation`).
    """

    uri: str
    field: str = "text"
    limit: int = 512
    sha256: str | None = None  # of the whole file; a mismatch refuses the conversion


class ConversionRequest(_Model):
    """What to convert and how. Serving settings that shape config.pbtxt are part of it."""

    checkpoint_uri: str
    checkpoint_sha256: str | None = None
    task: Literal["text-generation", "fill-mask", "feature-extraction", "text-classification"]
    precision: Literal["fp32", "fp16", "int8", "int8-static"] = "fp32"
    min_score: float = 0.99
    fallback: bool = False
    calibration_samples: int = 64
    backend: Literal["onnxruntime", "python"] = "onnxruntime"
    max_batch_size: int = 16
    max_queue_delay_microseconds: int = 500
    gpus: int = 0
    evaluation: Evaluation | None = None
    # Triton's queue policy of the entry model (spec.serving.queue); None: unbounded
    queue_max_size: int | None = None
    queue_timeout_microseconds: int | None = None
    # spec.serving.accelerator when gpus > 0 (None: CUDA, the ONNX Runtime backend's default)
    accelerator: Literal["cuda", "tensorrt"] | None = None
    converter_version: str = CONVERTER_VERSION

    def key(self) -> str:
        """Content address: sha256 over the canonical JSON of the request.

        Fields added after the first release are left out while unset, so that requests
        which do not use them keep the key (and the cached artifact) they always had.
        """
        data = self.model_dump(mode="json")
        for name in OPTIONAL_KEY_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def short_key(self) -> str:
        return self.key()[:8]


class FileDigest(_Model):
    path: str  # relative to the artifact root
    sha256: str
    size_bytes: int


class Score(_Model):
    metric: str  # cosine | top1_agreement | next_token_top1 ...
    value: float
    threshold: float
    passed: bool
    samples: int
    details: dict[str, float] = Field(default_factory=dict)  # e.g. kl, max_abs_diff_fp32


class Golden(_Model):
    """Inputs recorded at conversion and the original model's answers to them.

    Rollouts replay `inputs` against a candidate and the stable version (output drift gate).
    """

    inputs: list[str]
    outputs: list[Any]  # per input: embedding list, label, filled token or next tokens
    kind: str  # embedding | label | token | tokens


class EvaluationRecord(_Model):
    """Which evaluation data a conversion scored (and calibrated) on."""

    source: str  # "builtin" (the built-in English sentences) or the evaluation uri
    sha256: str  # of the evaluation file (of the built-in texts for "builtin")
    records: int  # records used (after limit)
    heldout: int  # of those, scored by the accuracy gate
    calibration: int  # of those, used to calibrate int8-static (disjoint from heldout)

    def summary(self) -> dict[str, Any]:
        """The `status.versions[].artifact.evaluation` shape."""
        return {"source": self.source, "sha256": self.sha256, "records": self.records,
                "heldout": self.heldout, "calibration": self.calibration}


class Manifest(_Model):
    key: str
    request: ConversionRequest
    accepted: bool
    reason: str = ""  # why refused (names the field and the fix)
    task: str
    architecture: str = ""  # e.g. BertModel, GPT2LMHeadModel
    precision: str = ""  # precision actually produced (after any fallback)
    entry_model: str = ""  # top-level Triton model the client calls
    checkpoint_sha256: str = ""  # digest over the checkpoint's files (sorted)
    files: list[FileDigest] = Field(default_factory=list)
    size_bytes: int = 0  # model files (ONNX) only
    score: Score | None = None
    attempts: list[Score] = Field(default_factory=list)  # every precision tried, in order
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per step
    golden: Golden | None = None
    # input summary of the conversion sample (lmo_runtime.drift.reference_summary): what
    # the served input drift metrics are compared with
    input_reference: dict[str, Any] | None = None
    evaluation: EvaluationRecord | None = None  # the data the gate scored on
    # the most the served models pass through the Python backend's shared memory (/dev/shm)
    # at once, when it can exceed the pod's default (the KV cache of a BLS decoder); None: small
    shared_memory_bytes: int | None = None
    converter_version: str = CONVERTER_VERSION
    created_at: str = ""

    def digest(self) -> str:
        # fields added later are left out while unset: older manifests keep their digest
        exclude: dict[str, Any] = {"timings": True, "created_at": True}
        if self.evaluation is None:
            exclude["evaluation"] = True
        if self.shared_memory_bytes is None:
            exclude["shared_memory_bytes"] = True
        unset = {n for n in OPTIONAL_KEY_FIELDS if getattr(self.request, n) is None}
        if unset:
            exclude["request"] = unset
        blob = self.model_dump_json(exclude=exclude)
        return hashlib.sha256(blob.encode()).hexdigest()

    def golden_inputs(self) -> list[str]:
        """The golden inputs as copied out of the manifest (bounded, see GOLDEN_COPY_*)."""
        return bounded_golden_inputs(self.golden.inputs if self.golden is not None else [])

    def summary(self, uri: str) -> dict[str, Any]:
        """The `status.versions[].artifact` shape."""
        out = {
            "uri": uri,
            "sha256": self.digest(),
            "precision": self.precision,
            "sizeBytes": self.size_bytes,
            "score": None if self.score is None else round(self.score.value, 6),
            "key": self.key,
        }
        if self.entry_model:
            out["entryModel"] = self.entry_model
        if self.evaluation is not None:
            out["evaluation"] = self.evaluation.summary()
        if self.shared_memory_bytes:
            out["sharedMemoryBytes"] = self.shared_memory_bytes
        inputs = self.golden_inputs()
        if inputs:
            out["goldenInputs"] = inputs
        return out


def bounded_golden_inputs(inputs: Any) -> list[str]:
    """At most GOLDEN_COPY_INPUTS texts of at most GOLDEN_COPY_CHARS characters; anything
    that is not a list of strings gives none."""
    if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
        return []
    return [t[:GOLDEN_COPY_CHARS] for t in inputs[:GOLDEN_COPY_INPUTS]]
