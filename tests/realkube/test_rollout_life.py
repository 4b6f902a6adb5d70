"""Canary rollouts on the real API server, driven by Prometheus numbers.

The operator process runs the real analysis (`lmo.decide.measure.analyse`) against a stand-in of
Prometheus's HTTP API that answers the request and failure counts a test sets per version
(real Prometheus scraping real Triton is covered in tests/rollout/test_rollout_realparts.py).
Steps hold 2 s of wall clock; the route, status and Events are read from the real server.
"""

from __future__ import annotations

import pytest

from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.stub_prometheus import StubPrometheus
from tests.realkube.test_operator_life import DEPLOYMENT, events, weights

pytestmark = pytest.mark.slow


def canary(prom: StubPrometheus, v2: str = "pvc://models/tiny-bert-v2/") -> dict:
    return {
        "task": "text-classification",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
             "optimize": {"precision": "fp32"}, "traffic": 100},
            {"name": "v2", "checkpoint": {"uri": v2}, "optimize": {"precision": "fp32"}, "traffic": 0},
        ],
        "routing": {"parentRef": {"name": "gw"}},
        "rollout": {"strategy": "Canary", "steps": [50, 100], "stepDuration": "2s",
                    "analysis": {"prometheusUrl": prom.url, "maxErrorRate": 0.05, "minRequests": 20}},
    }


def rollout(real: RealCluster, ns: str, lm: str) -> dict:
    return real.status(ns, lm).get("rollout") or {}


def test_canary_advances_on_good_numbers_and_promotes(real: RealCluster, ns: str, prom: StubPrometheus):
    lm = "walk"
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    real.create_lm(ns, lm, canary(prom))
    real.wait(lambda: weights(real, ns, lm) == {"walk-v1": 50, "walk-v2": 50}, 120, "step 1: 50/50")
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "Succeeded", 60, "rollout Succeeded")
    assert weights(real, ns, lm) == {"walk-v2": 100}
    ro = rollout(real, ns, lm)
    assert ro["stable"] == "v2"
    assert {v["name"]: v["traffic"] for v in real.status(ns, lm)["versions"]} == {"v1": 0, "v2": 100}
    assert prom.count(ns, lm) > 0  # the numbers came from "Prometheus"
    ev = {}
    for e in events(real, ns, lm):
        ev.setdefault(e["reason"], []).append(e)
    assert len(ev["RolloutStep"]) == 2 and ev["RolloutSucceeded"][0]["count"] == 1


def test_canary_rolls_back_on_bad_numbers(real: RealCluster, ns: str, prom: StubPrometheus):
    lm = "back"
    prom.set(ns, lm, "v2", success=60, failure=40)
    prom.set(ns, lm, "v1", success=400, failure=0)
    real.create_lm(ns, lm, canary(prom))
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "RolledBack", 120, "rollout RolledBack")
    assert weights(real, ns, lm) == {"back-v1": 100}
    assert {v["name"]: v["traffic"] for v in real.status(ns, lm)["versions"]} == {"v1": 100, "v2": 0}
    (warning,) = [e for e in events(real, ns, lm) if e["reason"] == "RolloutRolledBack"]
    assert warning["type"] == "Warning" and "maxErrorRate" in warning["message"]
    assert real.get(*DEPLOYMENT, ns, "back-v1") is not None  # the stable kept serving


def test_pause_holds_the_step_and_resume_continues(real: RealCluster, ns: str, prom: StubPrometheus):
    import time

    lm = "hold"
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    body = canary(prom)
    body["rollout"]["paused"] = True  # paused from the start: it must never move past step 1
    real.create_lm(ns, lm, body)
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "Paused", 120, "Paused")
    queries = prom.count(ns, lm)
    time.sleep(5)  # more than two holds: a running rollout would have been analysed
    ro = rollout(real, ns, lm)
    assert ro["phase"] == "Paused" and ro["step"] == 0 and prom.count(ns, lm) == queries
    real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec/rollout/paused", "value": False}])
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "Succeeded", 120, "resumed and promoted")
    reasons = [e["reason"] for e in events(real, ns, lm)]
    assert reasons.count("RolloutPaused") == 1 and reasons.count("RolloutResumed") == 1


def test_an_operator_restart_mid_rollout_resumes_the_same_step(real: RealCluster, ns: str,
                                                               prom: StubPrometheus):
    lm = "again"
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    body = canary(prom)
    body["rollout"]["stepDuration"] = "6s"
    real.create_lm(ns, lm, body)
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "Progressing", 120, "step 1")
    before = rollout(real, ns, lm)
    jobs = real.names("batch/v1", "Job", ns)
    real.stop_operator()
    real.start_operator()
    real.wait(lambda: rollout(real, ns, lm).get("phase") == "Succeeded", 120, "promoted after the restart")
    ev = {}
    for e in events(real, ns, lm):
        ev.setdefault(e["reason"], []).append(e)
    # no duplicate work: one start, one Event per step, no new conversion Job
    assert len(ev["RolloutStarted"]) == 1 and ev["RolloutStarted"][0]["count"] == 1
    assert sorted(e["count"] for e in ev["RolloutStep"]) == [1, 1]
    assert real.names("batch/v1", "Job", ns) <= jobs
    assert before["step"] == 0
