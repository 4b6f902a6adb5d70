"""The one door to the Kubernetes API server: every read and write lmo's operator makes.

Client choice: plain `aiohttp` with the credentials Kopf's login handlers resolve
(`kopf.ConnectionInfo`: kubeconfig, in-cluster service account, or an explicit server).
It is async, so one operator process reconciles hundreds of LanguageModels concurrently on
Kopf's event loop without a thread per request (the official `kubernetes` client is
synchronous), and it is the HTTP stack Kopf already uses, so no second client library or
second credential parser is involved. Server-side apply needs nothing but a PATCH with the
`application/apply-patch+yaml` content type (JSON is YAML), `fieldManager` and `force`.

No write when nothing changed: `apply` compares the desired manifest with the observed
object (every desired field must be present with the same value, `is_subset`) and skips
the PATCH when it holds; `patch_status` skips when the status is equal. A reconcile that
finds the world as it wants it therefore makes no request that changes anything.

`writes` counts the requests that changed (or tried to change) something, per kind, so the
caller can export them as metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import aiohttp

from lmo.conditions import rfc3339
from lmo.diff import first_difference, is_subset, merge_diff

log = logging.getLogger(__name__)

__all__ = ["Kube", "KubeError", "Ref", "is_subset", "merge_diff"]

APPLY_PATCH = "application/apply-patch+yaml"
# on lmo's Events: the decision an Event announces (`Kube.post_event`)
DECIDED_FROM = "lmo.dev/decided-from"
MERGE_PATCH = "application/merge-patch+json"

# (apiVersion, kind) -> plural for the kinds lmo reads or writes besides the builders' children.
CORE_KINDS: dict[tuple[str, str], str] = {
    ("v1", "Pod"): "pods",
    ("v1", "Secret"): "secrets",
    ("v1", "Event"): "events",
    ("v1", "Service"): "services",
    ("batch/v1", "Job"): "jobs",
    ("apps/v1", "Deployment"): "deployments",
}


class KubeError(Exception):
    """A request the API server refused; `status` is the HTTP status."""

    def __init__(self, status: int, method: str, path: str, message: str):
        self.status = status
        self.server_message = message  # what the API server said (names the field)
        super().__init__(f"{method} {path}: HTTP {status}: {message}")


def api_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """`/api/v1/namespaces/ns/pods/name` or `/apis/group/version/...`."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    return base


def list_items(listed: dict | None) -> list[dict]:
    """The items of a List response, each with its `apiVersion` and `kind`.

    A real API server puts them on the List only (`DeploymentList`, `apps/v1`) for built-in
    kinds, and on every item for custom resources; watch events carry them on each object.
    Items are stamped from the List so a listed object compares with a rendered manifest
    (and names its own kind) whatever served it.
    """
    listed = listed or {}
    api_version = listed.get("apiVersion")
    kind = listed.get("kind") or ""
    kind = kind[: -len("List")] if kind.endswith("List") else None
    out = []
    for item in listed.get("items") or []:
        if "apiVersion" not in item and api_version:
            item = {"apiVersion": api_version, **item}
        if "kind" not in item and kind:
            item = {"kind": kind, **item}
        out.append(item)
    return out


def label_selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _matches(obj: dict, labels: dict[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


@dataclass(frozen=True)
class Ref:
    """Identity of an object (what an Event is about)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class Kube:
    """An async client for one API server, with the reads and writes the reconciler needs.

    `info` is a `kopf.ConnectionInfo` (or anything with its attributes: server, token,
    scheme, username/password, CA and client certificate, insecure). Use `async with` or
    call `close()`.
    """

    def __init__(self, info: Any, field_manager: str = "lmo", timeout: float = 30.0,
                 leading: Callable[[], bool] | None = None,
                 relogin: Callable[[], Any] | None = None, user_agent: str = "lmo-operator"):
        self.info = info
        self.user_agent = user_agent  # with leader election it names the replica
        self.leading = leading  # with leader election: False while writes are not safe
        # `relogin()` gives the credentials as they are now (kubeconfig, token file read
        # again): a request answered 401 is sent once more with them. The kubelet rotates a
        # pod's projected ServiceAccount token (hourly by default), and the API server stops
        # accepting the old one once it expires or its bound object is gone.
        self.relogin = relogin
        self._renewing = asyncio.Lock()
        self.server = str(info.server).rstrip("/")
        self.field_manager = field_manager
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.writes: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": self.user_agent}
            headers.update(self.info.as_http_headers() if hasattr(self.info, "as_http_headers") else {})
            ssl: Any = None
            if hasattr(self.info, "as_ssl_context") and self.server.startswith("https"):
                ssl = self.info.as_ssl_context()
            # at most this many requests in flight: more only meets the API server's
            # max-requests-inflight (429) and delays everyone's, the Lease renewal's too
            connector = aiohttp.TCPConnector(ssl=ssl, limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=headers, timeout=self.timeout
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        kind: str | None = None,
    ) -> dict | None:
        """One API request; None for 404 on reads, KubeError for any other refusal.
        Answered 401, it is sent once more after `relogin` (when given)."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if body is not None else {}
        if method != "GET":
            if self.leading is not None and not self.leading():
                # another replica may be leading by now (lmo.leader): write nothing
                raise KubeError(503, method, path, "not the leader: the Lease is not renewed")
            self.writes[kind or "unknown"] += 1
        for attempt in (1, 2):
            session = self._get_session()
            async with session.request(
                method, self.server + path, params=params, data=data, headers=headers
            ) as resp:
                text = await resp.text()
                status = resp.status
            if status == 401 and attempt == 1 and self.relogin is not None:
                await self._renew(session)
                continue
            break
        if status == 404 and method in ("GET", "DELETE"):
            return None
        if status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except (ValueError, AttributeError):
                message = text
            raise KubeError(status, method, path, str(message)[:500])
        return json.loads(text) if text else {}

    async def _renew(self, refused: aiohttp.ClientSession) -> None:
        """New credentials from `relogin`, and a new session with them (once for a burst of
        401s: requests refused on the old session wait for the first renewal)."""
        async with self._renewing:
            if self._session is not refused:
                return  # renewed meanwhile
            info = self.relogin()
            if asyncio.iscoroutine(info):
                info = await info
            log.info("the API server refused lmo's credentials (401): logged in again")
            self.info = info
            self.server = str(info.server).rstrip("/")
            self._session = None
            await refused.close()

    # ------------------------------------------------------------------ reads

    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> dict | None:
        return await self.request("GET", api_path(api_version, plural, namespace, name))

    async def list_objects(
        self, api_version: str, plural: str, namespace: str | None, labels: dict[str, str],
        cached: bool = False,
    ) -> list[dict]:
        """Objects carrying all `labels` (a label selector; also checked here, so a server
        or emulator that ignores selectors cannot hand back a stranger's object).

        `cached`: served from the API server's watch cache (`resourceVersion=0`, what
        client-go informers list with), possibly a moment old, instead of a consistent read.
        Where etcd cannot confirm the cache is current (before 3.5.13 / 3.4.31: no
        RequestWatchProgress) a consistent list is a read of every object of the kind in
        the namespace from etcd, filtered afterwards: measured with 400 pods in one
        namespace, 18 s at the median on a loaded API server."""
        params = {"labelSelector": label_selector(labels)}
        if cached:
            params["resourceVersion"] = "0"
        out = await self.request("GET", api_path(api_version, plural, namespace), params=params)
        return [i for i in list_items(out) if _matches(i, labels)]

    async def list_children(
        self, kinds: list[tuple[str, str, str]], namespace: str, labels: dict[str, str]
    ) -> dict[tuple[str, str], dict]:
        """Every object of `kinds` with `labels`, keyed by (kind, name).

        A kind the server does not serve (no Gateway API or KEDA CRDs installed) lists as
        empty: lmo only creates those when a resource asks for them, and then the apply
        reports the missing CRD.
        """

        async def one(api_version: str, kind: str, plural: str) -> list[tuple[str, dict]]:
            try:
                items = await self.list_objects(api_version, plural, namespace, labels)
            except KubeError as err:
                if err.status in (404, 405):
                    return []
                raise
            return [(kind, i) for i in items]

        found = await asyncio.gather(*(one(*k) for k in kinds))
        return {
            (kind, obj["metadata"]["name"]): obj for group in found for kind, obj in group
        }

    async def secret_exists(self, namespace: str, name: str) -> bool:
        """Whether Secret `name` exists (its data is never read or logged)."""
        return await self.get("v1", "secrets", namespace, name) is not None

    async def termination_messages(self, namespace: str, job_name: str) -> list[str]:
        """Termination messages of the containers of Job `job_name`'s pods, newest pod first.

        The converter writes its Manifest JSON to /dev/termination-log; the Job controller
        labels its pods `job-name=<job>` (also `batch.kubernetes.io/job-name` since 1.27).
        Read from the watch cache first (a finished container's message never changes);
        only when it holds none yet (the cache a moment behind the Job controller, or a
        container that left none) is the read repeated consistently.
        """
        for cached in (True, False):
            pods = await self.list_objects("v1", "pods", namespace, {"job-name": job_name},
                                           cached=cached)
            pods.sort(key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "",
                      reverse=True)
            out = []
            for pod in pods:
                for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                    msg = ((cs.get("state") or {}).get("terminated") or {}).get("message")
                    if msg:
                        out.append(msg)
            if out:
                break
        return out

    # ------------------------------------------------------------------ writes

    async def apply(self, desired: dict, observed: dict | None = None, *, force: bool = True) -> bool:
        """Server-side apply `desired` under the field manager; False when skipped.

        Skipped when `observed` already holds every desired field (`is_subset`): a
        reconcile with nothing to change writes nothing.
        """
        if observed is not None and is_subset(desired, observed):
            return False
        meta = desired["metadata"]
        if observed is not None:
            log.debug("apply %s %s: %s differs", desired["kind"], meta["name"],
                      first_difference(desired, observed))
        kind = desired["kind"]
        plural = self.plural(desired["apiVersion"], kind)
        await self.request(
            "PATCH",
            api_path(desired["apiVersion"], plural, meta.get("namespace"), meta["name"]),
            params={"fieldManager": self.field_manager, "force": "true" if force else "false"},
            body=desired,
            content_type=APPLY_PATCH,
            kind=kind,
        )
        return True

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation (the Job's pods go with it); False if gone."""
        out = await self.request(
            "DELETE",
            api_path(api_version, self.plural(api_version, kind), namespace, name),
            params={"propagationPolicy": "Background"},
            kind=kind,
        )
        return out is not None

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str,
        status: dict, observed: dict | None,
    ) -> bool:
        """Merge-patch the status subresource to `status`; False when it is already equal.

        The patch is the RFC 7386 difference (`merge_diff`): only what changed, with null for
        every key that disappeared at any depth, so no stale field survives.
        """
        observed = observed or {}
        if status == observed:
            return False
        await self.request(
            "PATCH",
            api_path(api_version, plural, namespace, name) + "/status",
            body={"status": merge_diff(observed, status)},
            content_type=MERGE_PATCH,
            kind="status",
        )
        return True

    async def post_event(
        self, ref: Ref, type_: str, reason: str, message: str, now: datetime,
        component: str = "lmo-operator", decided_from: str | None = None,
    ) -> None:
        """Post a core/v1 Event about `ref`, named deterministically.

        The name is `<object>.<hash of uid, reason, message>`, so repeating the same Event
        bumps its count instead of piling up copies (and needs no `generateName`).
        `decided_from` marks the decision it announces (annotation DECIDED_FROM): an Event
        already carrying that mark was posted by an earlier try of the same decision (its
        status write failed, or an answer was lost) and is left as it is, not counted twice.
        """
        digest = hashlib.sha256(f"{ref.uid}/{reason}/{message}".encode()).hexdigest()[:16]
        name = f"{ref.name}.{digest}"
        ts = rfc3339(now)
        for _ in range(2):
            existing = await self.get("v1", "events", ref.namespace, name)
            if existing is not None:
                marks = (existing.get("metadata") or {}).get("annotations") or {}
                if decided_from is not None and marks.get(DECIDED_FROM) == decided_from:
                    return
                patch: dict[str, Any] = {"count": int(existing.get("count") or 1) + 1,
                                         "lastTimestamp": ts}
                if decided_from is not None:
                    patch["metadata"] = {"annotations": {DECIDED_FROM: decided_from}}
                await self.request(
                    "PATCH",
                    api_path("v1", "events", ref.namespace, name),
                    body=patch,
                    content_type=MERGE_PATCH,
                    kind="Event",
                )
                return
            try:
                await self._create_event(ref, name, type_, reason, message, ts, component,
                                         decided_from)
                return
            except KubeError as err:
                if err.status != 409:  # 409: created meanwhile; look at it again
                    raise

    async def _create_event(self, ref: Ref, name: str, type_: str, reason: str, message: str,
                            ts: str, component: str, decided_from: str | None) -> None:
        meta: dict[str, Any] = {"name": name, "namespace": ref.namespace}
        if decided_from is not None:
            meta["annotations"] = {DECIDED_FROM: decided_from}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": meta,
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        await self.request(
            "POST", api_path("v1", "events", ref.namespace), body=event, kind="Event"
        )

    # ------------------------------------------------------------------ helpers

    _plurals: dict[tuple[str, str], str] = dict(CORE_KINDS)

    @classmethod
    def register_kinds(cls, kinds: list[tuple[str, str, str]]) -> None:
        """Teach the client the plurals of (apiVersion, kind, plural) triples."""
        for api_version, kind, plural in kinds:
            cls._plurals[(api_version, kind)] = plural

    def plural(self, api_version: str, kind: str) -> str:
        try:
            return self._plurals[(api_version, kind)]
        except KeyError:
            raise KeyError(
                f"lmo.kube does not know the plural of {api_version} {kind}; "
                "add it with Kube.register_kinds()"
            ) from None
