"""Kopf handlers for `LanguageModel` (thin: each one hands over to `lmo.reconcile`).

* A LanguageModel's watch event (`kopf.on.event`): reconcile it when its spec is newer than
  what its status was written for (`metadata.generation` against `status.observedGeneration`:
  created, or its spec changed; urgent, someone waits for it), or when this process has not
  reconciled it yet (listed at start: the resume). The echo of lmo's own status writes
  changes neither, so it costs no reconcile.
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

No Kopf bookkeeping either: Kopf's create/update/resume handlers would store a diff base
(the `last-handled-configuration` annotation) after every creation and spec change, and
progress annotations on every retry, each a PATCH of the LanguageModel and another watch
event, one more write per resource for nothing: the reconcile is level-based and reads
the whole object anyway. Retries are lmo's own timers (`RETRY_SECONDS`), not
`kopf.TemporaryError`. Kopf posts only warnings as Events (lmo posts its own, with
deterministic names), and runs standalone: with `lmo operator --leader-election NAME` (the
chart) Kopf starts only in the replica holding the Lease (`lmo.leader`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
import warnings
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
    s.persistence.diffbase_storage = NoDiffBase()
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


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: lmo registers no create/update handler, so Kopf has no use for one,
    yet it builds one for every event of every watched object (a deep copy of the whole
    object, status and managedFields included) only to compare it with nothing. Measured
    on the real API server: a tenth of the operator's CPU in a burst of 200 creations.
    Nothing is stored either (Kopf's annotation would be a PATCH per change)."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


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
        self.urgent: set[tuple[str, str]] = set()  # spec changes waiting: reconciled first
        self.handled: dict[tuple[str, str], Any] = {}  # the generation last reconciled
        self.tasks: set[asyncio.Task] = set()
        self.slots = Slots(self.settings.max_concurrent_reconciles)
        self.listed: set[tuple[str, str]] = set()  # reconciled once (every kind listed)
        self.awaiting: dict[tuple[str, str], asyncio.Task] = {}  # missing Secrets looked for
        self.clock: Any = None  # a test's clock (() -> datetime); None: the wall clock
        self.identity: str | None = None  # the Lease candidate's, with leader election
        self.analyse = measure.analyse  # looked up here, so a test may stand in for it

    async def login(self, info: Any) -> None:
        """Use new credentials. Kopf calls the login handler again when the API server
        answers 401 to one of Kopf's requests; lmo's client logs in again by itself when
        one of its own is answered 401 (`credentials`)."""
        old, self.kube = self.kube, self.client(info, leading=self.leading)
        if old is not None:
            await old.close()

    def client(self, info: Any, leading: Any = None) -> Kube:
        """lmo's client on `info`, logging in again (`credentials`) when answered 401."""
        return Kube(info, field_manager=self.settings.field_manager, leading=leading,
                    relogin=self.credentials, user_agent=self.user_agent("lmo-operator"))

    def user_agent(self, client: str) -> str:
        """`client`, and with leader election the replica's identity: each replica's
        requests can be told apart in the API server's audit log."""
        return f"{client} ({self.identity})" if self.identity else client

    def kopf_session(self, info: Any) -> Any:
        """Kopf's own HTTP session on `info`, refusing Kopf's writes (its annotations,
        progress records, finalizers) while this replica does not hold the Lease, as `Kube`
        refuses lmo's: a replica that lost the Lease and has not noticed yet writes nothing.
        Kopf retries a refused request as a connection error, then gives up on that write."""
        import aiohttp

        leading = self.leading

        async def gate(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
            if request.method not in ("GET", "HEAD") and not leading():
                raise aiohttp.ClientConnectionError(
                    f"{request.method} {request.url.path}: not the leader (the Lease is not renewed)")
            return await handler(request)

        with warnings.catch_warnings():  # aiohttp >= 3.14 warns about BasicAuth
            warnings.simplefilter("ignore", DeprecationWarning)
            auth = info.as_aiohttp_basic_auth()
        headers = dict(info.as_http_headers())
        headers["User-Agent"] = self.user_agent(f"kopf/{kopf.__version__}")
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
            headers=headers, auth=auth, trust_env=info.trust_env, middlewares=(gate,))
        return kopf.AiohttpSession(aiohttp_session=session, server=info.server,
                                   default_namespace=info.default_namespace)

    def credentials(self) -> Any:
        """The credentials as they are now: the given connection, else the kubeconfig or
        the pod's ServiceAccount token, read again (the kubelet rotates a projected token
        file, hourly by default)."""
        return self.connection or kopf.login_via_client(logger=log, settings=kopf.OperatorSettings())

    async def reconcile(self, namespace: str, name: str, logger: Any = None) -> None:
        """Re-read the LanguageModel and reconcile it, one at a time per object, at most
        `max_concurrent_reconciles` at once; urgent ones (a spec change: someone waits for
        it, `wake(urgent=True)`) before background ones (child events, resyncs)."""
        key = (namespace, name)
        async with self.locks.setdefault(key, asyncio.Lock()), \
                self.slots.taken(key in self.urgent, key):
            self.queued.discard(key)
            hurried = key in self.urgent
            self.urgent.discard(key)
            try:
                await self._reconcile(key, logger)
            except Exception:
                if hurried:  # its retry still goes before the background ones
                    self.urgent.add(key)
                raise

    async def _reconcile(self, key: tuple[str, str], logger: Any) -> None:
        """One pass (under the object's lock and a slot)."""
        namespace, name = key
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
                now=self.clock() if self.clock is not None else None,
            )
        except Exception:
            metrics.RECONCILE_ERRORS.inc()
            metrics.RECONCILE_TOTAL.labels(result="error").inc()
            raise
        metrics.record(result, time.perf_counter() - started, namespace, name)
        self.listed.add(key)
        self.handled[key] = body.get("metadata", {}).get("generation")
        self.await_secrets(key, result.missing_secrets)
        # level-based resync: look again later even when nothing asks for it
        self.wake(namespace, name, min(result.requeue_after or RESYNC_SECONDS, RESYNC_SECONDS))

    def observe(self, namespace: str, name: str, body: Any, event: str | None) -> None:
        """A LanguageModel's watch event (`event` None: listed at start). Reconcile it at
        once and before the others when its spec is newer than its status
        (`metadata.generation` != `status.observedGeneration`, and not already reconciled
        at that generation); in the background when this process has not reconciled it yet;
        otherwise not at all (the echo of lmo's own status write, a label change)."""
        key = (namespace, name)
        if event == "DELETED":
            self.forget(key)
            return
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return  # the garbage collector deletes its children
        generation = meta.get("generation")
        seen = (body.get("status") or {}).get("observedGeneration")
        if generation != seen and self.handled.get(key) != generation:
            self.wake(namespace, name, urgent=True)
        elif key not in self.listed:
            self.wake(namespace, name)

    def wake(self, namespace: str, name: str, delay: float = 0.0, urgent: bool = False) -> None:
        """Reconcile after `delay` s; a wake already due sooner, or queued, covers it.
        `urgent` (a spec change): before background reconciles, also one already queued."""
        key = (namespace, name)
        if urgent:
            self.urgent.add(key)
            self.slots.hurry(key)
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
            # str() of a timeout is empty: name the exception then
            object_logger(*key, base=log).warning("reconcile failed, retrying in %ss: %s",
                                                  RETRY_SECONDS, str(err) or repr(err))
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
        self.handled.pop(key, None)
        self.urgent.discard(key)
        self.locks.pop(key, None)
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
    served): with a thousand resyncs queued, a traffic change still waits for one slot.
    A background waiter given a `key` can be hurried (`hurry(key)`): a resync of an object
    already queued when its spec changes goes first too."""

    def __init__(self, size: int):
        self.free = size
        self.waiting: tuple[collections.OrderedDict, collections.OrderedDict] = (
            collections.OrderedDict(), collections.OrderedDict())  # (urgent, background)
        self.tags: dict[Any, tuple] = {}  # key -> its waiter's tag (one waiter per key)

    @contextlib.asynccontextmanager
    async def taken(self, urgent: bool, key: Any = None) -> AsyncIterator[None]:
        if self.free > 0 and not any(self.waiting):
            self.free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            tag = (key if key is not None else object(), id(turn))
            self.waiting[0 if urgent else 1][tag] = turn
            if key is not None:
                self.tags[key] = tag
            try:
                await turn  # handed over by a release: the slot is ours
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # given to us as we were cancelled: pass it on
                else:
                    for queue in self.waiting:
                        queue.pop(tag, None)
                raise
            finally:
                if key is not None and self.tags.get(key) == tag:
                    del self.tags[key]
        try:
            yield
        finally:
            self._release()

    def hurry(self, key: Any) -> None:
        """Move the background waiter of `key` to the urgent queue's end."""
        urgent, background = self.waiting
        tag = self.tags.get(key)
        if tag is not None and tag in background:
            urgent[tag] = background.pop(tag)

    def _release(self) -> None:
        for queue in self.waiting:
            while queue:
                _, turn = queue.popitem(last=False)
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
        if rt.leading is not None:  # leader election: Kopf's writes gated by the Lease too
            return rt.kopf_session(info)
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await runtime(memo).close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def languagemodel_changed(type: str | None, body: kopf.Body, name: str, namespace: str,
                                memo: kopf.Memo, **_: Any) -> None:
    runtime(memo).observe(namespace, name, body, type)


@kopf.on.event("batch", "v1", "jobs", labels=CHILD_FILTER)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
async def child_changed(labels: dict, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    owner = labels.get(L.MODEL)
    if owner and namespace:
        runtime(memo).wake(namespace, owner)
