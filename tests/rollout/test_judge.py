"""`lmo.decide.judge`: the one place the rollout gates are applied, for both runtimes.

The operator feeds it Prometheus numbers (`analyse`), `lmo up` the differences of Triton
/metrics snapshots (`Controller.analyse`); a drift gate that cannot run fails the step in both.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

from lmo.api import Analysis
from lmo.decide.judge import judge
from lmo.decide.triton import Snapshot
from lmo.decide.vocabulary import FAIL, INCONCLUSIVE, PASS, VersionMetrics
from lmo.local.controller import Controller
from lmo.replay import Drift

GATES = Analysis(maxErrorRate=0.05, maxLatencyP99Ms=100, maxOutputDrift=0.1, minRequests=20)


def metrics(requests=100.0, failures=0.0, latency=10.0, p99=True) -> VersionMetrics:
    return VersionMetrics(requests, failures, latency, p99, 1.0)


def test_too_few_requests_is_inconclusive_whatever_else():
    r = judge(GATES, "v2", metrics(requests=5, failures=5), metrics(), 60, "replay broke")
    assert r.verdict == INCONCLUSIVE
    assert r.reasons == ["v2 served 5 requests in 60s < minRequests 20"]


def test_every_gate_states_its_value_against_its_threshold():
    r = judge(GATES, "v2", metrics(failures=10, latency=250), metrics(), 60, Drift(0.3, "1-cosine", 8))
    assert r.verdict == FAIL
    assert r.reasons == [
        "error ratio 0.1000 (10/100) > maxErrorRate 0.0500 (stable 0.0000)",
        "p99 latency 250.0ms > maxLatencyP99Ms 100",
        "output drift 0.3000 (1-cosine, 8 golden inputs) > maxOutputDrift 0.1",
    ]
    assert r.measurements["output_drift"] == 0.3 and r.measurements["latency_p99_ms"] == 250.0
    ok = judge(GATES, "v2", metrics(), metrics(), 60, Drift(0.01, "1-cosine", 8))
    assert ok.verdict == PASS and len(ok.reasons) == 3


def test_a_drift_gate_that_cannot_run_fails_the_step():
    r = judge(GATES, "v2", metrics(), metrics(), 60, "golden replay failed: connection refused")
    assert r.verdict == FAIL and r.reasons == ["golden replay failed: connection refused"]


def test_local_snapshots_are_judged_as_mean_latency_like_prometheus_without_quantiles():
    snap = Snapshot(success=95, failure=5, duration_us=2_000_000, queue_us=100_000)
    m = snap.metrics()
    assert (m.requests, m.failures, m.latency_ms, m.latency_is_p99, m.queue_time_ms) == (100, 5, 20.0, False, 1.0)
    r = judge(Analysis(maxErrorRate=0.01, maxLatencyP99Ms=10), "v2", m, Snapshot().metrics(), 30)
    assert r.reasons[1] == "mean latency (no histograms) 20.0ms > maxLatencyP99Ms 10"


def test_lmo_up_fails_a_step_whose_candidate_has_no_golden_inputs_as_the_cluster_does():
    manifest = SimpleNamespace(golden=None, key="ab" * 32, entry_model="text_classification")
    backends = {n: SimpleNamespace(url=f"http://127.0.0.1:1/{n}", artifact=SimpleNamespace(manifest=manifest))
                for n in ("v1", "v2")}
    counters = {"v1": Snapshot(success=100), "v2": Snapshot(success=100)}
    async def snapshots():
        return counters

    controller = SimpleNamespace(
        spec=SimpleNamespace(rollout=SimpleNamespace(analysis=GATES, strategy="Canary")),
        backends=backends,
        since_mark=lambda name, snap: snap,
        window_seconds=lambda now: 30.0,
        snapshots=snapshots,
    )
    ro = SimpleNamespace(candidate="v2", stable="v1")
    r = asyncio.run(Controller.analyse(controller, ro, datetime.now(timezone.utc)))
    assert r.verdict == FAIL
    (why,) = r.reasons  # only the failed gates are the reasons of a failure
    assert "maxOutputDrift is set" in why and "no golden inputs" in why and "remove" in why
