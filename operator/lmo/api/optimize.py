"""spec.versions[].optimize: precision, the accuracy gate and its evaluation set."""

from __future__ import annotations

from pydantic import Field

from lmo.api.base import EVALUATION_URI, _Model
from lmo.api.enums import Precision


class AccuracyGate(_Model):
    min_score: float = Field(
        default=0.99,
        ge=0.0,
        le=1.0,
        description="Lowest fidelity score accepted, measured at conversion against the "
        "original PyTorch model on held-out inputs (embedding cosine, top-1 agreement "
        "for fill-mask/classification, next-token top-1 agreement for generation).",
    )
    fallback: bool = Field(
        default=False,
        description="When the requested precision scores below minScore, try the next "
        "safer precision (int8-static -> int8 -> fp16 -> fp32) instead of failing.",
    )


class Evaluation(_Model):
    uri: str = Field(
        description="The user's own evaluation data, JSON Lines (one object per line): "
        "s3://bucket/key (read with the checkpoint's secretRef), pvc://CLAIM/PATH, "
        "configmap://NAME/KEY (a ConfigMap in the resource's namespace, mounted into the "
        "conversion Job) or file:///path (local mode; relative to the YAML file).",
        pattern=EVALUATION_URI,
        max_length=2048,
    )
    field: str = Field(
        default="text",
        min_length=1,
        max_length=256,
        description="Name of the field of each record that holds the text.",
    )
    limit: int = Field(
        default=512,
        ge=1,
        le=100000,
        description="Use at most this many records (the first ones). With int8-static, every "
        "second record (up to calibrationSamples) calibrates and the rest is scored by the "
        "accuracy gate; otherwise the gate scores them all.",
    )
    sha256: str | None = Field(
        default=None,
        description="Optional sha256 of the whole file (as sha256sum prints it); a mismatch "
        "refuses the conversion. Without it a changed file at the same uri is noticed only "
        "under lmo up, whose cache re-reads the data.",
        pattern=r"^[a-f0-9]{64}$",
    )


class Optimize(_Model):
    precision: Precision = Field(
        default=Precision.FP32,
        description="Numeric precision of the served model: fp32, fp16 (GPU serving), "
        "int8 (dynamic per-channel quantization) or int8-static (calibrated).",
    )
    accuracy_gate: AccuracyGate = Field(
        default_factory=AccuracyGate,
        description="Refuse an artifact whose measured fidelity is below the threshold.",
    )
    calibration_samples: int = Field(
        default=64,
        ge=8,
        le=4096,
        description="Number of sample inputs used to calibrate int8-static.",
    )
    evaluation: Evaluation | None = Field(
        default=None,
        description="Score the accuracy gate (and calibrate int8-static) on your own data "
        "instead of the built-in English sentences; its digest and the records used are "
        "reported in status.versions[].artifact.evaluation.",
    )
