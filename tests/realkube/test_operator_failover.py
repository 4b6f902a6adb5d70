"""Two operator replicas on the real API server: exactly one active, and a standby that takes
over when the active one is SIGKILLed in the middle of a conversion and of a canary.

The chart installed with helm, two `lmo operator` processes with the chart Deployment's
command, arguments, environment and ServiceAccount token (what its two pods run), the
kubelet stand-in converting real tiny checkpoints. Leadership is a coordination.k8s.io
Lease (lmo.leader); the audit log says what the operator's account wrote, and a watch records
every status the LanguageModel had. The seconds from SIGKILL to the standby holding the
Lease and to its first write are printed (`-s`) and recorded by bench/failover.py.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.fixtures.real_cluster import RealCluster, two_versions
from tests.fixtures.stub_prometheus import StubPrometheus
from tests.realkube.failover import (
    StatusWatch,
    child_write_counts,
    first_reconcile,
    holder,
    leader,
    slow_canary,
    takeover,
)
from tests.realkube.test_operator_life import JOB, events, weights

pytestmark = pytest.mark.slow


@pytest.fixture
def ns(ha: RealCluster):
    name = ha.namespace()
    before = len(ha.forbidden())
    yield name
    denied = ha.forbidden()[before:]
    assert not denied, "the chart's RBAC refused the operator:\n" + "\n".join(denied[:5])


def report(what: str, seconds: float) -> None:
    print(f"\n{what}: {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})")


def test_one_of_two_replicas_leads_and_a_standby_takes_over_mid_conversion_and_mid_canary(
        ha: RealCluster, ns: str, prom: StubPrometheus):
    assert len([p for p in ha.operators if p.poll() is None]) == 2
    lm = "fo"
    prom.set(ns, lm, "v2", success=200, failure=0)
    prom.set(ns, lm, "v1", success=400, failure=0)
    with StatusWatch(ha, ns, lm) as watch:
        ha.create_lm(ns, lm, slow_canary(prom, "8s"))

        # exactly one replica acts: it converts both versions, the other waits
        def converting() -> bool:
            jobs = ha.list(*JOB, ns)
            return len(jobs) == 2 and not any((j.get("status") or {}).get("succeeded") for j in jobs)

        ha.wait(converting, 60, "both conversion Jobs running (someone active)")
        jobs = ha.names(*JOB, ns)
        first = leader(ha)
        assert first is not None, f"nobody holds the Lease {holder(ha)!r}"
        (standby,) = [p for p in ha.operators if p is not first and p.poll() is None]
        assert "waiting for Lease" in ha.operator_log(standby)
        assert "Lease" in ha.operator_log(first) and "acquired Lease" not in ha.operator_log(standby)

        # 1. the leader dies while both conversions run
        who = holder(ha)
        killed, wall = time.monotonic(), time.time()
        ha.kill_operator(first)
        report("SIGKILL mid-conversion -> the standby holds the Lease", takeover(ha, killed, who))
        report("SIGKILL mid-conversion -> the new leader reconciles", first_reconcile(ha, ns, wall))
        ha.start_operator()  # the pod restarts: a standby again

        # 2. the new leader dies at the canary's first step
        ha.wait(lambda: (ha.status(ns, lm).get("rollout") or {}).get("phase") == "Progressing",
                120, "canary step 1")
        before = ha.status(ns, lm)["rollout"]
        assert before["step"] == 0 and weights(ha, ns, lm) == {"fo-v1": 50, "fo-v2": 50}
        second = leader(ha)
        assert second is standby
        who = holder(ha)
        killed, wall = time.monotonic(), time.time()
        ha.kill_operator(second)
        report("SIGKILL mid-canary -> the standby holds the Lease", takeover(ha, killed, who))
        report("SIGKILL mid-canary -> the new leader reconciles", first_reconcile(ha, ns, wall))
        ha.start_operator()
        ha.wait(lambda: (ha.status(ns, lm).get("rollout") or {}).get("phase") == "Succeeded",
                120, "promoted after two failovers")
    assert weights(ha, ns, lm) == {"fo-v2": 100}
    # no second conversion Job: each of the two written once (and deleted once converted)
    counts = child_write_counts(ha, ns)
    assert sorted(w for w in counts if w.startswith("patch jobs/")) == sorted(f"patch jobs/{j}" for j in jobs)
    assert all(counts[f"patch jobs/{j}"] == 1 for j in jobs), counts
    # the step was resumed, not restarted: one start, one Event per step, each sent once
    reasons: dict[str, list[dict]] = {}
    for e in events(ha, ns, lm):
        reasons.setdefault(e["reason"], []).append(e)
    assert [e["count"] for e in reasons["RolloutStarted"]] == [1]
    assert sorted(e["count"] for e in reasons["RolloutStep"]) == [1, 1]
    assert watch.seen and watch.backwards() == [], watch.backwards()
    assert ha.repeated_writes(ns) == [], counts  # no child written twice
