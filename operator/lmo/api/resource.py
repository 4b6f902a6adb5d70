"""The LanguageModel resource: its spec (with the cross-field rules) and metadata."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from lmo.api.base import API_VERSION, DNS_LABEL, KIND, MAX_VERSIONS, _Model, cel_rules
from lmo.api.chat import ChatTemplate
from lmo.api.enums import Task
from lmo.api.logging import Logging
from lmo.api.protection import Protection
from lmo.api.rollout import Rollout
from lmo.api.routing import Routing
from lmo.api.rules import (
    _GPU_RULES,
    _PROTECTION_RULES,
    _SPEC_RULES,
    gpu_problems,
    protection_problems,
)
from lmo.api.serving import Autoscaling, Serving
from lmo.api.status import LanguageModelStatus
from lmo.api.versions import Artifacts, VersionSpec


class LanguageModelSpec(_Model):
    model_config = ConfigDict(
        json_schema_extra=cel_rules(_SPEC_RULES + _PROTECTION_RULES + _GPU_RULES))

    task: Task = Field(
        description="What the model does: text-generation (GPT-2, Llama, Qwen2, Mistral or "
        "Phi3 decoders), fill-mask, "
        "feature-extraction or text-classification (BERT family)."
    )
    versions: list[VersionSpec] = Field(
        min_length=1,
        max_length=MAX_VERSIONS,
        description="Model versions served side by side (1 to 8), each a checkpoint "
        "with its own conversion, Deployment and traffic share.",
        # a list-map keyed by name: the API server refuses duplicates and server-side apply
        # merges versions by name instead of replacing the list
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    rollout: Rollout | None = Field(
        default=None, description="Automated traffic shifting to the newest version."
    )
    routing: Routing = Field(
        default_factory=Routing, description="How traffic reaches the versions."
    )
    serving: Serving = Field(default_factory=Serving, description="Triton pods.")
    autoscaling: Autoscaling | None = Field(
        default=None,
        description="Per-version autoscaling on Triton metrics; without it each version "
        "runs serving.replicas replicas.",
    )
    artifacts: Artifacts | None = Field(
        default=None, description="Per-resource artifact store (overrides the Helm value)."
    )
    protection: Protection | None = Field(
        default=None,
        description="What every request must respect (enforced by the gateway on the "
        "cluster, by the front door under lmo up).",
    )
    logging: Logging | None = Field(
        default=None,
        description="What lmo's Triton models record besides metrics (payload logging).",
    )
    chat_template: ChatTemplate | None = Field(
        default=None,
        description="text-generation only: how chat messages become a prompt for POST "
        "/v1/chat/completions. Without it the checkpoint's own chat template is used "
        "(tokenizer_config.json chat_template or chat_template.jinja); with neither that "
        "endpoint answers 400.",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> "LanguageModelSpec":
        """The spec's rules: the first broken of _SPEC_RULES, else every broken protection
        rule at once."""
        for rule in _SPEC_RULES:
            message = rule.problem(self)
            if message is not None:
                raise ValueError(message)
        broken = protection_problems(self) + gpu_problems(self)
        if broken:
            raise ValueError("; ".join(broken))
        return self

    def effective_traffic(self) -> dict[str, int]:
        """Traffic per version as the spec asks for it (a lone version without traffic gets 100)."""
        if len(self.versions) == 1 and self.versions[0].traffic is None:
            return {self.versions[0].name: 100}
        return {v.name: v.traffic or 0 for v in self.versions}

    def version(self, name: str) -> VersionSpec:
        for v in self.versions:
            if v.name == name:
                return v
        raise KeyError(name)


class ObjectMeta(_Model):
    model_config = ConfigDict(extra="allow")
    name: str = Field(
        description="Resource name (a DNS label).", pattern=DNS_LABEL, max_length=40
    )
    namespace: str | None = None


class LanguageModel(_Model):
    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = Field(default=KIND)
    metadata: ObjectMeta
    spec: LanguageModelSpec
    status: LanguageModelStatus | None = None

    @model_validator(mode="after")
    def _kind(self) -> "LanguageModel":
        if self.api_version != API_VERSION or self.kind != KIND:
            raise ValueError(
                f"apiVersion/kind must be {API_VERSION} / {KIND} "
                f"(got {self.api_version} / {self.kind})"
            )
        return self
