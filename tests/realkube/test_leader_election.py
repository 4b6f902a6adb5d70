"""lmo.leader's Lease protocol against a real kube-apiserver (its resourceVersion checks, its
409s), with each candidate's clock in the test's hands: who may lead when, and that a leader
stops writing before anyone else may start."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from lmo.kube import Kube, KubeError
from lmo.leader import Elector, LostLeadership
from tests.fixtures.control_plane import ControlPlane

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"


@pytest.fixture(scope="module")
def api():
    from tests.realkube.conftest import require_binaries

    require_binaries()
    with ControlPlane(with_controller_manager=False) as cp:
        yield cp


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def connection(cp: ControlPlane) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=cp.url, ca_path=str(cp.pki.ca),
                               certificate_path=str(cp.pki.admin_cert),
                               private_key_path=str(cp.pki.admin_key))


async def candidates(cp: ControlPlane, lease: str, n: int = 2):
    clocks = [Clock() for _ in range(n)]
    kubes = [Kube(connection(cp)) for _ in range(n)]
    electors = [Elector(k, NS, lease, f"replica-{i}", duration=10, retry=2, clock=c)
                for i, (k, c) in enumerate(zip(kubes, clocks))]
    return electors, clocks, kubes


async def test_one_leads_and_a_silent_leader_is_replaced_after_the_duration(api):
    (a, b), (ca, cb), kubes = await candidates(api, "silent")
    try:
        assert await a.try_acquire_or_renew() and a.leading()
        assert not await b.try_acquire_or_renew() and not b.leading()
        # a renews while b watches: b never gets it, however long it waits
        for _ in range(10):
            ca.now += 2
            cb.now += 2
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
        # a falls silent (SIGKILL): b counts the duration from when it saw the last renewal
        cb.now += 9.5
        assert not await b.try_acquire_or_renew()
        ca.now += 9.5
        assert not a.leading()  # a stopped writing before b may start
        cb.now += 1
        assert await b.try_acquire_or_renew() and b.leading()
        lease = await b.kube.get("coordination.k8s.io/v1", "leases", NS, "silent")
        assert lease["spec"]["holderIdentity"] == "replica-1"
        assert lease["spec"]["leaseTransitions"] == 1
        # a comes back: it learns it lost, and does not take the Lease back
        with pytest.raises(LostLeadership):
            await a.try_acquire_or_renew()
        assert not a.leading() and not await a.try_acquire_or_renew()
    finally:
        for k in kubes:
            await k.close()


async def test_a_leader_that_could_not_renew_keeps_the_lease_when_nobody_took_it(api):
    (a, b), (ca, cb), kubes = await candidates(api, "outage")
    try:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        ca.now += 15  # an API server outage: a could not renew, nor b look
        assert not a.leading()
        assert await a.try_acquire_or_renew() and a.leading()  # renewed: nobody changed it
        cb.now += 15  # b's first look after the outage sees a new renewal: it waits again
        assert not await b.try_acquire_or_renew()
    finally:
        for k in kubes:
            await k.close()


async def test_two_candidates_racing_for_a_free_lease_get_one_leader(api):
    electors, _, kubes = await candidates(api, "race", n=4)
    try:
        won = await asyncio.gather(*(e.try_acquire_or_renew() for e in electors))
        assert sorted(won) == [False, False, False, True]
    finally:
        for k in kubes:
            await k.close()


async def test_release_hands_over_at_the_next_try(api):
    (a, b), _, kubes = await candidates(api, "handover")
    try:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        await a.release()
        assert not a.leading()
        assert await b.try_acquire_or_renew()  # no wait for the duration
    finally:
        for k in kubes:
            await k.close()


async def test_a_client_outside_its_lease_writes_nothing(api):
    (a,), (ca,), kubes = await candidates(api, "gate", n=1)
    gated = Kube(connection(api), leading=a.leading)
    try:
        assert await a.try_acquire_or_renew()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gated", "namespace": NS}}
        Kube.register_kinds([("v1", "ConfigMap", "configmaps")])
        assert await gated.apply(cm)
        ca.now += 10
        with pytest.raises(KubeError) as err:
            await gated.apply({**cm, "data": {"k": "v"}})
        assert err.value.status == 503 and "not the leader" in str(err.value)
        assert (await gated.get("v1", "configmaps", NS, "gated")).get("data") is None
    finally:
        await gated.close()
        for k in kubes:
            await k.close()


async def test_a_standby_that_could_not_look_counts_the_duration_again(api):
    (a, b), (ca, cb), kubes = await candidates(api, "blind")
    try:
        assert await a.try_acquire_or_renew()
        assert not await b.try_acquire_or_renew()
        # b cannot reach the API server for a while (its own outage, or everyone's)
        blind = Kube(kopf.ConnectionInfo(server="https://127.0.0.1:1", insecure=True))
        b.kube, seeing = blind, b.kube
        cb.now += 12
        assert not await b._attempt()
        b.kube = seeing
        # the Lease looks unchanged, but b was not looking: it waits a full duration again
        assert not await b.try_acquire_or_renew()
        cb.now += 9
        assert not await b.try_acquire_or_renew()
        cb.now += 1.5
        assert await b.try_acquire_or_renew()  # a really is silent: b takes over
        await blind.close()
    finally:
        for k in kubes:
            await k.close()
