"""The `LanguageModel` API (`lmo.dev/v1alpha1`): typed spec and status.

This module is the single source of truth for the API. The CRD in `crds/` is generated from
these models (`lmo.crd`), so every field carries a description (it is what
`kubectl explain` shows), defaults equal the CRD's defaults, and the rules that a schema
alone cannot express live next to the field as CEL (`x-kubernetes-validations`) *and* as a
pydantic validator with the same message, so the cluster and `lmo up` refuse the same
input with the same words.

Parse once, at the edge: `LanguageModel.model_validate(obj)` or `load_file(path)`.
Nothing here imports kopf or kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from lmo_runtime import gpu as gpu_rules  # the GPU rules, said once for both runtimes

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


# --------------------------------------------------------------------------- enums


class Task(str, Enum):
    TEXT_GENERATION = "text-generation"
    FILL_MASK = "fill-mask"
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_CLASSIFICATION = "text-classification"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT8_STATIC = "int8-static"


# From least to most faithful: `accuracyGate.fallback` walks this list to the right.
PRECISION_FALLBACK_ORDER = ["int8-static", "int8", "fp16", "fp32"]


class Strategy(str, Enum):
    MANUAL = "Manual"
    CANARY = "Canary"
    BLUE_GREEN = "BlueGreen"
    EXPERIMENT = "Experiment"


class OnDecision(str, Enum):
    PROMOTE = "Promote"
    REPORT = "Report"


class ExperimentPhase(str, Enum):
    RUNNING = "Running"
    DECIDED = "Decided"
    INCONCLUSIVE = "Inconclusive"


class RoutingProvider(str, Enum):
    GATEWAY_API = "GatewayAPI"
    SERVICE = "Service"


class PolicyProvider(str, Enum):
    NONE = "None"
    ENVOY_GATEWAY = "EnvoyGateway"
    ISTIO = "Istio"


class Engine(str, Enum):
    HPA = "HPA"
    KEDA = "KEDA"


class Metric(str, Enum):
    QUEUE_TIME = "QueueTime"
    INFERENCE_RATE = "InferenceRate"
    GPU_UTILIZATION = "GPUUtilization"
    CPU = "CPU"


class Backend(str, Enum):
    ONNXRUNTIME = "onnxruntime"
    PYTHON = "python"


class Accelerator(str, Enum):
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class Phase(str, Enum):
    PENDING = "Pending"
    CONVERTING = "Converting"
    CONVERTED = "Converted"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class RolloutPhase(str, Enum):
    IDLE = "Idle"
    WAITING = "Waiting"  # candidate not Ready yet
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ROLLED_BACK = "RolledBack"
    CONCLUDED = "Concluded"  # an Experiment reached its verdict; the spec's weights stay


# --------------------------------------------------------------------------- spec


class SecretRef(_Model):
    name: str = Field(
        description="Name of a Secret in the resource's namespace. For s3:// it holds "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_ENDPOINT_URL / "
        "AWS_REGION; for https:// an optional HTTP_AUTHORIZATION header value.",
        pattern=DNS_LABEL.replace("([-a-z0-9]*", "([-.a-z0-9]*"),
        max_length=253,
    )


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


_GATE_BOUNDS = "analysis.metrics[]: set max, min or maxIncreaseOverStable (a gate needs a bound)"
_GATE_ORDER = "analysis.metrics[]: min must not exceed max"


class MetricGate(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel("has(self.max) || has(self.min) || has(self.maxIncreaseOverStable)",
                 _GATE_BOUNDS),
            _cel("!has(self.max) || !has(self.min) || self.min <= self.max", _GATE_ORDER, ".min"),
        )
    )

    name: str = Field(
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        max_length=63,
        description="Name of the gate, as it appears in status.rollout.lastAnalysis and in "
        "the reasons of a pass or a failure (e.g. toxicity).",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL returning one number per version; {{version}}, {{namespace}}, "
        "{{name}} and {{window}} (the analysed window, e.g. 120s) are filled in. Judged for "
        "the candidate, and for the stable version when maxIncreaseOverStable is set.",
    )
    max: float | None = Field(
        default=None, description="The candidate's value must be at most this."
    )
    min: float | None = Field(
        default=None, description="The candidate's value must be at least this."
    )
    max_increase_over_stable: float | None = Field(
        default=None,
        ge=0,
        description="The candidate's value may exceed the stable version's value of the same "
        "query by at most this much (absolute, in the query's unit).",
    )

    @model_validator(mode="after")
    def _bounds(self) -> "MetricGate":
        if self.max is None and self.min is None and self.max_increase_over_stable is None:
            raise ValueError(f"{_GATE_BOUNDS} (gate {self.name!r})")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"{_GATE_ORDER} (gate {self.name!r}: min {self.min} > max {self.max})")
        return self


class Analysis(_Model):
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus base URL that scrapes the Triton pods, e.g. "
        "http://prometheus.monitoring:9090. Required for Canary and BlueGreen analysis.",
        pattern=r"^https?://.+",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Highest accepted failure ratio (nv_inference_request_failure over "
        "all requests) of the candidate during a step.",
    )
    max_latency_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description="Highest accepted p99 request latency in milliseconds (from Triton's "
        "latency summary, which lmo's Deployments enable; the mean latency when a server "
        "exports no quantiles).",
    )
    max_queue_time_ms: float | None = Field(
        default=None, gt=0, description="Highest accepted mean queue time in milliseconds."
    )
    max_output_drift: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Highest accepted drift (1 - agreement or 1 - cosine) between the "
        "candidate's and the stable version's answers to the golden inputs recorded at "
        "conversion.",
    )
    min_requests: int = Field(
        default=20,
        ge=0,
        description="Fewest candidate requests in a step needed to judge it; fewer holds "
        "the step (see inconclusiveLimit).",
    )
    inconclusive_limit: int = Field(
        default=3,
        ge=1,
        description="Consecutive holds for lack of traffic after which the rollout is "
        "rolled back.",
    )
    metrics: list[MetricGate] = Field(
        default_factory=list,
        max_length=16,
        description="Custom gates besides the built-in ones, each a PromQL query judged "
        "against max, min and/or maxIncreaseOverStable (Canary, BlueGreen and Experiment).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


_OUTCOME_PAIR = ("rollout.experiment.outcome: successQuery and totalQuery go together (set "
                 "both, or neither to count lmo's own feedback)")
_OUTCOME_EXCLUSIVE = ("rollout.experiment.outcome: feedback: true and successQuery/totalQuery "
                      "exclude each other; pick one")
_OUTCOME_NEEDS = ("rollout.experiment.outcome: feedback: false needs successQuery and "
                  "totalQuery")


class ExperimentOutcome(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel("has(self.successQuery) == has(self.totalQuery)", _OUTCOME_PAIR),
            _cel("!has(self.feedback) || !self.feedback || !has(self.successQuery)",
                 _OUTCOME_EXCLUSIVE),
            _cel("!has(self.feedback) || self.feedback || has(self.successQuery)", _OUTCOME_NEEDS),
        )
    )

    feedback: bool | None = Field(
        default=None,
        description="Count lmo's own per-version feedback (POST /v1/feedback with the "
        "x-lmo-request-id of an answer): the default when no queries are set.",
    )
    success_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL for the successes of one version since the experiment started "
        "(or the sum of scores in [0, 1]); {{version}}, {{namespace}}, {{name}} and "
        "{{window}} are filled in, e.g. "
        "sum(increase(shop_orders_total{lmo_version=\"{{version}}\"}[{{window}}])).",
    )
    total_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL for the trials (samples) of one version since the experiment "
        "started, with the same placeholders as successQuery.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "ExperimentOutcome":
        if (self.success_query is None) != (self.total_query is None):
            raise ValueError(_OUTCOME_PAIR)
        if self.feedback is True and self.success_query is not None:
            raise ValueError(_OUTCOME_EXCLUSIVE)
        if self.feedback is False and self.success_query is None:
            raise ValueError(_OUTCOME_NEEDS)
        return self

    @property
    def uses_feedback(self) -> bool:
        return self.success_query is None


_SAMPLES_ORDER = "rollout.experiment.maxSamples must be at least minSamples"


class Experiment(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel("!has(self.maxSamples) || self.maxSamples >= self.minSamples", _SAMPLES_ORDER,
                 ".maxSamples"),
        )
    )

    outcome: ExperimentOutcome = Field(
        default_factory=ExperimentOutcome,
        description="What counts as a success: lmo's feedback counts (default) or your own "
        "counters through successQuery and totalQuery.",
    )
    min_samples: int = Field(
        default=1000,
        ge=10,
        le=1_000_000_000,
        description="Samples (outcomes) each version needs before any decision; the "
        "sequential test is also tuned to be sharpest around this size.",
    )
    max_samples: int | None = Field(
        default=None,
        ge=10,
        description="Samples per version after which an undecided experiment ends "
        "Inconclusive (no limit when unset).",
    )
    max_duration: str | None = Field(
        default=None,
        pattern=DURATION,
        description="Time after which an undecided experiment ends Inconclusive, e.g. 72h "
        "(no limit when unset).",
    )
    confidence: float = Field(
        default=0.95,
        ge=0.8,
        le=0.999,
        description="Confidence of the always-valid interval: the chance of declaring a "
        "winner between equal versions, however often the numbers are looked at, stays "
        "below 1 - confidence.",
    )
    on_decision: OnDecision = Field(
        default=OnDecision.PROMOTE,
        description="Promote: the winner gets 100% of the traffic once Decided. Report: "
        "status.experiment says who won; the traffic stays as the spec says.",
    )

    @model_validator(mode="after")
    def _samples(self) -> "Experiment":
        if self.max_samples is not None and self.max_samples < self.min_samples:
            raise ValueError(f"{_SAMPLES_ORDER} (maxSamples {self.max_samples} < minSamples "
                             f"{self.min_samples})")
        return self


class Rollout(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(
                "self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
                "rollout.steps must be strictly increasing, e.g. [10, 25, 50, 100]",
                ".steps",
            ),
        )
    )
    strategy: Strategy = Field(
        default=Strategy.MANUAL,
        description="Manual: the versions' traffic fields are obeyed exactly. Canary: "
        "traffic moves to the newest version through `steps`, gated on Prometheus "
        "metrics and golden-output drift. BlueGreen: the newest version takes 100% at "
        "once after its checks pass. Experiment: the two versions with traffic keep the "
        "spec's weights while a sequential test compares their success rates "
        "(rollout.experiment); every stepDuration is one look, and the analysis gates "
        "still roll a failing candidate back.",
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        min_length=1,
        max_length=20,
        description="Candidate traffic percentages, strictly increasing; the last step "
        "should be 100 (the candidate becomes stable).",
    )
    step_duration: str = Field(
        default="2m",
        pattern=DURATION,
        description="How long each step holds before it is analysed (e.g. 30s, 2m, 1h).",
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Gates that advance or roll back a step."
    )
    paused: bool = Field(default=False, description="Hold the rollout at its current step.")
    scale_down_delay: str = Field(
        default="10m",
        pattern=DURATION,
        description="BlueGreen: how long the previous version is kept for instant "
        "rollback after the switch.",
    )
    experiment: Experiment | None = Field(
        default=None,
        description="Experiment: how the two versions with traffic are compared (outcome, "
        "sample sizes, confidence, what happens on a decision). Defaults apply when unset.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("rollout.steps must be strictly increasing, e.g. [10, 25, 50, 100]")
        return steps


class ParentRef(_Model):
    name: str = Field(description="Name of the Gateway the HTTPRoute attaches to.")
    namespace: str | None = Field(default=None, description="Namespace of the Gateway.")
    section_name: str | None = Field(default=None, description="Listener name on the Gateway.")


class AbTest(_Model):
    header: str = Field(
        default="x-lmo-version",
        pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$",
        max_length=256,
        description="HTTP header naming a version: a request carrying it goes to that "
        "version; other requests follow the weights.",
    )


class Sticky(_Model):
    header: str = Field(
        pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$",
        max_length=256,
        description="HTTP header identifying a user (e.g. x-user-id): requests with the same "
        "value go to the same version, and the users split as the weights say. On the "
        "cluster it becomes the HTTPRoute's header-based sessionPersistence (experimental "
        "Gateway API CRDs); under lmo up the value is hashed into the weight buckets.",
    )


class Mirror(_Model):
    version: str = Field(
        description="Version that receives a copy of requests.",
        pattern=DNS_LABEL,
        max_length=MAX_VERSION_NAME,
    )
    percent: int = Field(
        default=100, ge=1, le=100, description="Share of requests copied (responses discarded)."
    )


class Routing(_Model):
    provider: RoutingProvider = Field(
        default=RoutingProvider.GATEWAY_API,
        description="GatewayAPI: one HTTPRoute with weighted backends, header matches "
        "and a RequestMirror filter. Service: one Service over all versions, traffic "
        "approximated by replica counts (no header A/B, no mirror).",
    )
    parent_ref: ParentRef | None = Field(
        default=None, description="Gateway the HTTPRoute attaches to (GatewayAPI)."
    )
    hostnames: list[str] = Field(
        default_factory=list, max_length=16, description="Hostnames the HTTPRoute matches."
    )
    ab_test: AbTest | None = Field(
        default=None, description="Route requests naming a version in a header to it."
    )
    mirror: Mirror | None = Field(default=None, description="Shadow traffic to one version.")
    sticky: Sticky | None = Field(
        default=None,
        description="Send the same user (a header value) to the same version, consistent "
        "with the weights: what an Experiment needs so one user sees one version.",
    )
    policies: PolicyProvider = Field(
        default=PolicyProvider.NONE,
        description="Which gateway's own policies carry spec.protection beyond the standard "
        "HTTPRoute timeout. None: standard objects only (API keys, rate limits and the "
        "circuit breaker are refused). EnvoyGateway: a BackendTrafficPolicy (rate limit, "
        "circuit breaker, passive health check) and a SecurityPolicy (API keys) on the "
        "HTTPRoute. Istio: a DestinationRule per version (circuit breaker) and an "
        "AuthorizationPolicy; Istio has no API-key auth or local rate limit as a policy.",
    )
    network_policy: bool = Field(
        default=True,
        description="A NetworkPolicy per LanguageModel: only the gateway's namespace, the "
        "operator and the metrics scraper reach its Triton pods (selectors are Helm values).",
    )


class Toleration(_Model):
    # core/v1 Pod validation, checked here so a bad toleration is refused on apply instead of
    # failing the Triton Deployment later
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(
                "(has(self.key) && self.key != '') || "
                "(has(self.operator) && self.operator == 'Exists')",
                "tolerations[].operator must be Exists when key is empty",
            ),
            _cel(
                "!has(self.operator) || self.operator != 'Exists' || "
                "!has(self.value) || self.value == ''",
                "tolerations[].value must be empty when operator is Exists",
                ".value",
            ),
            _cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerations[].tolerationSeconds needs effect: NoExecute",
                ".tolerationSeconds",
            ),
        )
    )
    key: str | None = Field(
        default=None, description="Taint key the toleration applies to.", max_length=317
    )
    operator: str | None = Field(
        default=None,
        description="Exists or Equal (the default).",
        pattern=r"^(Exists|Equal)$",
        max_length=6,
    )
    value: str | None = Field(
        default=None, description="Taint value (with Equal).", max_length=63
    )
    effect: str | None = Field(
        default=None,
        description="NoSchedule, PreferNoSchedule or NoExecute.",
        pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$",
        max_length=16,
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )

    @model_validator(mode="after")
    def _pod_rules(self) -> "Toleration":
        if not self.key and self.operator != "Exists":
            raise ValueError("tolerations[].operator must be Exists when key is empty")
        if self.operator == "Exists" and self.value:
            raise ValueError("tolerations[].value must be empty when operator is Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerations[].tolerationSeconds needs effect: NoExecute")
        return self


# A resource.Quantity (k8s.io/apimachinery): 500m, 2, 4Gi, 1e3.
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = Annotated[str, Field(pattern=QUANTITY, max_length=64)]


class Resources(_Model):
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resource requests of the Triton container."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Resource limits of the Triton container (GPU limits come from gpus).",
    )


class Batching(_Model):
    max_batch_size: int = Field(
        default=16, ge=0, le=1024, description="Triton max_batch_size (0 disables batching)."
    )
    max_queue_delay_microseconds: int = Field(
        default=500,
        ge=0,
        le=10_000_000,
        description="How long Triton's dynamic batcher waits to fill a batch.",
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


class Queue(_Model):
    max_size: int = Field(
        ge=1,
        le=1_000_000,
        description="Most requests waiting in Triton's queue (default_queue_policy."
        "max_queue_size); one more is rejected at once.",
    )
    timeout: str | None = Field(
        default=None,
        pattern=GATEWAY_DURATION,
        description="Longest a request may wait in the queue (e.g. 2s, 500ms; "
        "default_timeout_microseconds, timeout_action REJECT); unset: no limit.",
    )


class Serving(_Model):
    image: str = Field(
        default=DEFAULT_TRITON_IMAGE,
        description="Triton server image. The default is lmo's image (the official "
        "Triton image plus tokenizers and onnxruntime for the pre/post-processing models).",
    )
    backend: Backend = Field(
        default=Backend.ONNXRUNTIME,
        description="onnxruntime: Triton's ONNX Runtime backend (official images). "
        "python: ONNX Runtime inside the Python backend (Triton builds without it).",
    )
    gpus: int = Field(
        default=0,
        ge=0,
        le=16,
        description="GPUs per replica. 0 serves on CPU; >0 adds GPU limits and KIND_GPU "
        "instance groups.",
    )
    gpu_resource: str = Field(
        default="nvidia.com/gpu",
        pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
        description="Extended resource name of the GPU device plugin.",
    )
    accelerator: Accelerator = Field(
        default=Accelerator.CUDA,
        description="How Triton's ONNX Runtime backend runs the model on GPUs: cuda (the "
        "CUDA execution provider) or tensorrt (TensorRT engines built at model load in the "
        "precision converted, with shape profiles from batching and the tokenizer's max "
        "length, cached on an emptyDir). tensorrt needs a GPU and backend onnxruntime, and "
        "does not apply to text-generation. Part of config.pbtxt: changing it converts anew.",
    )
    runtime_class_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="RuntimeClass of the Triton pods (e.g. nvidia, where the NVIDIA container "
        "runtime is not the node's default).",
    )
    replicas: int = Field(
        default=1, ge=0, le=100, description="Replicas per version when autoscaling is not set."
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the Triton pods must run on."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description="Tolerations of the Triton pods (e.g. GPU taints).",
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Pod affinity (core/v1 Affinity), passed through unchanged.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    resources: Resources = Field(
        default_factory=Resources, description="Resources of the Triton container."
    )
    batching: Batching = Field(
        default_factory=Batching, description="Dynamic batching of the served model."
    )
    queue: "Queue | None" = Field(
        default=None,
        description="Triton's queue policy for the model clients call: a request that finds "
        "the queue full, or waits longer than timeout, is rejected at once (the client gets "
        "503 with Retry-After) instead of queueing without bound. Part of config.pbtxt, so "
        "setting it converts anew; leaving it out keeps existing conversions.",
    )

    def gpu_count(self) -> int:
        """GPUs each Triton pod gets, by either field: `gpus`, else a `gpuResource` limit in
        `resources` (a pod given a GPU only there still serves on it, with KIND_GPU)."""
        if self.gpus > 0:
            return self.gpus
        limit = self.resources.limits.get(self.gpu_resource)
        try:
            return max(0, int(limit)) if limit is not None else 0
        except ValueError:
            return 0


_MIN_ZERO_CPU = (
    "autoscaling.minReplicas: 0 cannot be used with metric: CPU (KEDA's cpu scaler cannot "
    "wake a Deployment from zero pods); use QueueTime or InferenceRate, or minReplicas >= 1"
)
# what autoscaling.target must look like for each metric (CEL rules and the validator)
_TARGET_UNITS = {
    "QueueTime": "autoscaling.target: metric QueueTime needs a duration such as 50ms or 0.2s",
    "InferenceRate": "autoscaling.target: metric InferenceRate needs inferences per second "
    "per pod as a plain number such as 100",
    "GPUUtilization": "autoscaling.target: metrics GPUUtilization and CPU need a percentage "
    "such as 70% (the default 50ms fits QueueTime only)",
}
_TARGET_PATTERNS = {
    "QueueTime": r"[0-9]+(\.[0-9]+)?(ms|s)",
    "InferenceRate": r"[0-9]+(\.[0-9]+)?",
    "GPUUtilization": r"[0-9]+(\.[0-9]+)?%?",
    "CPU": r"[0-9]+(\.[0-9]+)?%?",
}


class Autoscaling(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            ),
            _cel(
                "self.minReplicas > 0 || self.engine == 'KEDA'",
                "autoscaling.minReplicas: 0 needs engine: KEDA (HPA cannot scale to zero)",
                ".minReplicas",
            ),
            _cel(
                "self.minReplicas > 0 || self.metric != 'CPU'",
                _MIN_ZERO_CPU,
                ".minReplicas",
            ),
            _cel(
                "self.metric != 'QueueTime' || self.target.matches('^[0-9]+([.][0-9]+)?(ms|s)$')",
                _TARGET_UNITS["QueueTime"],
                ".target",
            ),
            _cel(
                "self.metric != 'InferenceRate' || self.target.matches('^[0-9]+([.][0-9]+)?$')",
                _TARGET_UNITS["InferenceRate"],
                ".target",
            ),
            _cel(
                "!(self.metric in ['GPUUtilization', 'CPU']) "
                "|| self.target.matches('^[0-9]+([.][0-9]+)?%?$')",
                _TARGET_UNITS["GPUUtilization"],
                ".target",
            ),
        )
    )
    engine: Engine = Field(
        default=Engine.HPA,
        description="HPA (autoscaling/v2 on custom metrics via prometheus-adapter) or "
        "KEDA (ScaledObject with Prometheus triggers; allows minReplicas 0).",
    )
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas per version.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas per version.")
    metric: Metric = Field(
        default=Metric.QUEUE_TIME,
        description="QueueTime (mean Triton queue time per request), InferenceRate "
        "(inferences/s per pod), GPUUtilization (DCGM) or CPU.",
    )
    target: str = Field(
        default="50ms",
        max_length=16,
        pattern=r"^[0-9]+(\.[0-9]+)?(ms|s|%)?$",
        description="Target value per pod: a duration for QueueTime (50ms), a rate for "
        "InferenceRate (100), a percentage for GPUUtilization and CPU (70%).",
    )
    cooldown_seconds: int = Field(
        default=300,
        ge=0,
        description="KEDA cooldown before scaling to zero; long enough for a GPU node to "
        "come up again.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        if self.min_replicas == 0 and self.engine != Engine.KEDA.value:
            raise ValueError(
                "autoscaling.minReplicas: 0 needs engine: KEDA (HPA cannot scale to zero)"
            )
        if self.min_replicas == 0 and self.metric == Metric.CPU.value:
            raise ValueError(_MIN_ZERO_CPU)
        if not re.fullmatch(_TARGET_PATTERNS[self.metric], self.target):
            key = "GPUUtilization" if self.metric == Metric.CPU.value else self.metric
            raise ValueError(f"{_TARGET_UNITS[key]} (got {self.target!r})")
        return self


class ApiKeys(_Model):
    secret_ref: SecretRef = Field(
        description="Secret whose data keys are client ids and whose values are their API "
        "keys. Clients send Authorization: Bearer <key>."
    )


class Auth(_Model):
    api_keys: ApiKeys = Field(
        description="API-key authentication: no key -> 401, an unknown key -> 403 (Envoy "
        "Gateway answers 401 for both)."
    )


class RateLimit(_Model):
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(
                "!has(self.burst) || self.burst >= self.requestsPerSecond",
                "spec.protection.rateLimit.burst must be at least requestsPerSecond",
                ".burst",
            ),
        )
    )

    requests_per_second: int = Field(
        ge=1, le=1_000_000, description="Sustained requests per second admitted (token refill)."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Bucket size: requests admitted at once after a quiet spell "
        "(default requestsPerSecond). Beyond the rate the client gets 429 with Retry-After.",
    )
    per_client: bool = Field(
        default=False,
        description="One bucket per client id (needs auth.apiKeys), else one for the route.",
    )

    @model_validator(mode="after")
    def _burst(self) -> "RateLimit":
        if self.burst is not None and self.burst < self.requests_per_second:
            raise ValueError("spec.protection.rateLimit.burst must be at least requestsPerSecond")
        return self

    @property
    def bucket(self) -> int:
        return self.burst if self.burst is not None else self.requests_per_second


class CircuitBreaker(_Model):
    max_pending_requests: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Requests in flight per version; one more gets a fast 503 with "
        "Retry-After.",
    )
    consecutive_errors: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="5xx answers (or no answer) in a row that eject a version for "
        "ejectionTime; its traffic goes to the other versions meanwhile, then one probe "
        "request decides whether it is back.",
    )
    ejection_time: str = Field(
        default="30s",
        pattern=GATEWAY_DURATION,
        description="How long an ejected version takes no requests (e.g. 30s).",
    )


class Protection(_Model):
    timeout: str | None = Field(
        default=None,
        pattern=GATEWAY_DURATION,
        description="Longest a whole request may take (e.g. 30s, 1m30s, 500ms); beyond it "
        "the client gets 504. On the cluster it is the HTTPRoute rules' timeouts.request "
        "(standard Gateway API), under lmo up the front door's.",
    )
    auth: Auth | None = Field(
        default=None,
        description="Who may call (needs routing.policies: EnvoyGateway on the cluster).",
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="Token bucket over the whole route or per client (needs routing.policies: "
        "EnvoyGateway on the cluster).",
    )
    circuit_breaker: CircuitBreaker | None = Field(
        default=None,
        description="Per-version pending limit and ejection of a failing version (needs "
        "routing.policies: EnvoyGateway or Istio on the cluster).",
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


_EXPERIMENT_ARMS = ("spec.versions: an Experiment compares exactly two versions with traffic "
                    "above 0 (e.g. v1: 50, v2: 50; others 0)")
_STICKY_PROVIDER = ("spec.routing.sticky needs provider: GatewayAPI (a plain Service cannot "
                    "hash a header)")

_SPEC_RULES = _cel_rules(
    _cel(
        "self.versions.all(v, self.versions.exists_one(w, w.name == v.name))",
        "spec.versions[].name must be unique",
        ".versions",
    ),
    _cel(
        "(size(self.versions) == 1 && !has(self.versions[0].traffic)) || "
        "self.versions.map(v, has(v.traffic) ? v.traffic : 0).sum() == 100",
        "spec.versions[].traffic must sum to 100 (it may be omitted only with a single version)",
        ".versions",
    ),
    _cel(
        "!has(self.routing) || !has(self.routing.mirror) || "
        "self.versions.exists(v, v.name == self.routing.mirror.version)",
        "spec.routing.mirror.version must name a version in spec.versions",
        ".routing.mirror.version",
    ),
    _cel(
        "!has(self.routing) || self.routing.provider != 'Service' || "
        "(!has(self.routing.abTest) && !has(self.routing.mirror))",
        "spec.routing.abTest and spec.routing.mirror need provider: GatewayAPI "
        "(a plain Service cannot match headers or mirror)",
        ".routing",
    ),
    _cel(
        "!has(self.rollout) || self.rollout.strategy != 'BlueGreen' || size(self.versions) <= 2",
        "spec.versions: BlueGreen serves at most two versions (stable and candidate)",
        ".versions",
    ),
    _cel(
        "!has(self.rollout) || self.rollout.strategy != 'Experiment' || "
        "size(self.versions.filter(v, has(v.traffic) && v.traffic > 0)) == 2",
        _EXPERIMENT_ARMS,
        ".versions",
    ),
    _cel(
        "!has(self.routing) || self.routing.provider != 'Service' || !has(self.routing.sticky)",
        _STICKY_PROVIDER,
        ".routing.sticky",
    ),
    _cel(
        "!has(self.rollout) || self.rollout.strategy == 'Manual' || "
        "(has(self.rollout.analysis) && has(self.rollout.analysis.prometheusUrl))",
        "spec.rollout.analysis.prometheusUrl is required for Canary and BlueGreen",
        ".rollout.analysis.prometheusUrl",
    ),
    _cel(
        "!has(self.protection) || !has(self.protection.timeout) || !has(self.routing) || "
        "self.routing.provider != 'Service'",
        "spec.protection.timeout needs provider: GatewayAPI (a plain Service has no request "
        "timeout)",
        ".protection.timeout",
    ),
    _cel(
        "!has(self.autoscaling) || self.autoscaling.metric != 'GPUUtilization' || "
        "(has(self.serving) && self.serving.gpus > 0)",
        "spec.autoscaling.metric: GPUUtilization needs spec.serving.gpus > 0",
        ".autoscaling.metric",
    ),
)


# The spec's protection rules, each said once for both doors: (CEL condition for the API
# server, message, field path, the same condition in Python for lmo up and lmo render: True
# when the spec breaks the rule). `protection_problems` runs the Python side.
_POLICIES = "(has(self.routing) && has(self.routing.policies) ? self.routing.policies : 'None')"
_ENVOY, _NONE = "EnvoyGateway", "None"


def _rate(spec: "LanguageModelSpec") -> "RateLimit | None":
    return spec.protection.rate_limit if spec.protection is not None else None


_PROTECTION_RULES: list[tuple[str, str, str, Callable[["LanguageModelSpec"], bool]]] = [
    (
        f"!has(self.protection) || !has(self.protection.auth) || {_POLICIES} == 'EnvoyGateway'",
        "spec.protection.auth needs spec.routing.policies: EnvoyGateway (the standard "
        "Gateway API and Istio have no API-key authentication from a Secret)",
        ".protection.auth",
        lambda s: s.protection is not None and s.protection.auth is not None
        and s.routing.policies != _ENVOY,
    ),
    (
        f"!has(self.protection) || !has(self.protection.rateLimit) || "
        f"{_POLICIES} == 'EnvoyGateway'",
        "spec.protection.rateLimit needs spec.routing.policies: EnvoyGateway (the standard "
        "Gateway API and Istio have no rate-limit policy)",
        ".protection.rateLimit",
        lambda s: _rate(s) is not None and s.routing.policies != _ENVOY,
    ),
    (
        f"!has(self.protection) || !has(self.protection.circuitBreaker) || "
        f"{_POLICIES} != 'None'",
        "spec.protection.circuitBreaker needs spec.routing.policies: EnvoyGateway or Istio "
        "(the standard Gateway API has no circuit breaker)",
        ".protection.circuitBreaker",
        lambda s: s.protection is not None and s.protection.circuit_breaker is not None
        and s.routing.policies == _NONE,
    ),
    (
        "!has(self.protection) || !has(self.protection.rateLimit) || "
        "!has(self.protection.rateLimit.perClient) || !self.protection.rateLimit.perClient || "
        "has(self.protection.auth)",
        "spec.protection.rateLimit.perClient needs spec.protection.auth (the client id comes "
        "from the API key)",
        ".protection.rateLimit.perClient",
        lambda s: _rate(s) is not None and _rate(s).per_client  # type: ignore[union-attr]
        and s.protection.auth is None,  # type: ignore[union-attr]
    ),
    (
        "!has(self.protection) || !has(self.protection.rateLimit) || "
        "!has(self.protection.rateLimit.burst) || "
        "self.protection.rateLimit.burst == self.protection.rateLimit.requestsPerSecond || "
        f"{_POLICIES} != 'EnvoyGateway'",
        "spec.protection.rateLimit.burst must equal requestsPerSecond (or be left out) with "
        "routing.policies: EnvoyGateway: its local rate limit refills the whole bucket once "
        "a second",
        ".protection.rateLimit.burst",
        lambda s: _rate(s) is not None and _rate(s).burst is not None  # type: ignore[union-attr]
        and _rate(s).burst != _rate(s).requests_per_second  # type: ignore[union-attr]
        and s.routing.policies == _ENVOY,
    ),
    (
        f"{_POLICIES} == 'None' || !has(self.routing.provider) || "
        "self.routing.provider == 'GatewayAPI'",
        "spec.routing.policies needs provider: GatewayAPI (the policies attach to the "
        "HTTPRoute and its backends)",
        ".routing.policies",
        lambda s: s.routing.policies != _NONE
        and s.routing.provider != RoutingProvider.GATEWAY_API.value,
    ),
    (
        "!has(self.serving) || !has(self.serving.queue) || !has(self.serving.batching) || "
        "!has(self.serving.batching.maxBatchSize) || self.serving.batching.maxBatchSize > 0",
        "spec.serving.queue needs spec.serving.batching.maxBatchSize > 0 (Triton's queue "
        "policy belongs to its dynamic batcher)",
        ".serving.queue",
        lambda s: s.serving.queue is not None and s.serving.batching.max_batch_size == 0,
    ),
]


# The spec's GPU rules (lmo_runtime.gpu says why), in the shape of _PROTECTION_RULES. A pod
# has a GPU by either field: serving.gpus, or a serving.gpuResource limit in serving.resources
# (Serving.gpu_count). int8 / int8-static on GPUs is not a spec rule: the converter refuses
# it (the version fails with the reason and what to use) or, with accuracyGate.fallback,
# converts the next precision a GPU runs (fp16), so one rule serves both runtimes.
_HAS_GPU = (
    "(has(self.serving) && ((has(self.serving.gpus) && self.serving.gpus > 0) || "
    "(has(self.serving.resources) && has(self.serving.resources.limits) && "
    "(has(self.serving.gpuResource) ? self.serving.gpuResource : 'nvidia.com/gpu') "
    "in self.serving.resources.limits)))"
)
_TENSORRT = ("has(self.serving) && has(self.serving.accelerator) && "
             "self.serving.accelerator == 'tensorrt'")


_GPU_RULES: list[tuple[str, str, str, Callable[["LanguageModelSpec"], bool]]] = [
    (
        f"!({_TENSORRT}) || ({_HAS_GPU} && (!has(self.serving.backend) || "
        "self.serving.backend == 'onnxruntime'))",
        "spec." + gpu_rules.TENSORRT_NEEDS_GPU,
        ".serving.accelerator",
        lambda s: s.serving.accelerator == Accelerator.TENSORRT.value
        and (s.serving.gpu_count() == 0 or s.serving.backend != Backend.ONNXRUNTIME.value),
    ),
    (
        f"!({_TENSORRT}) || self.task != 'text-generation'",
        "spec." + gpu_rules.TENSORRT_TEXT_GENERATION,
        ".serving.accelerator",
        lambda s: s.serving.accelerator == Accelerator.TENSORRT.value
        and s.task == Task.TEXT_GENERATION.value,
    ),
]


def gpu_problems(spec: "LanguageModelSpec") -> list[str]:
    """The Python side of _GPU_RULES: what the spec asks a GPU to do that it would not."""
    return [message for _, message, _, broken in _GPU_RULES if broken(spec)]


def protection_problems(spec: "LanguageModelSpec") -> list[str]:
    """The Python side of _PROTECTION_RULES: what the spec asks that its gateway cannot do."""
    return [message for _, message, _, broken in _PROTECTION_RULES if broken(spec)]


def traffic_sum_problem(weights: dict[str, int]) -> str | None:
    """The one rule for traffic weights (the CRD's CEL rule says it for the API server):
    they sum to 100. None when they do, else what is wrong ("it sums to 110")."""
    total = sum(int(w) for w in weights.values())
    return None if total == 100 else f"it sums to {total}"


class LanguageModelSpec(_Model):
    model_config = ConfigDict(json_schema_extra=_cel_rules(
        *_SPEC_RULES["x-kubernetes-validations"],
        *(_cel(rule, msg, path) for rule, msg, path, _ in _PROTECTION_RULES + _GPU_RULES)
    ))

    task: Task = Field(
        description="What the model does: text-generation (GPT-2 family), fill-mask, "
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

    @model_validator(mode="after")
    def _cross_field(self) -> "LanguageModelSpec":
        names = [v.name for v in self.versions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"spec.versions[].name must be unique (repeated: {', '.join(dupes)})")
        if not (len(self.versions) == 1 and self.versions[0].traffic is None):
            problem = traffic_sum_problem({v.name: v.traffic or 0 for v in self.versions})
            if problem:
                raise ValueError(
                    "spec.versions[].traffic must sum to 100 (it may be omitted only with a "
                    f"single version); {problem}"
                )
        r = self.routing
        if r.mirror is not None and r.mirror.version not in names:
            raise ValueError(
                f"spec.routing.mirror.version must name a version in spec.versions "
                f"({r.mirror.version!r} is not one of {', '.join(names)})"
            )
        if r.provider == RoutingProvider.SERVICE.value and r.sticky is not None:
            raise ValueError(_STICKY_PROVIDER)
        if r.provider == RoutingProvider.SERVICE.value and (r.ab_test or r.mirror):
            raise ValueError(
                "spec.routing.abTest and spec.routing.mirror need provider: GatewayAPI "
                "(a plain Service cannot match headers or mirror)"
            )
        if (r.provider == RoutingProvider.SERVICE.value and self.protection is not None
                and self.protection.timeout is not None):
            raise ValueError(
                "spec.protection.timeout needs provider: GatewayAPI (a plain Service has no "
                "request timeout)"
            )
        if self.rollout is not None:
            if self.rollout.strategy == Strategy.BLUE_GREEN.value and len(self.versions) > 2:
                raise ValueError(
                    "spec.versions: BlueGreen serves at most two versions (stable and candidate)"
                )
            if self.rollout.strategy == Strategy.EXPERIMENT.value:
                arms = [v.name for v in self.versions if (v.traffic or 0) > 0]
                if len(arms) != 2:
                    raise ValueError(f"{_EXPERIMENT_ARMS}; versions with traffic: "
                                     f"{', '.join(arms) or 'none'}")
            if (
                self.rollout.strategy != Strategy.MANUAL.value
                and not self.rollout.analysis.prometheus_url
            ):
                raise ValueError(
                    "spec.rollout.analysis.prometheusUrl is required for Canary and BlueGreen"
                )
        if (
            self.autoscaling is not None
            and self.autoscaling.metric == Metric.GPU_UTILIZATION.value
            and self.serving.gpus == 0
        ):
            raise ValueError("spec.autoscaling.metric: GPUUtilization needs spec.serving.gpus > 0")
        problems = protection_problems(self) + gpu_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
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


# --------------------------------------------------------------------------- status


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(description="Converted, Deployed, Routed or Ready.")
    status: str = Field(description="True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = Field(description="CamelCase reason for the condition's last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


class EvaluationStatus(_Model):
    source: str = Field(
        description="The evaluation data scored: its uri, or builtin (the built-in English "
        "sentences)."
    )
    sha256: str = Field(description="sha256 of the evaluation file (or of the built-in texts).")
    records: int = Field(description="Records used (after limit).")
    heldout: int = Field(description="Records the accuracy gate scored.")
    calibration: int = Field(description="Records that calibrated int8-static (disjoint).")


class ArtifactStatus(_Model):
    uri: str = Field(description="Where the Triton model repository and its manifest live.")
    sha256: str | None = Field(default=None, description="Digest of the artifact manifest.")
    precision: str | None = Field(default=None, description="Precision actually produced.")
    size_bytes: int | None = Field(default=None, description="Size of the model files.")
    score: float | None = Field(default=None, description="Measured fidelity score.")
    key: str | None = Field(
        default=None, description="Content key: checkpoint + settings + converter version."
    )
    entry_model: str | None = Field(
        default=None, description="Triton model clients call (the golden replay calls it too)."
    )
    golden_inputs: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None,
        max_length=8,
        description="Golden inputs recorded at conversion (at most 8, each cut to 200 "
        "characters). A rollout with analysis.maxOutputDrift replays them against this "
        "version and the stable one; an artifact without them fails that check.",
    )
    evaluation: EvaluationStatus | None = Field(
        default=None,
        description="The data the accuracy gate scored on (spec.versions[].optimize."
        "evaluation, or the built-in sentences): digest and records used.",
    )


class VersionStatus(_Model):
    name: str = Field(description="Version name.")
    phase: Phase = Field(default=Phase.PENDING, description="Where this version is.")
    artifact: ArtifactStatus | None = Field(
        default=None, description="The artifact this version serves (or will serve)."
    )
    traffic: int = Field(default=0, description="Percent of requests routed to it now.")
    replicas: int = Field(default=0, description="Triton replicas.")
    ready_replicas: int = Field(default=0, description="Triton replicas that are ready.")
    serving_key: str | None = Field(
        default=None,
        description="Content key of the artifact every Triton pod of this version serves: "
        "set once its Deployment finished rolling out to that artifact, empty while pods "
        "of another artifact remain. A rollout counts the version ready only for it.",
    )
    message: str = Field(default="", description="Why it is in this phase.")


class RolloutStatus(_Model):
    phase: RolloutPhase = Field(default=RolloutPhase.IDLE, description="Rollout state.")
    step: int = Field(default=0, description="Index into spec.rollout.steps (0-based).")
    candidate: str | None = Field(default=None, description="Version being rolled out.")
    stable: str | None = Field(default=None, description="Version serving before it.")
    previous: str | None = Field(
        default=None,
        description="After a Succeeded rollout: the version that was stable before it "
        "(where `lmo rollback` goes back to).",
    )
    step_started_at: str | None = Field(default=None, description="When the step began.")
    inconclusive: int = Field(default=0, description="Consecutive holds for lack of traffic.")
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec the rollout (or rollback) was decided on."
    )
    last_analysis: dict[str, Any] | None = Field(
        default=None,
        description="Measurements and verdict of the last analysis.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    message: str = Field(default="", description="Human-readable details.")


class ExperimentArm(_Model):
    version: str = Field(description="Version name.")
    samples: float = Field(default=0, description="Outcomes counted for it (trials).")
    successes: float = Field(
        default=0, description="Successes among them (with scores: the sum of the scores)."
    )
    rate: float = Field(default=0, description="successes / samples (0 without samples).")


class ExperimentStatus(_Model):
    phase: ExperimentPhase = Field(
        default=ExperimentPhase.RUNNING,
        description="Running (collecting, or the interval still contains 0), Decided (the "
        "interval excludes 0: winner is set) or Inconclusive (maxSamples or maxDuration "
        "reached undecided).",
    )
    baseline: str | None = Field(default=None, description="The version compared against.")
    candidate: str | None = Field(default=None, description="The version being tested.")
    arms: list[ExperimentArm] = Field(
        default_factory=list, description="Baseline first, then candidate."
    )
    lift: float | None = Field(
        default=None,
        description="candidate rate - baseline rate (absolute, in rate units: 0.02 is two "
        "percentage points).",
    )
    relative_lift: float | None = Field(
        default=None, description="lift / baseline rate (unset while the baseline rate is 0)."
    )
    interval: list[float] | None = Field(
        default=None,
        max_length=2,
        description="[lo, hi]: always-valid confidence interval of the lift at "
        "rollout.experiment.confidence.",
    )
    p_value: float | None = Field(
        default=None,
        description="Always-valid p-value of 'no difference' (the running minimum of the "
        "mixture SPRT's 1 / likelihood ratio); Decided once it is below 1 - confidence.",
    )
    winner: str | None = Field(default=None, description="The better version once Decided.")
    started_at: str | None = Field(default=None, description="When the experiment started.")
    decided_at: str | None = Field(
        default=None, description="When it became Decided or Inconclusive."
    )
    spec_hash: str | None = Field(
        default=None, description="Hash of the arms and settings the experiment runs on."
    )
    message: str = Field(default="", description="Human-readable details.")


class LanguageModelStatus(_Model):
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Converted, Deployed, Routed, Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    endpoint: str | None = Field(default=None, description="Where clients send requests.")
    versions: list[VersionStatus] = Field(default_factory=list, description="Per version.")
    rollout: RolloutStatus | None = Field(default=None, description="Automated rollout state.")
    experiment: ExperimentStatus | None = Field(
        default=None, description="The running or last Experiment's statistics and verdict."
    )
    traffic_summary: str | None = Field(
        default=None, description="Routed traffic, e.g. v1=90,v2=10 (printer column)."
    )
    ready_versions: str | None = Field(
        default=None, description="Ready versions over all versions, e.g. 2/2 (printer column)."
    )


# --------------------------------------------------------------------------- the resource


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


class SpecError(ValueError):
    """A LanguageModel that cannot be accepted; `str()` names each field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (to_camel(part) if "_" in str(part) else str(part))
    return out


def explain(err: ValidationError, prefix: str = "") -> list[str]:
    """Readable one-line problems, each naming the field (spec.versions[0].traffic: ...)."""
    problems = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        path = ".".join(p for p in (prefix, where) if p)
        # cross-field messages already start with the path they are about
        problems.append(msg if msg.startswith("spec.") or not path else f"{path}: {msg}")
    return problems


def parse(obj: dict[str, Any]) -> LanguageModel:
    """Validate a LanguageModel object; raise SpecError with field-named messages."""
    try:
        return LanguageModel.model_validate(obj)
    except ValidationError as err:
        raise SpecError(explain(err)) from None


def load_file(path: str | Path) -> list[LanguageModel]:
    """Every LanguageModel document in a YAML file (other kinds are ignored).

    The YAML is read from the open file, so a syntax error names the file, line and column
    (from a string PyYAML would say `in "<unicode string>"`).
    """
    try:
        with open(path, "rb") as stream:
            docs = [d for d in yaml.safe_load_all(stream) if d]
    except OSError as err:
        raise SpecError([f"{path}: cannot read the file ({err.strerror})"]) from None
    except yaml.YAMLError as err:
        raise SpecError([f"{path}: not valid YAML: {err}"]) from None
    models = [parse(d) for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not models:
        raise SpecError([f"{path}: no document with kind: {KIND}"])
    return models
