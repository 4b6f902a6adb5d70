"""The cross-field rules of the spec: each one's CEL for the API server and its Python twin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmo.api.base import _cel, _cel_rules
from lmo.api.enums import Accelerator, Backend, RoutingProvider, Task
from lmo.api.protection import RateLimit
from lmo_runtime import gpu as gpu_rules  # the GPU rules, said once for both runtimes


# A LanguageModelSpec (lmo.api.resource, which imports these rules).
Spec = Any


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


def _rate(spec: Spec) -> "RateLimit | None":
    return spec.protection.rate_limit if spec.protection is not None else None


_PROTECTION_RULES: list[tuple[str, str, str, Callable[[Spec], bool]]] = [
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

_GPU_RULES: list[tuple[str, str, str, Callable[[Spec], bool]]] = [
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


def gpu_problems(spec: Spec) -> list[str]:
    """The Python side of _GPU_RULES: what the spec asks a GPU to do that it would not."""
    return [message for _, message, _, broken in _GPU_RULES if broken(spec)]


def protection_problems(spec: Spec) -> list[str]:
    """The Python side of _PROTECTION_RULES: what the spec asks that its gateway cannot do."""
    return [message for _, message, _, broken in _PROTECTION_RULES if broken(spec)]


def traffic_sum_problem(weights: dict[str, int]) -> str | None:
    """The one rule for traffic weights (the CRD's CEL rule says it for the API server):
    they sum to 100. None when they do, else what is wrong ("it sums to 110")."""
    total = sum(int(w) for w in weights.values())
    return None if total == 100 else f"it sums to {total}"
