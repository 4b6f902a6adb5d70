"""The API's constants (group, version, kind, field patterns), the model base and the duration parser."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "lmo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LanguageModel"
PLURAL = "languagemodels"
SINGULAR = "languagemodel"
SHORT_NAMES = ["lm"]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# <lm>-<version> must stay a valid Service name (63 chars): keep version names short.
MAX_VERSION_NAME = 20
MAX_VERSIONS = 8
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# Gateway API's Duration (GEP-2257): whole numbers, at most four parts, e.g. 30s, 1m30s, 500ms
GATEWAY_DURATION = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"
CHECKPOINT_URI = r"^(s3|pvc|https|http|file)://.+"
ARTIFACT_URI = r"^(s3|pvc|file)://.+"
EVALUATION_URI = r"^(s3|pvc|file|configmap)://.+"

DEFAULT_TRITON_IMAGE = "ghcr.io/lmo-dev/lmo-triton:0.1.0"
# The header naming the version that answered (and, by default, the A/B header a client sets
# to ask one): every version's front sets it, the HTTPRoute, the lmo up front door and the CLI
# read it. Spelled once, beside the front (lmo_runtime never imports the operator).
from lmo_runtime.front.wire import VERSION_HEADER  # noqa: E402


class _Model(BaseModel):
    """Base: unknown fields are refused, JSON names are camelCase, Python names snake_case."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=True,
        validate_default=True,
    )

    def to_dict(self) -> dict[str, Any]:
        """The JSON/YAML shape (camelCase, unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _cel_rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Rule(NamedTuple):
    """One rule across fields of an object, said once for both doors (kubebuilder's
    `+kubebuilder:validation:XValidation` marker next to the type): the CEL condition the API
    server checks (the CRD's `x-kubernetes-validations`, generated from it), the message both
    doors give, the field path it is about, and the same condition in Python for `lmo up` and
    `lmo render`. `broken(obj)` is falsy when `obj` keeps the rule, and True, or the details
    to add to the message (" (got '1h')"), when it breaks it."""

    cel: str
    message: str
    field_path: str | None
    broken: Callable[[Any], bool | str | None]

    def problem(self, obj: Any) -> str | None:
        """The message when `obj` breaks the rule (with the Python side's details), else None."""
        broken = self.broken(obj)
        if not broken:
            return None
        return self.message + (broken if isinstance(broken, str) else "")


def cel_rules(rules: Sequence[Rule]) -> dict[str, Any]:
    """The rules' CEL for the CRD (a model's `json_schema_extra`)."""
    return _cel_rules(*(_cel(r.cel, r.message, r.field_path) for r in rules))


def problems(obj: Any, rules: Sequence[Rule]) -> list[str]:
    """What `obj` breaks of `rules`, in order."""
    return [m for m in (r.problem(obj) for r in rules) if m is not None]


def rules_validator(rules: Sequence[Rule]) -> Any:
    """The Python door of `rules` for a model: refuses the first rule it breaks, as pydantic
    validators do (assign it in the class body: `_rules = rules_validator(RULES)`)."""

    def check(self: Any) -> Any:
        for r in rules:
            message = r.problem(self)
            if message is not None:
                raise ValueError(message)
        return self

    return model_validator(mode="after")(check)


class SecretRef(_Model):
    name: str = Field(
        description="Name of a Secret in the resource's namespace. For s3:// it holds "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL / "
        "AWS_REGION; for https:// an optional HTTP_AUTHORIZATION header value.",
        pattern=DNS_LABEL.replace("([-a-z0-9]*", "([-.a-z0-9]*"),
        max_length=253,
    )


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 30s, 2m, 1h30m or 500ms (every duration field of the
    spec: rollout steps, timeouts, the queue's, the ejection time)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration (e.g. 30s, 2m, 1h30m): {text!r}")
    return sum(float(n) * _UNIT[u] for n, u in parts)
