"""spec.serving and spec.autoscaling: Triton pods, batching, queue, autoscaler."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from lmo.api.base import DEFAULT_TRITON_IMAGE, GATEWAY_DURATION, Rule, _Model, cel_rules, rules_validator
from lmo.api.enums import Accelerator, Backend, Engine, Metric


# core/v1 Pod validation, checked here so a bad toleration is refused on apply instead of
# failing the Triton Deployment later
_TOLERATION_RULES = (
    Rule("(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
         "tolerations[].operator must be Exists when key is empty", None,
         lambda t: not t.key and t.operator != "Exists"),
    Rule("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
         "tolerations[].value must be empty when operator is Exists", ".value",
         lambda t: t.operator == "Exists" and bool(t.value)),
    Rule("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
         "tolerations[].tolerationSeconds needs effect: NoExecute", ".tolerationSeconds",
         lambda t: t.toleration_seconds is not None and t.effect != "NoExecute"),
)


class Toleration(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_TOLERATION_RULES))
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

    _rules = rules_validator(_TOLERATION_RULES)


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


# what autoscaling.target must look like for each metric (CEL `matches` and Python alike)
_TARGET_PATTERNS = {
    "QueueTime": "[0-9]+([.][0-9]+)?(ms|s)",
    "InferenceRate": "[0-9]+([.][0-9]+)?",
    "GPUUtilization": "[0-9]+([.][0-9]+)?%?",
}


def _target_rule(cel_metrics: str, metrics: tuple[str, ...], key: str) -> Rule:
    """autoscaling.target must fit the metric (CPU's percentage is GPUUtilization's)."""
    pattern = _TARGET_PATTERNS[key]
    return Rule(
        f"{cel_metrics} || self.target.matches('^{pattern}$')", _TARGET_UNITS[key], ".target",
        lambda a: a.metric in metrics and not re.fullmatch(pattern, a.target)
        and f" (got {a.target!r})")


_AUTOSCALING_RULES = (
    Rule("self.minReplicas <= self.maxReplicas",
         "autoscaling.minReplicas must not exceed autoscaling.maxReplicas", None,
         lambda a: a.min_replicas > a.max_replicas),
    Rule("self.minReplicas > 0 || self.engine == 'KEDA'",
         "autoscaling.minReplicas: 0 needs engine: KEDA (HPA cannot scale to zero)",
         ".minReplicas", lambda a: a.min_replicas == 0 and a.engine != Engine.KEDA.value),
    Rule("self.minReplicas > 0 || self.metric != 'CPU'", _MIN_ZERO_CPU, ".minReplicas",
         lambda a: a.min_replicas == 0 and a.metric == Metric.CPU.value),
    _target_rule("self.metric != 'QueueTime'", ("QueueTime",), "QueueTime"),
    _target_rule("self.metric != 'InferenceRate'", ("InferenceRate",), "InferenceRate"),
    _target_rule("!(self.metric in ['GPUUtilization', 'CPU'])", ("GPUUtilization", "CPU"),
                 "GPUUtilization"),
)


class Autoscaling(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_AUTOSCALING_RULES))
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

    _rules = rules_validator(_AUTOSCALING_RULES)
