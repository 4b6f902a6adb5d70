"""The cross-field rules of the spec: each one's CEL for the API server and its Python twin."""

from __future__ import annotations

from typing import Any

from lmo.api.base import Rule, problems
from lmo.api.enums import Accelerator, Backend, Metric, RoutingProvider, Strategy, Task
from lmo.api.protection import RateLimit
from lmo_runtime import gpu as gpu_rules  # the GPU rules, said once for both runtimes


# A LanguageModelSpec (lmo.api.resource, which imports these rules).
Spec = Any


_EXPERIMENT_ARMS = ("spec.versions: an Experiment compares exactly two versions with traffic "
                    "above 0 (e.g. v1: 50, v2: 50; others 0)")


_STICKY_PROVIDER = ("spec.routing.sticky needs provider: GatewayAPI (a plain Service cannot "
                    "hash a header)")


_CHAT_TEMPLATE_TASK = ("spec.chatTemplate is for task: text-generation (the other tasks have "
                       "no chat endpoint); remove it")


def _duplicates(s: Spec) -> str | None:
    names = [v.name for v in s.versions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    return f" (repeated: {', '.join(dupes)})" if dupes else None


def _traffic_sum(s: Spec) -> str | None:
    if len(s.versions) == 1 and s.versions[0].traffic is None:
        return None
    problem = traffic_sum_problem({v.name: v.traffic or 0 for v in s.versions})
    return f"; {problem}" if problem else None


def _mirror_unknown(s: Spec) -> str | None:
    names = [v.name for v in s.versions]
    m = s.routing.mirror
    if m is None or m.version in names:
        return None
    return f" ({m.version!r} is not one of {', '.join(names)})"


def _strategy(s: Spec) -> str | None:
    return s.rollout.strategy if s.rollout is not None else None


def _experiment_arms(s: Spec) -> str | None:
    if _strategy(s) != Strategy.EXPERIMENT.value:
        return None
    arms = [v.name for v in s.versions if (v.traffic or 0) > 0]
    return f"; versions with traffic: {', '.join(arms) or 'none'}" if len(arms) != 2 else None


def _service(s: Spec) -> bool:
    return s.routing.provider == RoutingProvider.SERVICE.value


# The spec's cross-field rules (Rule: CEL, message, field path, Python predicate). The Python
# door refuses the first one broken, in this order; the API server reports every one.
_SPEC_RULES: tuple[Rule, ...] = (
    Rule("!has(self.chatTemplate) || self.task == 'text-generation'",
         _CHAT_TEMPLATE_TASK, ".chatTemplate",
         lambda s: s.chat_template is not None and s.task != "text-generation"),
    Rule("self.versions.all(v, self.versions.exists_one(w, w.name == v.name))",
         "spec.versions[].name must be unique", ".versions", _duplicates),
    Rule("(size(self.versions) == 1 && !has(self.versions[0].traffic)) || "
         "self.versions.map(v, has(v.traffic) ? v.traffic : 0).sum() == 100",
         "spec.versions[].traffic must sum to 100 (it may be omitted only with a single version)",
         ".versions", _traffic_sum),
    Rule("!has(self.routing) || !has(self.routing.mirror) || "
         "self.versions.exists(v, v.name == self.routing.mirror.version)",
         "spec.routing.mirror.version must name a version in spec.versions",
         ".routing.mirror.version", _mirror_unknown),
    Rule("!has(self.routing) || self.routing.provider != 'Service' || !has(self.routing.sticky)",
         _STICKY_PROVIDER, ".routing.sticky",
         lambda s: _service(s) and s.routing.sticky is not None),
    Rule("!has(self.routing) || self.routing.provider != 'Service' || "
         "(!has(self.routing.abTest) && !has(self.routing.mirror))",
         "spec.routing.abTest and spec.routing.mirror need provider: GatewayAPI "
         "(a plain Service cannot match headers or mirror)", ".routing",
         lambda s: _service(s) and bool(s.routing.ab_test or s.routing.mirror)),
    Rule("!has(self.protection) || !has(self.protection.timeout) || !has(self.routing) || "
         "self.routing.provider != 'Service'",
         "spec.protection.timeout needs provider: GatewayAPI (a plain Service has no request "
         "timeout)", ".protection.timeout",
         lambda s: _service(s) and s.protection is not None and s.protection.timeout is not None),
    Rule("!has(self.rollout) || self.rollout.strategy != 'BlueGreen' || size(self.versions) <= 2",
         "spec.versions: BlueGreen serves at most two versions (stable and candidate)",
         ".versions",
         lambda s: _strategy(s) == Strategy.BLUE_GREEN.value and len(s.versions) > 2),
    Rule("!has(self.rollout) || self.rollout.strategy != 'Experiment' || "
         "size(self.versions.filter(v, has(v.traffic) && v.traffic > 0)) == 2",
         _EXPERIMENT_ARMS, ".versions", _experiment_arms),
    Rule("!has(self.rollout) || self.rollout.strategy == 'Manual' || "
         "(has(self.rollout.analysis) && has(self.rollout.analysis.prometheusUrl))",
         "spec.rollout.analysis.prometheusUrl is required for Canary and BlueGreen",
         ".rollout.analysis.prometheusUrl",
         lambda s: _strategy(s) not in (None, Strategy.MANUAL.value)
         and not s.rollout.analysis.prometheus_url),
    Rule("!has(self.autoscaling) || self.autoscaling.metric != 'GPUUtilization' || "
         "(has(self.serving) && self.serving.gpus > 0)",
         "spec.autoscaling.metric: GPUUtilization needs spec.serving.gpus > 0",
         ".autoscaling.metric",
         lambda s: s.autoscaling is not None and s.autoscaling.metric == Metric.GPU_UTILIZATION.value
         and s.serving.gpus == 0),
)


# The spec's protection rules, in the same shape: what the spec asks that its gateway cannot
# do. The Python door reports every one broken (`protection_problems`), joined.
_POLICIES = "(has(self.routing) && has(self.routing.policies) ? self.routing.policies : 'None')"
_ENVOY, _NONE = "EnvoyGateway", "None"


def _rate(spec: Spec) -> "RateLimit | None":
    return spec.protection.rate_limit if spec.protection is not None else None


_PROTECTION_RULES: tuple[Rule, ...] = (
    Rule(
        f"!has(self.protection) || !has(self.protection.auth) || {_POLICIES} == 'EnvoyGateway'",
        "spec.protection.auth needs spec.routing.policies: EnvoyGateway (the standard "
        "Gateway API and Istio have no API-key authentication from a Secret)",
        ".protection.auth",
        lambda s: s.protection is not None and s.protection.auth is not None
        and s.routing.policies != _ENVOY,
    ),
    Rule(
        f"!has(self.protection) || !has(self.protection.rateLimit) || "
        f"{_POLICIES} == 'EnvoyGateway'",
        "spec.protection.rateLimit needs spec.routing.policies: EnvoyGateway (the standard "
        "Gateway API and Istio have no rate-limit policy)",
        ".protection.rateLimit",
        lambda s: _rate(s) is not None and s.routing.policies != _ENVOY,
    ),
    Rule(
        f"!has(self.protection) || !has(self.protection.circuitBreaker) || "
        f"{_POLICIES} != 'None'",
        "spec.protection.circuitBreaker needs spec.routing.policies: EnvoyGateway or Istio "
        "(the standard Gateway API has no circuit breaker)",
        ".protection.circuitBreaker",
        lambda s: s.protection is not None and s.protection.circuit_breaker is not None
        and s.routing.policies == _NONE,
    ),
    Rule(
        "!has(self.protection) || !has(self.protection.rateLimit) || "
        "!has(self.protection.rateLimit.perClient) || !self.protection.rateLimit.perClient || "
        "has(self.protection.auth)",
        "spec.protection.rateLimit.perClient needs spec.protection.auth (the client id comes "
        "from the API key)",
        ".protection.rateLimit.perClient",
        lambda s: _rate(s) is not None and _rate(s).per_client  # type: ignore[union-attr]
        and s.protection.auth is None,  # type: ignore[union-attr]
    ),
    Rule(
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
    Rule(
        f"{_POLICIES} == 'None' || !has(self.routing.provider) || "
        "self.routing.provider == 'GatewayAPI'",
        "spec.routing.policies needs provider: GatewayAPI (the policies attach to the "
        "HTTPRoute and its backends)",
        ".routing.policies",
        lambda s: s.routing.policies != _NONE
        and s.routing.provider != RoutingProvider.GATEWAY_API.value,
    ),
    Rule(
        "!has(self.serving) || !has(self.serving.queue) || !has(self.serving.batching) || "
        "!has(self.serving.batching.maxBatchSize) || self.serving.batching.maxBatchSize > 0",
        "spec.serving.queue needs spec.serving.batching.maxBatchSize > 0 (Triton's queue "
        "policy belongs to its dynamic batcher)",
        ".serving.queue",
        lambda s: s.serving.queue is not None and s.serving.batching.max_batch_size == 0,
    ),
)


# The spec's GPU rules (lmo_runtime.gpu says why). A pod has a GPU by either field:
# serving.gpus, or a serving.gpuResource limit in serving.resources (Serving.gpu_count).
# int8 / int8-static on GPUs is not a spec rule: the converter refuses it (the version fails
# with the reason and what to use) or, with accuracyGate.fallback, converts the next precision
# a GPU runs (fp16), so one rule serves both runtimes.
_HAS_GPU = (
    "(has(self.serving) && ((has(self.serving.gpus) && self.serving.gpus > 0) || "
    "(has(self.serving.resources) && has(self.serving.resources.limits) && "
    "(has(self.serving.gpuResource) ? self.serving.gpuResource : 'nvidia.com/gpu') "
    "in self.serving.resources.limits)))"
)
_TENSORRT = ("has(self.serving) && has(self.serving.accelerator) && "
             "self.serving.accelerator == 'tensorrt'")

_GPU_RULES: tuple[Rule, ...] = (
    Rule(
        f"!({_TENSORRT}) || ({_HAS_GPU} && (!has(self.serving.backend) || "
        "self.serving.backend == 'onnxruntime'))",
        "spec." + gpu_rules.TENSORRT_NEEDS_GPU,
        ".serving.accelerator",
        lambda s: s.serving.accelerator == Accelerator.TENSORRT.value
        and (s.serving.gpu_count() == 0 or s.serving.backend != Backend.ONNXRUNTIME.value),
    ),
    Rule(
        f"!({_TENSORRT}) || self.task != 'text-generation'",
        "spec." + gpu_rules.TENSORRT_TEXT_GENERATION,
        ".serving.accelerator",
        lambda s: s.serving.accelerator == Accelerator.TENSORRT.value
        and s.task == Task.TEXT_GENERATION.value,
    ),
)


def gpu_problems(spec: Spec) -> list[str]:
    """The Python side of _GPU_RULES: what the spec asks a GPU to do that it would not."""
    return problems(spec, _GPU_RULES)


def protection_problems(spec: Spec) -> list[str]:
    """The Python side of _PROTECTION_RULES: what the spec asks that its gateway cannot do."""
    return problems(spec, _PROTECTION_RULES)


def traffic_sum_problem(weights: dict[str, int]) -> str | None:
    """The one rule for traffic weights (the CRD's CEL rule says it for the API server):
    they sum to 100. None when they do, else what is wrong ("it sums to 110")."""
    total = sum(int(w) for w in weights.values())
    return None if total == 100 else f"it sums to {total}"
