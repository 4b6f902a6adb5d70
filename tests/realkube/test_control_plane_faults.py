"""The operator through real control-plane faults, without being restarted.

Its own control plane (the tests stop its parts), the chart's two operator replicas, the
kubelet stand-in. Each test drives a canary rollout and, in the middle of it, restarts
kube-apiserver, stops etcd for 10 s, or expires the operator's watches (etcd compacted past
their resourceVersion, then the API server restarted so they must resume: 410 Gone). The
operator processes must survive (same pids, the same leader), the rollout must reach the
same end as without the fault, the status never go backwards, and no write be repeated
(the audit log holds each write's body).
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.real_cluster import RealCluster, tiny_checkpoints
from tests.fixtures.stub_prometheus import StubPrometheus
from tests.realkube.failover import StatusWatch, holder, leader
from tests.realkube.test_operator_life import events, weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faulty():
    from tests.realkube.conftest import require_binaries

    require_binaries()
    cluster = RealCluster()
    try:
        cluster.start(tiny_checkpoints, replicas=True, helm_values=("replicas=2",))
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def prom():
    stub = StubPrometheus().start()
    yield stub
    stub.stop()


def canary(prom: StubPrometheus) -> dict:
    return {
        "task": "text-classification",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
             "optimize": {"precision": "fp32"}, "traffic": 100},
            {"name": "v2", "checkpoint": {"uri": "pvc://models/tiny-bert-v2/"},
             "optimize": {"precision": "fp32"}, "traffic": 0},
        ],
        "routing": {"parentRef": {"name": "gw"}},
        "rollout": {"strategy": "Canary", "steps": [50, 100], "stepDuration": "6s",
                    "analysis": {"prometheusUrl": prom.url, "maxErrorRate": 0.05, "minRequests": 20}},
    }


def phase(real: RealCluster, ns: str, lm: str) -> str | None:
    try:
        return (real.status(ns, lm).get("rollout") or {}).get("phase")
    except Exception:  # noqa: BLE001 (the API server is away for a moment)
        return None


def through_a_fault(real: RealCluster, prom: StubPrometheus, lm: str, fault) -> None:
    ns = real.namespace()
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    pids = sorted(p.pid for p in real.operators if p.poll() is None)
    first = leader(real)
    with StatusWatch(real, ns, lm) as watch:
        real.create_lm(ns, lm, canary(prom))
        real.wait(lambda: phase(real, ns, lm) == "Progressing", 180, "canary step 1")
        assert weights(real, ns, lm) == {f"{lm}-v1": 50, f"{lm}-v2": 50}
        fault()
        recovered = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(time.time() + 20))
        real.wait(lambda: phase(real, ns, lm) == "Succeeded", 120, "promoted after the fault")
    assert weights(real, ns, lm) == {f"{lm}-v2": 100}
    # no restart: the same processes, the same leader
    assert sorted(p.pid for p in real.operators if p.poll() is None) == pids
    assert leader(real) is first, holder(real)
    # the same end as without a fault, every step taken once, nothing written twice
    reasons: dict[str, list[dict]] = {}
    for e in events(real, ns, lm):
        reasons.setdefault(e["reason"], []).append(e)
    assert [e["count"] for e in reasons["RolloutStarted"]] == [1]
    assert sorted(e["count"] for e in reasons["RolloutStep"]) == [1, 1]
    assert [e["count"] for e in reasons["RolloutSucceeded"]] == [1]
    assert watch.seen and watch.backwards() == [], watch.backwards()
    assert real.repeated_writes(ns) == []
    # a restarted API server refuses requests (403) until its RBAC caches are filled; after
    # that, nothing may be refused
    late = [line for line in real.forbidden() if line[1:20] > recovered]
    assert not late, late


def test_kube_apiserver_restart_mid_rollout(faulty: RealCluster, prom: StubPrometheus):
    through_a_fault(faulty, prom, "apirestart",
                    lambda: faulty.cp.restart_component("kube-apiserver", down=2))


def test_etcd_stopped_for_ten_seconds_mid_rollout(faulty: RealCluster, prom: StubPrometheus):
    def outage() -> None:
        faulty.cp.stop_component("etcd")
        time.sleep(10)
        faulty.cp.start_component("etcd")

    through_a_fault(faulty, prom, "etcddown", outage)


def test_expired_watches_are_listed_again(faulty: RealCluster, prom: StubPrometheus):
    def expire() -> None:
        # writes elsewhere move etcd on, the compaction drops the history the operator's
        # watches would resume from, and the restart makes them resume: 410 Gone
        ns = faulty.namespace("churn")
        for i in range(5):
            faulty.create_secret(ns, f"churn-{i}")
        faulty.cp.compact_etcd()
        faulty.cp.restart_component("kube-apiserver")

    through_a_fault(faulty, prom, "expired", expire)
