"""spec.versions[]: the checkpoint each version serves, and spec.artifacts (the store)."""

from __future__ import annotations

from pydantic import Field

from lmo.api.base import ARTIFACT_URI, CHECKPOINT_URI, DNS_LABEL, MAX_VERSION_NAME, SecretRef, _Model
from lmo.api.optimize import Optimize


class Checkpoint(_Model):
    uri: str = Field(
        description="Where the Hugging Face-layout checkpoint lives (config.json, "
        "*.safetensors or pytorch_model.bin, tokenizer files): s3://bucket/prefix/, "
        "pvc://CLAIM/PATH, https://host/path/ (a directory listing or an archive), or "
        "file:///path (local mode only).",
        pattern=CHECKPOINT_URI,
        max_length=2048,
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Optional credentials for fetching the checkpoint."
    )
    sha256: str | None = Field(
        default=None,
        description="Optional digest of the checkpoint (sha256 over the sorted file "
        "digests, as `lmo convert --print-digest` prints it). A mismatch refuses the "
        "artifact and the serving version is left untouched.",
        pattern=r"^[a-f0-9]{64}$",
    )


class VersionSpec(_Model):
    name: str = Field(
        description="Version name, a DNS label (children are named <lm>-<version>).",
        pattern=DNS_LABEL,
        min_length=1,
        max_length=MAX_VERSION_NAME,
    )
    checkpoint: Checkpoint = Field(description="The model checkpoint to serve.")
    optimize: Optimize = Field(
        default_factory=Optimize, description="Conversion settings (precision, accuracy gate)."
    )
    traffic: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Percent of requests routed to this version. The traffic of all "
        "versions sums to 100; may be omitted when there is a single version (it then "
        "gets 100). During an automated rollout the weights actually routed are in "
        "status.versions[].traffic.",
    )


class Artifacts(_Model):
    uri: str = Field(
        description="Artifact store for this resource, overriding the operator-wide "
        "one: s3://bucket/prefix or pvc://claim/prefix (ReadWriteMany).",
        pattern=ARTIFACT_URI,
    )
    secret_ref: SecretRef | None = Field(
        default=None, description="Credentials for an s3:// artifact store."
    )
