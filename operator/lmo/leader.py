"""Leader election on a `coordination.k8s.io/v1` Lease: one active operator among replicas.

The chart runs two operator pods; only the holder of the Lease runs Kopf and writes
anything, the other waits as a standby (its liveness endpoint answers, so it counts as
available for the PodDisruptionBudget). The algorithm is client-go's
(`tools/leaderelection`), which KServe, the NIM Operator, Argo Rollouts and Flagger use:

* a candidate takes the Lease when it has none, when its holder released it (empty
  `holderIdentity`), or when the Lease has not changed for `leaseDurationSeconds` *as this
  candidate observed it on its own clock* (no clock comparison between machines);
* every write is an update carrying the `resourceVersion` read just before it, so two
  candidates can never both succeed: the loser gets 409 Conflict;
* the holder renews every `retry` seconds. It treats itself as leader only until
  `duration - margin` after the start of its last successful renewal: a standby cannot
  take over before `duration` after it saw that renewal, which was after it started, so the
  two windows never overlap. `Kube` refuses lmo's writes outside that window (`leading`), so
  an operator cut off from the API server stops writing before anyone else may start.
* A standby that could not reach the API server starts counting again from its next look
  (it cannot know whether the leader renewed meanwhile): an API server or etcd outage
  shorter than the renewal gap causes no change of leader.
* A holder that finds another holder exits (the pod restarts as a standby), as
  controller-runtime does; one that merely could not reach the API server keeps the Lease
  once it can renew it again (nobody else could change it meanwhile), so an API server or
  etcd outage needs no restart.
* On a clean stop (SIGTERM, a rolling update) the holder empties `holderIdentity`, and the
  standby takes over at its next try instead of after the full duration.

Why a Lease and not Kopf peering: peering pauses every operator that sees a live peer of
equal priority, itself included (all pods of one Deployment have the same priority), and a
killed peer is only forgotten when its last keepalive expires (60 s by default); it also
needs Kopf's own CRDs and cluster-wide rights to them. A Lease is a built-in object in
the operator's own namespace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Callable

from lmo.kube import Kube, KubeError, api_path

log = logging.getLogger(__name__)

LEASE_API = "coordination.k8s.io/v1"
DURATION = 10.0  # leaseDurationSeconds: a killed leader is replaced after at most this + RETRY
RETRY = 2.0  # how often the holder renews and a standby retries
MARGIN = 1.0  # the holder stops writing this long before a standby may start


def microtime(now: datetime | None = None) -> str:
    """metav1.MicroTime: `2026-01-02T03:04:05.123456Z`."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LostLeadership(Exception):
    """Another candidate holds the Lease now."""


class Elector:
    """Acquire, renew and release one Lease. `leading()` says whether writes are safe now."""

    def __init__(self, kube: Kube, namespace: str, name: str, identity: str, *,
                 duration: float = DURATION, retry: float = RETRY,
                 clock: Callable[[], float] = time.monotonic):
        if retry >= duration - MARGIN:
            raise ValueError(f"lease retry period {retry}s must be shorter than the duration "
                             f"{duration}s minus {MARGIN}s")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.retry = retry
        self.clock = clock
        self.valid_until = 0.0  # on `clock`: leader while clock() < valid_until
        self._seen: tuple[str, float] | None = None  # (resourceVersion, when first seen)

    @property
    def path(self) -> str:
        return api_path(LEASE_API, "leases", self.namespace, self.name)

    def leading(self) -> bool:
        return self.clock() < self.valid_until

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards.

        Raises LostLeadership when it held the Lease and another candidate has it now.
        """
        started = self.clock()
        lease = await self.kube.request("GET", self.path)
        if lease is None:
            return await self._create(started)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        rv = lease["metadata"]["resourceVersion"]
        if self._seen is None or self._seen[0] != rv:
            self._seen = (rv, self.clock())
        if holder and holder != self.identity:
            if self.valid_until:  # it was ours: someone took it
                self.valid_until = 0.0
                raise LostLeadership(f"Lease {self.namespace}/{self.name} is held by {holder}")
            duration = float(spec.get("leaseDurationSeconds") or self.duration)
            if self.clock() < self._seen[1] + duration:
                return False
        now = microtime()
        ours = holder == self.identity
        body = {
            "apiVersion": LEASE_API, "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace, "resourceVersion": rv},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": spec.get("acquireTime") if ours else now,
                "renewTime": now,
                "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if ours else 1),
            },
        }
        try:
            await self.kube.request("PUT", self.path, body=body, kind="Lease")
        except KubeError as err:
            if err.status == 409:  # another candidate wrote first
                return False
            raise
        if not ours:
            log.info("acquired Lease %s/%s as %s (was %s)", self.namespace, self.name,
                     self.identity, holder or "free")
        self.valid_until = started + self.duration - MARGIN
        return True

    async def _create(self, started: float) -> bool:
        now = microtime()
        body = {
            "apiVersion": LEASE_API, "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self.duration),
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }
        try:
            await self.kube.request(
                "POST", api_path(LEASE_API, "leases", self.namespace), body=body, kind="Lease")
        except KubeError as err:
            if err.status == 409:
                return False
            raise
        log.info("created Lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.valid_until = started + self.duration - MARGIN
        return True

    async def _attempt(self) -> bool:
        try:
            # bounded: a request stuck behind a busy server must not hold up the next try
            return await asyncio.wait_for(self.try_acquire_or_renew(), 2 * self.retry)
        except LostLeadership:
            raise
        except Exception as err:  # noqa: BLE001 (any transport or server error)
            # the API server is away (restart, etcd outage): keep trying; `leading()` turns
            # False by itself when the last renewal is too old
            log.warning("Lease %s/%s: %s", self.namespace, self.name, err)
            # A standby that could not look cannot tell that the leader did not renew
            # meanwhile: it counts the duration again from its next look. So an outage of the
            # API server (or etcd) that the leader survives causes no change of leader.
            self._seen = None
            return False

    async def acquire(self) -> None:
        """Wait until this candidate holds the Lease."""
        log.info("waiting for Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not await self._attempt():
            await asyncio.sleep(self.retry)

    async def hold(self) -> None:
        """Renew every `retry` seconds; returns (after logging) when leadership is lost."""
        while True:
            await asyncio.sleep(self.retry)
            try:
                renewed = await self._attempt()
            except LostLeadership as err:
                log.error("lost leadership: %s", err)
                return
            if not renewed and not self.leading():
                log.warning("Lease %s/%s not renewed for %.0fs: lmo writes nothing until it is",
                            self.namespace, self.name, self.duration - MARGIN)

    async def release(self, timeout: float = 5.0) -> None:
        """Hand the Lease over at once (empty holder), if this candidate still holds it;
        at most `timeout` seconds (a stopping pod has a grace period to keep)."""
        if not self.leading():
            return
        self.valid_until = 0.0

        async def empty() -> None:
            lease = await self.kube.request("GET", self.path)
            if not lease or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["renewTime"] = microtime()
            await self.kube.request("PUT", self.path, body=lease, kind="Lease")
            log.info("released Lease %s/%s", self.namespace, self.name)

        try:
            await asyncio.wait_for(empty(), timeout)
        except (KubeError, OSError, asyncio.TimeoutError) as err:
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, err)


async def serve_standby_health(url: str | None) -> Any:
    """While waiting as a standby, answer the liveness URL (the same URL Kopf serves once
    this replica leads): a standby is healthy and counts as available. Returns the runner
    to clean up before Kopf binds the port, or None without a URL."""
    if not url:
        return None
    from urllib.parse import urlparse

    from aiohttp import web

    parsed = urlparse(url)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parsed.path or "/", health)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, parsed.hostname, parsed.port or 80, reuse_address=True).start()
    return runner
