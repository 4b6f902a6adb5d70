"""The Triton environment that turns on payload logging (spec.logging.payloads).

Payload logging runs inside lmo's Triton Python models (lmo_runtime.payloads), configured
by environment variables rather than by the model repository, so that changing the sampling
rate, the redaction rules or the sink never changes the artifact (nor its content key).
The operator puts them on the Triton container; `lmo up` on the tritonserver process: the
same function decides both.
"""

from __future__ import annotations

import json

from lmo.api import LanguageModelSpec
from lmo_runtime.payloads import ENV_NAME, ENV_PAYLOADS, ENV_VERSION


def payload_env(spec: LanguageModelSpec, lm_name: str, version: str) -> dict[str, str]:
    """Environment of one version's Triton server when spec.logging.payloads is set
    (LMO_PAYLOADS, and LMO_NAME / LMO_VERSION that label the records); else none, so a
    resource without payload logging keeps its pod template."""
    payloads = spec.logging.payloads if spec.logging is not None else None
    if payloads is None:
        return {}
    return {
        ENV_NAME: lm_name,
        ENV_VERSION: version,
        ENV_PAYLOADS: json.dumps(
            {"sampleRate": payloads.sample_rate, "redact": list(payloads.redact),
             "sink": payloads.sink},
            sort_keys=True, separators=(",", ":"),
        ),
    }


def payload_secret(spec: LanguageModelSpec) -> str | None:
    """The Secret whose keys the Triton container gets as environment (an s3:// sink)."""
    payloads = spec.logging.payloads if spec.logging is not None else None
    if payloads is None or payloads.secret_ref is None:
        return None
    return payloads.secret_ref.name
