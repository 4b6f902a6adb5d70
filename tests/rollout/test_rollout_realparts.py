"""A canary with real parts: two Triton servers, real Prometheus, golden replay.

The stable (v1) and the candidate (v2) are real tritonservers serving the lmo entry model
`feature_extraction`; Prometheus scrapes both with the labels the chart gives Triton pods; a
load loop sends requests at the weights `decide` routes. A good candidate walks every step to
100%; one that drifts (same speed, no errors, different answers) is stopped by the golden
replay; one that fails a third of its requests is rolled back on the Prometheus error ratio.
BlueGreen checks a candidate at 0% by golden replay, then switches at once. The latency and
queue gates and the autoscaling queries (prometheus-adapter rules, KEDA triggers) run on the
same real metrics. (Scenarios run in file order so no window sees an earlier one's errors.)
"""

from __future__ import annotations

import os

import pytest

from lmo.api import LanguageModelSpec
from lmo.conditions import Reason
from lmo.replay import ReplayTargets
from lmo.rollout import desired_key, VersionObservation
from tests.fixtures.prometheus import Target
from tests.rollout.harness import ENTRY, GOLDEN, LoadLoop, drive, set_behavior, write_embedding_model

pytestmark = pytest.mark.slow

NS, LM = "ml", "embed"


def canary_spec() -> LanguageModelSpec:
    return LanguageModelSpec.model_validate(
        {
            "task": "feature-extraction",
            "versions": [
                {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
                {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 0},
            ],
            "rollout": {
                "strategy": "Canary",
                "steps": [20, 50, 100],
                "stepDuration": "3s",
                "analysis": {
                    "prometheusUrl": os.environ["LMO_TEST_PROMETHEUS"],
                    "maxErrorRate": 0.05,
                    "maxOutputDrift": 0.05,
                    "maxLatencyP99Ms": 5000,
                    "minRequests": 6,
                    "inconclusiveLimit": 2,
                },
            },
        }
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory, triton_servers):
    """Two Triton servers (v1 stable, v2 candidate) and a Prometheus scraping both."""
    from tests.fixtures.prometheus import PrometheusServer

    root = tmp_path_factory.mktemp("rollout-real")
    servers, behavior = {}, {}
    for v in ("v1", "v2"):
        behavior[v] = root / f"{v}.json"
        write_embedding_model(root / v, behavior[v])
        # the candidate exports latency summaries (p99), the stable only counters (mean)
        extra = ["--metrics-config=summary_latencies=true"] if v == "v2" else []
        servers[v] = triton_servers(root / v, [ENTRY], extra_args=extra)
    targets = [
        Target(f"127.0.0.1:{s.metrics_port}", NS, LM, v, f"{LM}-{v}-abc12-xyz34")
        for v, s in servers.items()
    ]
    with PrometheusServer(targets) as prom:
        old = os.environ.get("LMO_TEST_PROMETHEUS")
        os.environ["LMO_TEST_PROMETHEUS"] = prom.url
        try:
            yield servers, behavior, prom
        finally:
            if old is None:
                os.environ.pop("LMO_TEST_PROMETHEUS", None)
            else:
                os.environ["LMO_TEST_PROMETHEUS"] = old


def serving(spec: LanguageModelSpec) -> list[VersionObservation]:
    """Both versions ready, each serving the artifact its spec asks for."""
    return [VersionObservation(v.name, True, desired_key(spec, v.name)) for v in spec.versions]


def blue_green_spec() -> LanguageModelSpec:
    """BlueGreen without mirrored traffic: judged on golden replay alone (minRequests 0)."""
    spec = canary_spec().model_dump(by_alias=True, exclude_none=True)
    spec["rollout"].update(strategy="BlueGreen", stepDuration="2s", scaleDownDelay="1m")
    spec["rollout"]["analysis"]["minRequests"] = 0
    return LanguageModelSpec.model_validate(spec)


def run(env, spec: LanguageModelSpec | None = None, **candidate_behavior):
    servers, behavior, _ = env
    set_behavior(behavior["v2"], **candidate_behavior)
    urls = {v: s.http_address for v, s in servers.items()}
    load = LoadLoop(urls).start()
    spec = spec or canary_spec()
    try:
        return (
            *drive(
                spec,
                NS,
                LM,
                serving(spec),
                load,
                lambda cand, stable: ReplayTargets(
                    f"http://{urls[cand]}", f"http://{urls[stable]}", ENTRY, GOLDEN
                ),
                timeout=45,
            ),
            load,
        )
    finally:
        load.stop()


def routes(steps):
    out = []
    for s in steps:
        if not out or s.decision.traffic != out[-1]:
            out.append(s.decision.traffic)
    return out


def test_good_candidate_is_promoted_step_by_step(env):
    status, steps, load = run(env)
    assert status.phase == "Succeeded" and status.stable == "v2", status.message
    assert [s.analysis_verdict for s in steps if s.analysis_verdict] == ["pass"] * 3
    assert routes(steps) == [
        {"v1": 80, "v2": 20},
        {"v1": 50, "v2": 50},
        {"v1": 0, "v2": 100},
    ]
    m = status.last_analysis["measurements"]
    assert m["requests"] >= 6 and m["error_ratio"] == 0.0
    assert m["output_drift"] < 1e-6  # same model: identical answers
    assert load.failed == {}


def test_drifted_candidate_is_stopped_by_golden_replay(env):
    status, steps, load = run(env, drift=0.7)
    assert status.phase == "RolledBack", status.message
    assert routes(steps)[-1] == {"v1": 100, "v2": 0}
    m = status.last_analysis["measurements"]
    assert m["error_ratio"] == 0.0 and m["output_drift"] > 0.3
    (warning,) = [e for s in steps for e in s.decision.events if e[1] == Reason.ROLLOUT_ROLLED_BACK]
    assert "output drift" in warning[2] and "> maxOutputDrift 0.05" in warning[2]


def test_failing_candidate_is_rolled_back_on_error_ratio(env):
    status, steps, load = run(env, fail_every=3)
    assert status.phase == "RolledBack", status.message
    assert routes(steps) == [{"v1": 80, "v2": 20}, {"v1": 100, "v2": 0}]
    m = status.last_analysis["measurements"]
    assert 0.15 < m["error_ratio"] < 0.55 and m["failures"] >= 1
    assert load.failed.get("v2", 0) > 0 and "v1" not in load.failed
    (warning,) = [e for s in steps for e in s.decision.events if e[1] == Reason.ROLLOUT_ROLLED_BACK]
    assert warning[0] == "Warning" and "> maxErrorRate 0.0500" in warning[2]


def test_no_traffic_is_inconclusive_and_says_why(env):
    from lmo.decide.measure import analyse

    spec = canary_spec()
    result = analyse(spec.rollout.analysis, NS, LM, "v9", "v1", 3.0)
    assert result.verdict == "inconclusive"
    assert result.reasons == ["v9 served 0 requests in 3s < minRequests 6"]


def test_latency_and_queue_gates_quote_measured_values(env):
    """Thresholds below what a CPU Triton can do fail the step, naming value and threshold.

    p99 where Triton exports latency summaries, else the mean (and the reason says which).
    """
    import time

    from lmo.decide.measure import analyse

    servers, behavior, _ = env
    set_behavior(behavior["v2"])
    load = LoadLoop({v: s.http_address for v, s in servers.items()}).start()
    load.route({"v1": 50, "v2": 50})
    try:
        time.sleep(3)
        strict = canary_spec().rollout.analysis.model_copy(
            update={"max_latency_p99_ms": 0.001, "max_queue_time_ms": 0.000001}
        )
        result = analyse(strict, NS, LM, "v2", "v1", 3.0)
    finally:
        load.stop()
    assert result.verdict == "fail", result
    m = result.measurements
    assert m["latency_p99_ms"] > 0.001 and m["queue_time_ms"] > 0 and m["error_ratio"] == 0.0
    text = " ".join(result.reasons)
    # the candidate's p99 comes from Triton's latency summary (summary_latencies=true)
    assert f"p99 latency {m['latency_p99_ms']:.1f}ms > maxLatencyP99Ms 0.001" in text
    assert "> maxQueueTimeMs 1e-06" in text
    # the stable exports no summaries or histograms (Triton's default): its mean is used
    assert m["stable_latency_mean_ms"] > 0 and "stable_latency_p99_ms" not in m
    swapped = analyse(strict, NS, LM, "v1", "v2", 3.0)
    assert "mean latency (no histograms)" in " ".join(swapped.reasons)


def test_autoscaling_queries_run_on_real_triton_metrics(env):
    """The prometheus-adapter rules (filled in as the adapter fills them) and the KEDA
    queries, evaluated by a real Prometheus."""
    import time

    from lmo.decide.prometheus import Prometheus
    from lmo.builders.autoscaling import (
        gpu_util_query,
        inference_rate_query,
        prometheus_adapter_rules,
        queue_time_ms_query,
    )
    from tests.fixtures.metrics_adapter import metrics_query

    servers, behavior, prom_server = env
    pods = {f"{LM}-v1-abc12-xyz34", f"{LM}-v2-abc12-xyz34"}
    set_behavior(behavior["v2"])
    load = LoadLoop({v: s.http_address for v, s in servers.items()}).start()
    load.route({"v1": 50, "v2": 50})
    prom = Prometheus(prom_server.url)
    try:
        time.sleep(3)
        per_pod = {}
        for rule in prometheus_adapter_rules()["rules"]["custom"]:
            q = metrics_query(rule["metricsQuery"], NS, sorted(pods))
            per_pod[rule["name"]["as"]] = {labels["pod"]: v for labels, v in prom.query(q)}
        keda = {
            "queue": prom.query(queue_time_ms_query(NS, LM, "v2")),
            "rate": prom.query(inference_rate_query(NS, LM, "v2")),
            "idle": prom.query(inference_rate_query(NS, LM, "v9")),
            "gpu": prom.query(gpu_util_query(NS, LM, "v2")),
        }
    finally:
        load.stop()
    # one value per pod: queue time in ms (small: one request at a time), inferences/s
    assert set(per_pod["lmo_triton_queue_time_ms"]) == pods
    assert all(0 < v < 1000 for v in per_pod["lmo_triton_queue_time_ms"].values())
    assert set(per_pod["lmo_triton_inference_rate"]) == pods
    assert all(v > 1 for v in per_pod["lmo_triton_inference_rate"].values())
    assert per_pod["DCGM_FI_DEV_GPU_UTIL"] == {}  # valid query, no GPU exporter here
    ((_, queue),) = keda["queue"]
    ((_, rate),) = keda["rate"]
    assert 0 < queue < 1000
    # evaluated a moment apart from the adapter query, hence the tolerance
    assert rate == pytest.approx(per_pod["lmo_triton_inference_rate"][f"{LM}-v2-abc12-xyz34"], rel=0.2)
    assert [v for _, v in keda["idle"]] == [0.0]  # a version without pods reads as zero
    assert keda["gpu"] == []


def test_blue_green_never_switches_to_a_drifted_candidate(env):
    status, steps, load = run(env, blue_green_spec(), drift=0.7)
    assert status.phase == "RolledBack", status.message
    assert routes(steps) == [{"v1": 100, "v2": 0}]
    assert load.sent.get("v2", 0) == 0  # users never saw it; only the golden replay did
    assert "output drift" in status.message


def test_blue_green_switches_all_traffic_at_once_after_its_checks(env):
    status, steps, load = run(env, blue_green_spec())
    assert status.phase == "Succeeded" and status.stable == "v2", status.message
    assert routes(steps) == [{"v1": 100, "v2": 0}, {"v1": 0, "v2": 100}]
    assert status.last_analysis["measurements"]["output_drift"] < 1e-6


def test_the_charts_triton_alert_expressions_return_series_on_real_triton(env, k8s_tools):
    """Every Triton alert of the chart's PrometheusRule, its threshold taken off, answers with
    a series per version from the real Prometheus scraping the real servers: a renamed metric
    or label would leave an alert that can never fire."""
    import re

    import yaml

    from lmo.decide.prometheus import Prometheus
    from tests.chart.test_chart import CHART, helm

    _, _, prom = env
    out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system",
               "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "PrometheusRule"]
    (triton,) = [g for g in rule["spec"]["groups"] if g["name"] == "lmo.triton"]
    client = Prometheus(prom.url)
    for r in triton["rules"]:
        bare = re.sub(r"\s*>\s*[0-9.e+-]+\s*$", "", r["expr"].strip())
        assert bare != r["expr"].strip(), r["alert"]
        found = {labels.get("lmo_version") for labels, _ in client.query(bare)}
        want = {"v2"} if r["alert"] == "LmoHighLatencyP99" else {"v1", "v2"}  # v1 exports no summaries
        assert want <= found, (r["alert"], bare, found)


def test_the_charts_dashboard_triton_panels_return_series_on_real_triton(env, k8s_tools):
    """Every dashboard panel on Triton's metrics, with 'all' chosen in its variables, answers
    with a series per version from the real Prometheus scraping the real servers. (The panels
    on the operator's own metrics need a scraped operator: not here.)"""
    from lmo.decide.prometheus import Prometheus
    from tests.chart.test_dashboard import dashboard, queries

    _, _, prom = env
    _, dash = dashboard(k8s_tools)
    client = Prometheus(prom.url)
    checked = 0
    for title, q in queries(dash):
        if "nv_inference" not in q:
            continue
        found = {labels.get("lmo_version") for labels, _ in client.query(q)}
        want = {"v2"} if "summary" in q else {"v1", "v2"}  # v1 exports no latency summaries
        assert want <= found, (title, q, found)
        checked += 1
    assert checked == 6
