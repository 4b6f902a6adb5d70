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

import json
import time

import pytest

from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.stub_prometheus import StubPrometheus
from tests.realkube.failover import StatusWatch, holder, leader, slow_canary
from tests.realkube.test_operator_life import events, weights

pytestmark = pytest.mark.slow


def phase(real: RealCluster, ns: str, lm: str) -> str | None:
    try:
        return (real.status(ns, lm).get("rollout") or {}).get("phase")
    except Exception:  # noqa: BLE001 (the API server is away for a moment)
        return None


def write_trail(real: RealCluster, ns: str) -> str:
    """The operator's writes of Events and status in `ns`, with their answers (audit log):
    what to read when an Event was counted twice."""
    lines = []
    for ev in real.audit():
        ref = ev.get("objectRef") or {}
        if ref.get("namespace") != ns or ev.get("verb") not in ("create", "update", "patch") \
                or ref.get("resource") not in ("events", "languagemodels"):
            continue
        body = ev.get("requestObject") or {}
        what = body.get("message") or body.get("count") or (
            (body.get("status") or {}).get("rollout") or {}).get("message") or ""
        lines.append(f"{ev.get('stageTimestamp')} {ev['verb']} {ref.get('resource')}"
                     f"{'/' + ref['subresource'] if ref.get('subresource') else ''} "
                     f"{(ev.get('responseStatus') or {}).get('code')} {what} "
                     f"{ev.get('userAgent', '')[:20]}")
    lines += [line for line in real.operator_log().splitlines() if "no longer observed ready" in line]
    return "\n".join(lines)


def standby_writes(real: RealCluster, since: float) -> list[str]:
    """Writes of the operator's account since `since` not made by the Lease's holder."""
    who = holder(real)
    assert who
    return [f"{ev['verb']} {(ev.get('objectRef') or {}).get('resource')} {ev.get('userAgent')}"
            for ev in real.audit(since)
            if ev.get("verb") in ("create", "update", "patch", "delete")
            and f"({who})" not in (ev.get("userAgent") or "")]


def through_a_fault(real: RealCluster, prom: StubPrometheus, lm: str, fault) -> None:
    ns = real.namespace()
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    pids = sorted(p.pid for p in real.operators if p.poll() is None)
    first = leader(real)
    began = time.time()
    with StatusWatch(real, ns, lm) as watch:
        real.create_lm(ns, lm, slow_canary(prom, "6s"))
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
    trail = write_trail(real, ns)
    assert [e["count"] for e in reasons["RolloutStarted"]] == [1], trail
    assert sorted(e["count"] for e in reasons["RolloutStep"]) == [1, 1], trail
    assert [e["count"] for e in reasons["RolloutSucceeded"]] == [1], trail
    assert watch.seen and watch.backwards() == [], (watch.backwards(), trail)
    # the standby wrote nothing, neither lmo nor Kopf (each replica names itself in its
    # User-Agent): every write of the operator's account came from the leader
    assert not standby_writes(real, began), standby_writes(real, began)[:5]
    assert real.repeated_writes(ns) == []
    # a restarted API server refuses requests (403) until its RBAC caches are filled; after
    # that, nothing may be refused
    late = [line for line in real.forbidden() if line[1:20] > recovered]
    assert not late, late


def test_kube_apiserver_restart_mid_rollout(ha: RealCluster, prom: StubPrometheus):
    through_a_fault(ha, prom, "apirestart",
                    lambda: ha.cp.restart_component("kube-apiserver", down=2))


def test_etcd_stopped_for_ten_seconds_mid_rollout(ha: RealCluster, prom: StubPrometheus):
    def outage() -> None:
        ha.cp.stop_component("etcd")
        time.sleep(10)
        ha.cp.start_component("etcd")

    through_a_fault(ha, prom, "etcddown", outage)


def test_expired_watches_are_listed_again(ha: RealCluster, prom: StubPrometheus):
    def expire() -> None:
        # writes elsewhere move etcd on, the compaction drops the history the operator's
        # watches would resume from, and the restart makes them resume: 410 Gone
        seen = ha.request("GET", "/apis/lmo.dev/v1alpha1/languagemodels")["metadata"]["resourceVersion"]
        ns = ha.namespace("churn")
        for i in range(5):
            ha.create_secret(ns, f"churn-{i}")
        ha.cp.compact_etcd()
        ha.cp.restart_component("kube-apiserver")
        # what the operator's watches met when they resumed from what they had seen
        r = ha.session.get(ha.cp.url + "/apis/lmo.dev/v1alpha1/languagemodels", stream=True,
                               params={"watch": "true", "resourceVersion": seen, "timeoutSeconds": "1"},
                               timeout=10)
        first = json.loads(next(r.iter_lines()))
        r.close()
        assert first["type"] == "ERROR" and first["object"]["code"] == 410, first

    through_a_fault(ha, prom, "expired", expire)
