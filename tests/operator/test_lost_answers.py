"""A rollout step through writes whose answers are lost, as while etcd is away.

The operator's own reconcile path (`lmo.handlers.Runtime`, as Kopf and the resync drive it)
against the KMock emulator, which here fails chosen writes the way a real API server does
when etcd stops: a write refused with 500 (nothing applied), or applied and answered 504
(the answer is lost, not the write). A real server produces these only by chance during an
outage (tests/realkube/test_control_plane_faults.py); here each one is placed on purpose.
Whatever is lost, every step's Event is sent once and no child is written twice, also when
another operator process takes over between the Event and the status write.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import kopf
import pytest
import pytest_asyncio

from lmo.handlers import Runtime
from lmo.kube import KubeError
from lmo.settings import OperatorSettings
from tests.fixtures.kmock_fixture import (
    WRITE_METHODS,
    WriteFault,
    _by_operator,
    _method,
    job_for,
    manifest_for,
    start_cluster,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
STATUS = "/status"
EVENTS = f"/namespaces/{NS}/events"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster():
    async with await start_cluster(operator=False) as (c, _):
        yield c


class Passing:
    """The analysis of every step passes (there is no Prometheus behind the emulator)."""

    def __call__(self, analysis, namespace, lm, candidate, stable, window_seconds, replay=None):
        from lmo.decide.vocabulary import AnalysisResult

        return AnalysisResult("pass", {"requests": 50.0}, ["scripted pass"])


class Operator:
    """A Runtime on the emulator whose clock the test sets."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.rt = Runtime(settings=OperatorSettings(),
                          connection=kopf.ConnectionInfo(server=str(cluster.kmock.url), insecure=True))
        self.rt.analyse = Passing()
        self.now = T0
        self.rt.clock = lambda: self.now

    async def __aenter__(self) -> Operator:
        await self.rt.login(self.rt.connection)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.rt.close()

    async def at(self, seconds: float, name: str) -> None:
        self.now = T0 + timedelta(seconds=seconds)
        await self.rt.reconcile(NS, name)


def canary() -> dict:
    return {
        "task": "fill-mask",
        "versions": [
            {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 100},
            {"name": "b", "checkpoint": {"uri": "s3://m/b/"}, "traffic": 0},
        ],
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "rollout": {"strategy": "Canary", "steps": [50, 100], "stepDuration": "1m",
                    "analysis": {"prometheusUrl": "http://prometheus:9090"}},
    }


async def at_first_step(cluster, op: Operator, name: str) -> None:
    """Both versions converted and ready, the canary at its first step (b at 50%)."""
    body = canary()
    await cluster.apply_lm(name, body, NS)
    await op.at(0, name)
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, name, v), manifest_for(body, v))
    await op.at(1, name)
    for v in ("a", "b"):
        await cluster.ready_deployment(NS, f"{name}-{v}")
    await op.at(2, name)
    await op.at(3, name)
    assert cluster.lm_status(name)["rollout"]["step"] == 0, cluster.lm_status(name)["rollout"]


def step_events(cluster, name: str) -> list[tuple[str, int]]:
    return sorted((e["message"], e.get("count", 1)) for e in cluster.list("v1/events", NS)
                  if e["involvedObject"]["name"] == name and e["reason"] == "RolloutStep")


def repeated_child_writes(cluster, name: str) -> list[str]:
    """Writes to a child of `name` sent again with the same body (none are needed: a
    child already as desired is not written)."""
    seen, out = set(), []
    for r in list(cluster.kmock):
        path = r.url.path
        if (_method(r) not in WRITE_METHODS or not _by_operator(r) or "/languagemodels/" in path
                or not str(r.name or "").startswith(name + "-")):
            continue
        key = (_method(r), path, json.dumps(r.data, sort_keys=True, default=str))
        if key in seen:
            out.append(f"{key[0]} {path}")
        seen.add(key)
    return out


async def through(cluster, op: Operator, name: str, faults: list[WriteFault]) -> None:
    """The analysis of step 1 passes while `faults` strike; the next passes run without."""
    await at_first_step(cluster, op, name)
    cluster.kmock.faults[:] = faults
    try:
        with pytest.raises(KubeError):
            await op.at(63, name)  # the hold is over: step 2 is decided
    finally:
        cluster.kmock.faults[:] = []
    assert all(f.times == 0 for f in faults), "a fault did not strike"
    await op.at(64, name)
    await op.at(65, name)


async def test_a_refused_status_write_after_a_lost_event_answer_sends_the_step_once(cluster):
    """etcd goes away between the two writes of the step: the Event's post lands (its answer
    is lost), the status write is refused. The next pass decides step 2 again from the same
    status, and finds its Event already posted."""
    async with Operator(cluster) as op:
        await through(cluster, op, "refused", [
            WriteFault("POST", EVENTS, lost=True), WriteFault("PATCH", STATUS, lost=False)])
        assert cluster.lm_status("refused")["rollout"]["step"] == 1
        assert step_events(cluster, "refused") == [
            ("step 1/2: b at 50%", 1), ("step 2/2: b at 100%", 1)]
        assert repeated_child_writes(cluster, "refused") == []


async def test_a_status_write_whose_answer_is_lost_is_not_decided_again(cluster):
    """The status write lands but its answer is lost: the next pass reads step 2 back."""
    async with Operator(cluster) as op:
        await through(cluster, op, "landed", [WriteFault("PATCH", STATUS, lost=True)])
        assert cluster.lm_status("landed")["rollout"]["step"] == 1
        assert step_events(cluster, "landed") == [
            ("step 1/2: b at 50%", 1), ("step 2/2: b at 100%", 1)]
        assert repeated_child_writes(cluster, "landed") == []


async def test_an_operator_stopped_before_the_status_write_is_not_repeated_by_the_next(cluster):
    """The step's Event is posted and the status write never happens (the leader dies, the
    write is refused): another operator process, with nothing in memory, decides step 2
    again and sends no second Event."""
    async with Operator(cluster) as first:
        await at_first_step(cluster, first, "handover")
        cluster.kmock.faults[:] = [WriteFault("PATCH", STATUS, lost=False)]
        try:
            with pytest.raises(KubeError):
                await first.at(63, "handover")
        finally:
            cluster.kmock.faults[:] = []
    async with Operator(cluster) as second:
        await second.at(70, "handover")
        await second.at(71, "handover")
    assert cluster.lm_status("handover")["rollout"]["step"] == 1
    assert step_events(cluster, "handover") == [
        ("step 1/2: b at 50%", 1), ("step 2/2: b at 100%", 1)]
    assert repeated_child_writes(cluster, "handover") == []


async def test_a_step_taken_again_later_is_counted_again(cluster):
    """The mark tells a retry from a repeat: the same Event decided from another status (a
    later rollout reaching the same step) is counted up, not swallowed."""
    from lmo.kube import Ref

    async with Operator(cluster) as op:
        kube = op.rt.kube
        ref = Ref("lmo.dev/v1alpha1", "LanguageModel", NS, "repeat", "uid-1")
        for mark in ("status-1", "status-1", "status-2"):
            await kube.post_event(ref, "Normal", "RolloutStep", "step 1/2: b at 50%", T0,
                                  decided_from=mark)
        (event,) = [e for e in cluster.list("v1/events", NS)
                    if e["involvedObject"]["name"] == "repeat"]
        assert event["count"] == 2
