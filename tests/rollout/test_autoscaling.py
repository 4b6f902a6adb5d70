"""Unit tables for the per-version autoscalers (HPA and KEDA ScaledObject)."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from pydantic import ValidationError

from lmo.api import LanguageModel
from lmo.builders.autoscaling import (
    KEDA_PAUSED_REPLICAS,
    build_autoscaler,
    quantity,
    share_bounds,
)
from lmo.builders.base import Owner
from lmo.errors import UserError

OWNER = Owner(name="chat", namespace="ml", uid="1234")
K8S = "1.30.0"


def model(autoscaling: dict | None = None, *, gpus: int = 0, rollout: dict | None = None) -> LanguageModel:
    spec: dict = {
        "task": "text-generation",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 90},
            {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 10},
        ],
        "serving": {"gpus": gpus},
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    if rollout is not None:
        spec["rollout"] = rollout
    return LanguageModel.model_validate(
        {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "chat"}, "spec": spec}
    )


def test_no_autoscaling_no_object():
    assert build_autoscaler(model(None), OWNER, "v1") is None


@pytest.mark.parametrize(
    "autoscaling, gpus, metric",
    [
        (
            {"metric": "QueueTime", "target": "50ms"},
            0,
            {"type": "Pods", "pods": {"metric": {"name": "lmo_triton_queue_time_ms"},
                                      "target": {"type": "AverageValue", "averageValue": "50"}}},
        ),
        (
            {"metric": "QueueTime", "target": "0.25s"},
            0,
            {"type": "Pods", "pods": {"metric": {"name": "lmo_triton_queue_time_ms"},
                                      "target": {"type": "AverageValue", "averageValue": "250"}}},
        ),
        (
            {"metric": "QueueTime", "target": "2.5ms"},
            0,
            {"type": "Pods", "pods": {"metric": {"name": "lmo_triton_queue_time_ms"},
                                      "target": {"type": "AverageValue", "averageValue": "2500m"}}},
        ),
        (
            {"metric": "InferenceRate", "target": "100"},
            0,
            {"type": "Pods", "pods": {"metric": {"name": "lmo_triton_inference_rate"},
                                      "target": {"type": "AverageValue", "averageValue": "100"}}},
        ),
        (
            {"metric": "GPUUtilization", "target": "70%"},
            1,
            {"type": "Pods", "pods": {"metric": {"name": "DCGM_FI_DEV_GPU_UTIL"},
                                      "target": {"type": "AverageValue", "averageValue": "70"}}},
        ),
        (
            {"metric": "CPU", "target": "80%"},
            0,
            {"type": "Resource", "resource": {"name": "cpu",
                                              "target": {"type": "Utilization", "averageUtilization": 80}}},
        ),
    ],
)
def test_hpa_metric_table(autoscaling, gpus, metric):
    hpa = build_autoscaler(model(autoscaling, gpus=gpus), OWNER, "v2")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["metadata"]["name"] == "chat-v2"
    assert hpa["metadata"]["namespace"] == "ml"
    assert hpa["metadata"]["labels"]["lmo.dev/version"] == "v2"
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "1234"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat-v2"}
    assert hpa["spec"]["metrics"] == [metric]
    # the real autoscaling/v2 schema (strict: no unknown fields)
    kubernetes_validate.validate(copy.deepcopy(hpa), K8S, strict=True)


def test_hpa_behavior_scale_down_window_covers_node_start_and_cooldown():
    hpa = build_autoscaler(model({"cooldownSeconds": 900}), OWNER, "v1")
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 900
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    short = build_autoscaler(model({"cooldownSeconds": 30}), OWNER, "v1")
    # never shorter than the time a GPU node takes to join
    assert short["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert short["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


@pytest.mark.parametrize(
    "spec_range, bounds, expected",
    [
        ((2, 8), None, (2, 8)),
        ((2, 8), (1, 2), (1, 2)),
        ((2, 8), (3, 3), (3, 3)),
        ((1, 4), (0, 0), (1, 1)),  # an HPA cannot hold zero pods: it keeps one
        ((1, 4), (5, 2), (2, 2)),  # min never exceeds max
    ],
)
def test_hpa_bounds_override(spec_range, bounds, expected):
    lo, hi = spec_range
    hpa = build_autoscaler(model({"minReplicas": lo, "maxReplicas": hi}), OWNER, "v2", bounds)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == expected
    kubernetes_validate.validate(copy.deepcopy(hpa), K8S, strict=True)


@pytest.mark.parametrize(
    "autoscaling, message",
    [
        ({"metric": "QueueTime", "target": "50"}, "QueueTime needs a duration"),
        ({"metric": "QueueTime", "target": "50%"}, "QueueTime needs a duration"),
        ({"metric": "InferenceRate", "target": "10ms"}, "InferenceRate needs inferences per second"),
        ({"metric": "CPU", "target": "50ms"}, "CPU need a percentage"),
    ],
)
def test_target_unit_must_fit_metric_at_parse_time(autoscaling, message):
    """Refused by the API (CEL in the CRD, the same rule in the model), not later."""
    with pytest.raises(ValidationError, match="autoscaling.target") as err:
        model(autoscaling)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "autoscaling, gpus",
    [({"metric": "CPU", "target": "150%"}, 0), ({"metric": "GPUUtilization", "target": "0"}, 1)],
)
def test_percentage_target_must_be_in_range(autoscaling, gpus):
    with pytest.raises(UserError, match="spec.autoscaling.target") as err:
        build_autoscaler(model(autoscaling, gpus=gpus), OWNER, "v1")
    assert "between 1% and 100%" in str(err.value)


PROM = {"strategy": "Canary", "analysis": {"prometheusUrl": "http://prom.monitoring:9090"}}


def keda(autoscaling: dict, **kw) -> dict:
    return model({"engine": "KEDA", **autoscaling}, rollout=kw.pop("rollout", PROM), **kw)


def test_keda_queue_time_scaled_object():
    so = build_autoscaler(keda({"minReplicas": 0, "maxReplicas": 6, "cooldownSeconds": 420}), OWNER, "v2")
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    assert so["metadata"]["name"] == "chat-v2"
    s = so["spec"]
    assert s["scaleTargetRef"]["name"] == "chat-v2"
    assert (s["minReplicaCount"], s["maxReplicaCount"]) == (0, 6)
    assert s["cooldownPeriod"] == 420
    hpa_cfg = s["advanced"]["horizontalPodAutoscalerConfig"]
    assert hpa_cfg["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert hpa_cfg["behavior"]["scaleDown"]["policies"][0]["value"] == 1
    queue, wake = s["triggers"]
    assert queue["type"] == "prometheus" and queue["metricType"] == "Value"
    md = queue["metadata"]
    assert md["serverAddress"] == "http://prom.monitoring:9090"
    assert md["threshold"] == "50"
    assert 'namespace="ml",lmo_model="chat",lmo_version="v2"' in md["query"]
    assert "nv_inference_queue_duration_us" in md["query"] and "by (pod, model)" in md["query"]
    # queue time has no samples at zero pods: the inference rate wakes the version
    assert "nv_inference_count" in wake["metadata"]["query"]
    assert wake["metadata"]["activationThreshold"] == "0"


def test_keda_min_one_has_single_trigger_and_setting_fallback():
    lm = keda({"minReplicas": 1, "metric": "InferenceRate", "target": "40"}, rollout=None)
    so = build_autoscaler(lm, OWNER, "v1", prometheus_url="http://p:9090")
    (trig,) = so["spec"]["triggers"]
    assert trig["metricType"] == "AverageValue"
    assert trig["metadata"]["serverAddress"] == "http://p:9090"
    assert trig["metadata"]["threshold"] == "40"


def test_keda_without_prometheus_is_refused_with_the_fix():
    lm = keda({"minReplicas": 1}, rollout=None)
    with pytest.raises(UserError, match="prometheusUrl"):
        build_autoscaler(lm, OWNER, "v1")


def test_keda_cpu_trigger_and_cpu_scale_to_zero_refused():
    so = build_autoscaler(keda({"minReplicas": 1, "metric": "CPU", "target": "65%"}, rollout=None), OWNER, "v1")
    assert so["spec"]["triggers"] == [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "65"}}]
    with pytest.raises(ValidationError, match="minReplicas: 0 cannot be used with metric: CPU"):
        keda({"minReplicas": 0, "metric": "CPU", "target": "65%"})


def test_keda_gpu_query_matches_version_pods():
    so = build_autoscaler(keda({"minReplicas": 1, "metric": "GPUUtilization", "target": "70%"}, gpus=1), OWNER, "v1")
    q = so["spec"]["triggers"][0]["metadata"]["query"]
    assert q.startswith("avg(DCGM_FI_DEV_GPU_UTIL{") and 'pod=~"chat-v1-' in q


def test_keda_zero_bounds_pause_at_zero():
    so = build_autoscaler(keda({"minReplicas": 0}), OWNER, "v1", (0, 0))
    assert so["metadata"]["annotations"] == {KEDA_PAUSED_REPLICAS: "0"}
    assert so["spec"]["minReplicaCount"] == 0
    running = build_autoscaler(keda({"minReplicas": 0}), OWNER, "v1", (1, 2))
    assert "annotations" not in running["metadata"]
    assert (running["spec"]["minReplicaCount"], running["spec"]["maxReplicaCount"]) == (1, 2)


@pytest.mark.parametrize("value, text", [(50, "50"), (2.5, "2500m"), (0.1, "100m"), (1000, "1000")])
def test_quantity(value, text):
    assert quantity(value) == text


@pytest.mark.parametrize(
    "lo, hi, percent, expected",
    [(1, 4, 10, (1, 1)), (1, 4, 50, (1, 2)), (1, 4, 100, (1, 4)), (2, 8, 25, (1, 2)), (0, 6, 10, (1, 1)),
     (4, 10, 60, (3, 6))],
)
def test_share_bounds(lo, hi, percent, expected):
    lm = model({"minReplicas": lo, "maxReplicas": hi, "engine": "KEDA" if lo == 0 else "HPA"},
               rollout=PROM if lo == 0 else None)
    assert share_bounds(lm.spec.autoscaling, percent) == expected


def test_docs_show_the_prometheus_adapter_rules_the_code_defines():
    import re
    from pathlib import Path

    import yaml

    from lmo.builders.autoscaling import prometheus_adapter_rules

    text = (Path(__file__).parents[2] / "docs" / "rollouts.md").read_text()
    block = re.search(r"```yaml\n(rules:.*?)```", text, re.S).group(1)
    assert yaml.safe_load(block) == prometheus_adapter_rules()


def test_keda_scale_from_zero_wakes_on_the_operator_wake_query():
    """Triton's metrics are 0 while no pod runs: with a wake query (requests counted by the
    Gateway) that trigger activates the version instead, for every metric."""
    wake = 'sum(rate(gateway_requests_total{namespace="{namespace}",backend="{service}"}[1m]))'
    for metric, target in (("QueueTime", "50ms"), ("InferenceRate", "20")):
        so = build_autoscaler(keda({"minReplicas": 0, "metric": metric, "target": target}),
                              OWNER, "v2", wake=wake)
        triggers = so["spec"]["triggers"]
        assert len(triggers) == 2, triggers
        woken = triggers[1]["metadata"]
        assert woken["query"] == 'sum(rate(gateway_requests_total{namespace="ml",backend="chat-v2"}[1m]))'
        assert woken["activationThreshold"] and woken["ignoreNullValues"] == "true"
    # without minReplicas 0 the wake query is not needed and not added
    so = build_autoscaler(keda({"minReplicas": 1, "metric": "QueueTime"}), OWNER, "v2", wake=wake)
    assert len(so["spec"]["triggers"]) == 1
