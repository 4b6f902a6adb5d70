"""spec.logging: payload logging."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from lmo.api.base import SecretRef, _Model, _cel, _cel_rules


PAYLOAD_SINK = r"^(stdout|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?)$"


_SINK_FIX = (
    "spec.logging.payloads.sink must be stdout or s3://bucket/prefix (a bucket name of 3 to "
    "63 lowercase letters, digits, dots and dashes)"
)


class PayloadLogging(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(f"self.sink.matches('{PAYLOAD_SINK}')", _SINK_FIX, ".sink"),
        )
    )

    sample_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Share of requests logged, per version, from 0 (none) to 1 (every one).",
    )
    redact: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=list,
        max_length=32,
        description="Python regular expressions; every match in the input and output text is "
        "replaced by [REDACTED] before anything is written.",
    )
    sink: str = Field(
        default="stdout",
        max_length=1024,
        description="Where the JSON lines go: stdout (Triton's container log, for the "
        "cluster's log pipeline; `lmo logs` reads it) or s3://bucket/prefix (batched "
        "JSON-lines objects; credentials from secretRef). A slow or failing sink drops "
        "lines (counted in lmo_payloads_dropped_total), never requests.",
    )
    secret_ref: SecretRef | None = Field(
        default=None,
        description="Secret whose keys become the Triton container's environment for an "
        "s3:// sink (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...).",
    )

    @field_validator("redact")
    @classmethod
    def _regexes_compile(cls, value: list[str]) -> list[str]:
        for i, rule in enumerate(value):
            try:
                re.compile(rule)
            except re.error as err:
                raise ValueError(
                    f"spec.logging.payloads.redact[{i}] {rule!r} is not a valid regular "
                    f"expression ({err}); fix it or remove it (quote it in YAML with single "
                    "quotes so backslashes stay)"
                ) from None
        return value

    @field_validator("sink")
    @classmethod
    def _sink_scheme(cls, value: str) -> str:
        if not re.fullmatch(PAYLOAD_SINK, value):
            raise ValueError(f"{_SINK_FIX} (got {value!r})")
        return value


class Logging(_Model):
    payloads: PayloadLogging | None = Field(
        default=None,
        description="Sampled request/response logging done inside lmo's Triton models "
        "(the same on the cluster and under lmo up).",
    )
