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
as Events (lmo posts its own, with deterministic names), and runs standalone unless
`lmo operator --peering NAME` is given.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import kopf

from lmo import analysis
from lmo import labels as L
from lmo import metrics
from lmo.api import API_VERSION, GROUP, PLURAL, VERSION
from lmo.kube import Kube, KubeError
from lmo.logs import object_logger
from lmo.reconcile import reconcile as reconcile_lm
from lmo.settings import OperatorSettings

log = logging.getLogger(__name__)

RESYNC_SECONDS = float(os.environ.get("LMO_RESYNC_SECONDS", "60"))
RETRY_SECONDS = 15.0
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
        self.locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.timers: dict[tuple[str, str], tuple[float, asyncio.TimerHandle]] = {}
        self.queued: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task] = set()
        self.analyse = analysis.analyse  # looked up here, so a test may stand in for it

    async def login(self, info: Any) -> None:
        """Use new credentials. Kopf calls the login handler again when the API server
        answers 401 (an expired token), so lmo's client is renewed with Kopf's."""
        old, self.kube = self.kube, Kube(info, field_manager=self.settings.field_manager)
        if old is not None:
            await old.close()

    async def reconcile(self, namespace: str, name: str, logger: Any = None) -> None:
        """Re-read the LanguageModel and reconcile it, one at a time per object."""
        key = (namespace, name)
        async with self.locks.setdefault(key, asyncio.Lock()):
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
                    body, self.kube, self.settings, analyse=self.analyse, logger=logger
                )
            except Exception:
                metrics.RECONCILE_ERRORS.inc()
                metrics.RECONCILE_TOTAL.labels(result="error").inc()
                raise
            metrics.record(result, time.perf_counter() - started, namespace, name)
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
            await self.reconcile(*key)
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

    def forget(self, key: tuple[str, str]) -> None:
        pending = self.timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()
        self.queued.discard(key)
        metrics.forget(*key)

    async def close(self) -> None:
        for _, handle in self.timers.values():
            handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        if self.kube is not None:
            await self.kube.close()


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
