"""Per-version autoscalers: an autoscaling/v2 HPA or a KEDA ScaledObject named `<lm>-<version>`.

Both scale the version's Triton Deployment `<lm>-<version>` on what Triton reports:

* QueueTime: mean queue time per request, in milliseconds, computed *per model* and taken at
  the busiest model of a pod. Triton's own `nv_inference_queue_duration_us` summed over a
  pod under-reports when several models are loaded (an ensemble's cheap tokenizer step
  dilutes the average), so the ratio is formed per model first. The HPA reads it as the Pods
  metric `lmo_triton_queue_time_ms` (a prometheus-adapter rule, see docs/rollouts.md); KEDA
  runs the same PromQL directly.
* InferenceRate: inferences per second per pod (`lmo_triton_inference_rate`).
* GPUUtilization: `DCGM_FI_DEV_GPU_UTIL` from the NVIDIA DCGM exporter, per pod.
* CPU: the Resource metric `cpu` (metrics-server), as utilization of the pod's request.

`bounds` (min, max) overrides the spec's replica range: during a canary the candidate's range
follows its traffic share (`lmo.rollout` decides it). A `(0, 0)` bound means "no pods": KEDA
expresses it with the `autoscaling.keda.sh/paused-replicas: "0"` annotation; an HPA cannot
go below one replica (without the alpha HPAScaleToZero gate), so it holds one.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from typing import Any

from lmo.api import Autoscaling, Engine, LanguageModel, Metric
from lmo.builders.base import Owner, child_name, owner_reference
from lmo.errors import UserError
from lmo.labels import AUTOSCALER, labels

HPA_API_VERSION = "autoscaling/v2"
KEDA_API_VERSION = "keda.sh/v1alpha1"

QUEUE_TIME_METRIC = "lmo_triton_queue_time_ms"
INFERENCE_RATE_METRIC = "lmo_triton_inference_rate"
GPU_UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"

# Scale-down waits this long after the metric last asked for more pods. It must cover the time
# a new GPU node takes to join (typically 3-6 minutes with cluster-autoscaler or Karpenter):
# HPA/KEDA count Pending pods as replicas but do not know they are Pending, so a shorter window
# removes the pods that were still waiting for their node and the next burst pays the node
# start again. Never shorter than the KEDA cooldown.
SCALE_DOWN_STABILIZATION_SECONDS = 600
# At most one pod removed per period: a mistaken scale-down costs one replica, not half the fleet.
SCALE_DOWN_PODS_PER_PERIOD = 1
SCALE_DOWN_PERIOD_SECONDS = 120
# Scale-up is immediate and may double the fleet (or add 4 pods) per 30 s.
SCALE_UP_PERCENT = 100
SCALE_UP_PODS = 4
SCALE_UP_PERIOD_SECONDS = 30

KEDA_POLLING_SECONDS = 15
# Rate window of the PromQL queries (4 scrapes at Prometheus' usual 15 s interval).
RATE_WINDOW = "1m"
# KEDA wakes a version from zero when it sees more than this many inferences per second.
ACTIVATION_RATE = 0.0
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"


def _target_number(spec: Autoscaling) -> float:
    """The target value in the metric's unit, refusing a unit that does not fit the metric."""
    text = spec.target.strip()
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(ms|s|%)?", text)
    if not m:
        raise UserError(f"spec.autoscaling.target: {text!r} is not a number with an optional unit")
    value, unit = float(m.group(1)), m.group(2)
    metric = spec.metric
    if metric == Metric.QUEUE_TIME.value:
        if unit not in ("ms", "s"):
            raise UserError(
                f"spec.autoscaling.target: metric QueueTime needs a duration such as 50ms "
                f"or 0.2s (got {text!r})"
            )
        return value * 1000.0 if unit == "s" else value
    if metric == Metric.INFERENCE_RATE.value:
        if unit is not None:
            raise UserError(
                f"spec.autoscaling.target: metric InferenceRate needs inferences per second "
                f"per pod as a plain number such as 100 (got {text!r})"
            )
        return value
    if unit not in (None, "%"):
        raise UserError(
            f"spec.autoscaling.target: metric {metric} needs a percentage such as 70% "
            f"(got {text!r})"
        )
    if not 0 < value <= 100:
        raise UserError(
            f"spec.autoscaling.target: a {metric} target must be between 1% and 100% (got {text!r})"
        )
    return value


def quantity(value: float) -> str:
    """A Kubernetes quantity string: integers as is, fractions in milli-units (0.5 -> 500m)."""
    if value == int(value):
        return str(int(value))
    return f"{int(round(value * 1000))}m"


def _replicas(spec: Autoscaling, bounds: tuple[int, int] | None) -> tuple[int, int]:
    """(min, max) replicas: the bounds override when given, never min > max."""
    lo, hi = (spec.min_replicas, spec.max_replicas) if bounds is None else bounds
    if lo < 0 or hi < 0:
        raise ValueError(f"autoscaler bounds must not be negative: {bounds}")
    return min(lo, hi), hi


def _behavior(spec: Autoscaling) -> dict[str, Any]:
    """Fast scale-up; slow, one-pod-at-a-time scale-down after a window that covers node start."""
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": SCALE_UP_PERCENT, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
                {"type": "Pods", "value": SCALE_UP_PODS, "periodSeconds": SCALE_UP_PERIOD_SECONDS},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": max(SCALE_DOWN_STABILIZATION_SECONDS, spec.cooldown_seconds),
            "selectPolicy": "Min",
            "policies": [
                {
                    "type": "Pods",
                    "value": SCALE_DOWN_PODS_PER_PERIOD,
                    "periodSeconds": SCALE_DOWN_PERIOD_SECONDS,
                }
            ],
        },
    }


def _matchers(namespace: str, lm: str, version: str) -> str:
    return f'namespace="{namespace}",lmo_model="{lm}",lmo_version="{version}"'


def queue_time_ms_query(namespace: str, lm: str, version: str, window: str = RATE_WINDOW) -> str:
    """PromQL: mean queue time per request (ms) of one version, averaged over its pods.

    Per (pod, model) ratio of rates, the busiest model per pod, then the mean over pods.
    """
    sel = "{" + _matchers(namespace, lm, version) + "}"
    return (
        "avg(max by (pod) ("
        f"sum by (pod, model) (rate(nv_inference_queue_duration_us{sel}[{window}])) / "
        f"sum by (pod, model) (rate(nv_inference_count{sel}[{window}]) > 0)"
        ")) / 1000"
    )


def inference_rate_query(namespace: str, lm: str, version: str, window: str = RATE_WINDOW) -> str:
    """PromQL: inferences per second of one version, all pods (KEDA divides by replicas).

    Counted at the entry model's pods as the busiest model per pod, so an ensemble's
    composing models are not counted twice; empty (no pods) reads as 0.
    """
    sel = "{" + _matchers(namespace, lm, version) + "}"
    return (
        "sum(max by (pod) (sum by (pod, model) "
        f"(rate(nv_inference_count{sel}[{window}])))) or vector(0)"
    )


def gpu_util_query(namespace: str, lm: str, version: str) -> str:
    """PromQL: mean GPU utilisation (%) of the version's pods, from the DCGM exporter.

    The exporter labels a GPU with the pod using it (`namespace`, `pod`), not with lmo's
    labels, so the version is matched by its Deployment's pod-name prefix.
    """
    prefix = child_name(lm, version)
    return (
        f'avg({GPU_UTIL_METRIC}{{namespace="{namespace}",'
        f'pod=~"{prefix}-[a-z0-9]+-[a-z0-9]+"}})'
    )


def _hpa_metric(spec: Autoscaling, target: float) -> dict[str, Any]:
    metric = spec.metric
    if metric == Metric.CPU.value:
        return {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": int(round(target))},
            },
        }
    name = {
        Metric.QUEUE_TIME.value: QUEUE_TIME_METRIC,
        Metric.INFERENCE_RATE.value: INFERENCE_RATE_METRIC,
        Metric.GPU_UTILIZATION.value: GPU_UTIL_METRIC,
    }[metric]
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": quantity(target)},
        },
    }


def _metadata(lm: LanguageModel, owner: Owner, version: str) -> dict[str, Any]:
    return {
        "name": child_name(lm.metadata.name, version),
        "namespace": owner.namespace,
        "labels": labels(lm.metadata.name, version, AUTOSCALER),
        "ownerReferences": [owner_reference(owner)],
    }


def _target_ref(lm: LanguageModel, version: str) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": child_name(lm.metadata.name, version)}


def build_hpa(
    lm: LanguageModel, owner: Owner, version: str, bounds: tuple[int, int] | None = None
) -> dict[str, Any]:
    spec = lm.spec.autoscaling
    assert spec is not None
    lo, hi = _replicas(spec, bounds)
    # An HPA holds at least one replica (scale to zero needs KEDA).
    lo, hi = max(lo, 1), max(hi, 1)
    return {
        "apiVersion": HPA_API_VERSION,
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(lm, owner, version),
        "spec": {
            "scaleTargetRef": _target_ref(lm, version),
            "minReplicas": lo,
            "maxReplicas": hi,
            "metrics": [_hpa_metric(spec, _target_number(spec))],
            "behavior": _behavior(spec),
        },
    }


def wake_query(template: str, namespace: str, name: str, version: str) -> str:
    """The operator's `keda_wake_query` for one version: `{namespace}`, `{service}` (the
    version's Service, the HTTPRoute backend), `{model}` and `{version}` filled in."""
    values = {"namespace": namespace, "service": child_name(name, version), "model": name,
              "version": version}
    for key, value in values.items():  # not str.format: PromQL is full of braces
        template = template.replace("{" + key + "}", value)
    return template


def _keda_triggers(
    lm: LanguageModel,
    namespace: str,
    version: str,
    target: float,
    prometheus_url: str | None,
    wake: str | None = None,
) -> list[dict[str, Any]]:
    spec = lm.spec.autoscaling
    assert spec is not None
    metric = spec.metric
    if metric == Metric.CPU.value:
        return [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(int(round(target)))}}]
    server = lm.spec.rollout.analysis.prometheus_url if lm.spec.rollout else None
    server = server or prometheus_url
    if not server:
        raise UserError(
            "spec.autoscaling: engine KEDA with metric "
            f"{metric} needs a Prometheus address: set spec.rollout.analysis.prometheusUrl "
            "or the operator setting LMO_PROMETHEUS_URL"
        )
    name = lm.metadata.name
    if metric == Metric.QUEUE_TIME.value:
        # A latency: HPA "Value" semantics (desired = current * value / target).
        query, metric_type = queue_time_ms_query(namespace, name, version), "Value"
    elif metric == Metric.INFERENCE_RATE.value:
        # A total over pods: "AverageValue" divides it by the replica count.
        query, metric_type = inference_rate_query(namespace, name, version), "AverageValue"
    else:
        query, metric_type = gpu_util_query(namespace, name, version), "Value"
    triggers = [
        {
            "type": "prometheus",
            "metricType": metric_type,
            "metadata": {
                "serverAddress": server,
                "query": query,
                "threshold": _decimal(target),
                "activationThreshold": "0",
                # A version with no pods has no series: read it as zero, not as an error.
                "ignoreNullValues": "true",
            },
        }
    ]
    if spec.min_replicas == 0 and (wake or metric != Metric.INFERENCE_RATE.value):
        # Queue time and GPU utilisation have no samples while no pod runs, so they can never
        # wake a version from zero. The operator's wake query (requests reaching the version,
        # counted outside Triton: the Gateway's own metrics) does; without one, Triton's
        # inference rate activates it, which only counts once a pod runs.
        triggers.append(
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": server,
                    "query": (wake_query(wake, namespace, name, version) if wake
                              else inference_rate_query(namespace, name, version)),
                    # Only activates: a threshold no real pod reaches never drives the count.
                    "threshold": "1000000",
                    "activationThreshold": _decimal(ACTIVATION_RATE),
                    "ignoreNullValues": "true",
                },
            }
        )
    return triggers


def _decimal(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def build_scaled_object(
    lm: LanguageModel,
    owner: Owner,
    version: str,
    bounds: tuple[int, int] | None = None,
    prometheus_url: str | None = None,
    wake: str | None = None,
) -> dict[str, Any]:
    spec = lm.spec.autoscaling
    assert spec is not None
    lo, hi = _replicas(spec, bounds)
    if spec.metric == Metric.CPU.value and lo == 0 and hi > 0:
        raise UserError(
            "spec.autoscaling.minReplicas: 0 cannot be used with metric: CPU (KEDA's cpu "
            "scaler cannot wake a Deployment from zero pods); use QueueTime or InferenceRate, "
            "or minReplicas >= 1"
        )
    meta = _metadata(lm, owner, version)
    if hi == 0:
        # "No pods": KEDA keeps the Deployment at zero while this annotation is present.
        meta["annotations"] = {KEDA_PAUSED_REPLICAS: "0"}
        hi = 1
    behavior = _behavior(spec)
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": _target_ref(lm, version),
            "minReplicaCount": lo,
            "maxReplicaCount": hi,
            "pollingInterval": KEDA_POLLING_SECONDS,
            "cooldownPeriod": spec.cooldown_seconds,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "name": child_name(lm.metadata.name, version),
                    "behavior": behavior,
                }
            },
            "triggers": _keda_triggers(
                lm, owner.namespace, version, _target_number(spec), prometheus_url, wake
            ),
        },
    }


def prometheus_adapter_rules(window: str = RATE_WINDOW) -> dict[str, Any]:
    """prometheus-adapter `rules` serving the HPA's Pods metrics (shown in docs/rollouts.md).

    Queue time is a ratio per (pod, model), then the busiest model per pod; a model that
    served nothing in the window reads 0 (no request waited), not "no value": without a
    value for any pod the HPA controller cannot compute a replica count and holds the
    Deployment where it is, so a version left idle after a burst would keep its peak replicas
    (KEDA reads the same emptiness as 0, `ignoreNullValues`). The inference rate is counted
    at the busiest model per pod (an ensemble's steps would count a request several times).
    The adapter fills in `<<.LabelMatchers>>` (namespace and pod) and `<<.GroupBy>>` (the
    pod label).
    """
    def resources() -> dict[str, Any]:
        return {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}

    lm = "<<.LabelMatchers>>"
    by = "<<.GroupBy>>"
    return {
        "rules": {
            "custom": [
                {
                    "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!="",lmo_model!=""}',
                    "resources": resources(),
                    "name": {"as": QUEUE_TIME_METRIC},
                    "metricsQuery": (
                        f"max by ({by}) ("
                        f"sum by ({by}, model) (rate(nv_inference_queue_duration_us{{{lm}}}[{window}])) / "
                        f"sum by ({by}, model) (rate(nv_inference_count{{{lm}}}[{window}]) > 0) "
                        f"or sum by ({by}, model) (rate(nv_inference_count{{{lm}}}[{window}])) * 0"
                        ") / 1000"
                    ),
                },
                {
                    "seriesQuery": 'nv_inference_count{namespace!="",pod!="",lmo_model!=""}',
                    "resources": resources(),
                    "name": {"as": INFERENCE_RATE_METRIC},
                    "metricsQuery": (
                        f"max by ({by}) (sum by ({by}, model) "
                        f"(rate(nv_inference_count{{{lm}}}[{window}])))"
                    ),
                },
                {
                    "seriesQuery": f'{GPU_UTIL_METRIC}{{namespace!="",pod!=""}}',
                    "resources": resources(),
                    "name": {"as": GPU_UTIL_METRIC},
                    "metricsQuery": f"avg by ({by}) ({GPU_UTIL_METRIC}{{{lm}}})",
                },
            ]
        }
    }


def build_autoscaler(
    lm: LanguageModel,
    owner: Owner,
    version: str,
    bounds: tuple[int, int] | None = None,
    *,
    prometheus_url: str | None = None,
    wake: str | None = None,
) -> dict[str, Any] | None:
    """The HPA or ScaledObject `<lm>-<version>` for one version; None without spec.autoscaling.

    `bounds` overrides (minReplicas, maxReplicas) (canary: the candidate's range follows its
    traffic share). `prometheus_url` is the operator-wide Prometheus (KEDA serverAddress) used
    when spec.rollout.analysis.prometheusUrl is not set. `wake` is the operator's
    `keda_wake_query` template: the trigger that wakes a version from zero pods.
    """
    spec = lm.spec.autoscaling
    if spec is None:
        return None
    if spec.engine == Engine.KEDA.value:
        return build_scaled_object(lm, owner, version, bounds, prometheus_url, wake)
    return build_hpa(lm, owner, version, bounds)


def share_bounds(spec: Autoscaling, percent: int) -> tuple[int, int]:
    """Replica range of a version that receives `percent` of the traffic.

    The spec's range scaled by the share, rounded up, and never below one replica (a version
    that takes traffic, or is about to, must have a ready pod).
    """
    lo = max(1, math.ceil(spec.min_replicas * percent / 100))
    hi = max(lo, math.ceil(spec.max_replicas * percent / 100))
    return lo, hi
