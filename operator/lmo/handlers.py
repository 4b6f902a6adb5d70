"""Kopf handlers for `LanguageModel` (thin: each one hands over to `lmo.reconcile`).

* create / update / resume: reconcile now.
* every reconcile schedules the next one (after `Result.requeue_after`, e.g. a rollout
  step's hold, or at the latest `LMO_RESYNC_SECONDS`, default 60): level-based, it observes
  Jobs and Deployments and corrects drift even if an event was missed. (Not a `kopf.timer`:
  Kopf puts a finalizer on every object with a timer, see the deletion note below.)
* Job and Deployment events of lmo's children wake their LanguageModel at once (a finished
  conversion or a pod turning ready shows up without waiting for the resync). Wakes
  coalesce per object and every reconcile of one object runs under one lock, re-reading
  the object first, so two never race on its status.

Deletion: no finalizer and no delete handler. Every child carries a controller
ownerReference (blockOwnerDeletion), and the API server's garbage collector deletes the
children of a deleted LanguageModel; a finalizer would add a write per object and would
block `kubectl delete` whenever the operator is down, for nothing the collector does not
already do. (The KMock emulator has no garbage collector: the test fixture emulates it.)

Kopf itself keeps its bookkeeping in annotations prefixed `lmo.dev/`, posts only warnings
as Events (lmo posts its own, with deterministic names), and runs standalone: with
`lmo operator --leader-election NAME` (the chart) Kopf starts only in the replica holding
the Lease (`lmo.leader`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import kopf

from lmo import labels as L
from lmo import metrics
from lmo.api import API_VERSION, GROUP, PLURAL, VERSION
from lmo.decide import measure
from lmo.kube import Kube, KubeError
from lmo.logs import object_logger
from lmo.reconcile import reconcile as reconcile_lm
from lmo.settings import OperatorSettings

log = logging.getLogger(__name__)

RESYNC_SECONDS = float(os.environ.get("LMO_RESYNC_SECONDS", "60"))
RETRY_SECONDS = 15.0
SECRET_POLL_SECONDS = float(os.environ.get("LMO_SECRET_POLL_SECONDS", "0.5"))
CHILD_FILTER = {L.MANAGED_BY: L.APP}


def kopf_settings(peering: str | None = None) -> kopf.OperatorSettings:
    """Kopf's settings for lmo: annotations under lmo.dev, warnings as Events, timeouts."""
    s = kopf.OperatorSettings()
    s.persistence.finalizer = "lmo.dev/finalizer"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lmo.dev")
    s.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lmo.dev", key="last-handled-configuration"
    )
    s.posting.level = logging.WARNING
    s.watching.server_timeout = 300
    s.watching.client_timeout = 330
    s.watching.connect_timeout = 30
    s.networking.request_timeout = 60
    s.peering.standalone = peering is None
    if peering is not None:
        s.peering.name = peering
        s.peering.mandatory = True
    return s


class Runtime:
    """Per-operator state shared by the handlers (kept in Kopf's memo, one per run)."""

    def __init__(self, settings: OperatorSettings | None = None, connection: Any = None):
        self.settings = settings or OperatorSettings.from_env()
        self.connection = connection  # a kopf.ConnectionInfo overriding the login
        self.kube: Kube | None = None
        self.leading: Any = None  # Elector.leading with leader election (lmo.leader)
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.timers: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        self.queued: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task] = set()
        self.slots = Slots(self.settings.max_concurrent_reconciles)
        self.listed: set[tuple[str, str]] = set()  # reconciled once (every kind listed)
        self.awaiting: dict[tuple[str, str], asyncio.Task] = {}  # missing Secrets looked for
        self.analyse = measure.analyse  # looked up here, so a test may stand in for it

    async def login(self, info: Any) -> None:
        """Use new credentials. Kopf calls the login handler again when the API server
        answers 401 (an expired token), so lmo's client is renewed with Kopf's."""
        old, self.kube = self.kube, Kube(info, field_manager=self.settings.field_manager,
                                         leading=self.leading)
        if old is not None:
            await old.close()

    async def reconcile(self, namespace: str, name: str, logger: Any = None,
                        urgent: bool = True) -> None:
        """Re-read the LanguageModel and reconcile it, one at a time per object, at most
        `max_concurrent_reconciles` at once; `urgent` ones (a spec change: someone waits
        for it) before background ones (child events, resyncs)."""
        key = (namespace, name)
        async with self.locks.setdefault(key, asyncio.Lock()), self.slots.taken(urgent):
            self.queued.discard(key)
            assert self.kube is not None, "no login yet"
            body = await self.kube.get(API_VERSION, PLURAL, namespace, name)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                self.forget(key)
                return
            started = time.perf_counter()
            if logger is None:  # a timer or a child's event, not a Kopf handler
                logger = object_logger(namespace, name, body.get("metadata", {}).get("uid"), log)
            try:
                result = await reconcile_lm(
                    body, self.kube, self.settings, analyse=self.analyse, logger=logger,
                    list_all=key not in self.listed,
                )
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                metrics.RECONCILE_TOTAL.labels(result="error").inc()
                raise
            metrics.record(result, time.perf_counter() - started, namespace, name)
            self.listed.add(key)
            self.await_secrets(key, result.missing_secrets)
        # level-based resync: look again later even when nothing asks for it
        self.wake(namespace, name, min(result.requeue_after or RESYNC_SECONDS, RESYNC_SECONDS))

    def wake(self, namespace: str, name: str, delay: float = 0.0) -> None:
        """Reconcile after `delay` s; a wake already due sooner, or queued, covers it."""
        key = (namespace, name)
        due = time.monotonic() + delay
        pending = self.timers.get(key)
        if pending is not None and pending[0] <= due:
            return
        if pending is not None:
            pending[1].cancel()
        loop = asyncio.get_running_loop()
        self.timers[key] = (due, loop.call_later(delay, self._spawn, key))

    def _spawn(self, key: tuple[str, str]) -> None:
        self.timers.pop(key, None)
        if key in self.queued:
            return
        self.queued.add(key)
        task = asyncio.get_running_loop().create_task(self._woken(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _woken(self, key: tuple[str, str]) -> None:
        try:
            await self.reconcile(*key, urgent=False)
        except KubeError as err:
            self.queued.discard(key)
            if err.status == 404:  # deleted while being reconciled
                self.forget(key)
                return
            object_logger(*key, base=log).warning("reconcile failed, retrying in %ss: %s", RETRY_SECONDS, err)
            self.wake(*key, RETRY_SECONDS)
        except Exception as err:
            self.queued.discard(key)
            object_logger(*key, base=log).warning("reconcile failed, retrying in %ss: %s", RETRY_SECONDS, err)
            self.wake(*key, RETRY_SECONDS)

    def await_secrets(self, key: tuple[str, str], names: list[str]) -> None:
        """Look for the referenced Secrets that do not exist yet, by name, every
        SECRET_POLL_SECONDS, and reconcile as soon as one appears.

        Not a watch: listing or watching Secrets needs `list`/`watch` on them, which in a
        cluster-wide install lets the operator read every Secret of the cluster; `get` by
        name is what lmo already has. A missing Secret costs one GET per interval, and only
        while it is missing and referenced.
        """
        old = self.awaiting.pop(key, None)
        if old is not None:
            old.cancel()
        if names:
            task = asyncio.get_running_loop().create_task(self._look_for(key, names))
            self.awaiting[key] = task

    async def _look_for(self, key: tuple[str, str], names: list[str]) -> None:
        while True:
            await asyncio.sleep(SECRET_POLL_SECONDS)
            try:
                found = await asyncio.gather(*(self.kube.secret_exists(key[0], n) for n in names))
            except Exception:  # noqa: BLE001 (the API server away: look again)
                continue
            if any(found):
                self.awaiting.pop(key, None)
                self.wake(*key)
                return

    def forget(self, key: tuple[str, str]) -> None:
        self.await_secrets(key, [])
        self.listed.discard(key)
        pending = self.timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        self.queued.discard(key)
        metrics.forget(*key)

    async def close(self) -> None:
        for _, handle in self.timers.values():
            handle.cancel()
        for task in [*self.tasks, *self.awaiting.values()]:
            task.cancel()
        if self.kube is not None:
            await self.kube.close()


class Slots:
    """A semaphore whose urgent waiters go before the others (each kind first come, first
    served): with a thousand resyncs queued, a traffic change still waits for one slot."""

    def __init__(self, size: int):
        self.free = size
        self.waiting: tuple[collections.deque, collections.deque] = (
            collections.deque(), collections.deque())  # (urgent, background) futures

    @contextlib.asynccontextmanager
    async def taken(self, urgent: bool) -> AsyncIterator[None]:
        if self.free > 0 and not any(self.waiting):
            self.free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            queue = self.waiting[0 if urgent else 1]
            queue.append(turn)
            try:
                await turn  # handed over by a release: the slot is ours
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # given to us as we were cancelled: pass it on
                else:
                    queue.remove(turn)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in self.waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self.free += 1


def runtime(memo: Any) -> Runtime:
    """The Runtime in Kopf's memo (made on first use; per-object memos share it)."""
    if memo.get("lmo") is None:
        memo["lmo"] = Runtime()
    return memo["lmo"]


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    rt = runtime(memo)
    info = rt.connection or kopf.login_via_client(**kwargs)
    if info is not None:
        await rt.login(info)
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def reconcile(name: str, namespace: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    try:
        await runtime(memo).reconcile(namespace, name, logger)
    except KubeError as err:
        if err.status == 404:  # deleted meanwhile: nothing left to do
            return
        raise kopf.TemporaryError(str(err), delay=RETRY_SECONDS) from err


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_FILTER)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
async def child_changed(labels: dict, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(L.MODEL)
    if owner and namespace:
        runtime(memo).wake(namespace, owner)
