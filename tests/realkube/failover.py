"""Helpers for the failover and fault tests on the real API server: who leads, a status
watcher that records every change of one LanguageModel, and the audit's write counts."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import requests

from tests.fixtures.real_cluster import LM_API, OPERATOR_NS, RELEASE, RealCluster

LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/{RELEASE}"

VERSION_ORDER = ["Pending", "Converting", "Converted", "Deploying", "Ready"]
ROLLOUT_ORDER = ["Idle", "Waiting", "Progressing", "Succeeded"]


def slow_canary(prom, step: str) -> dict:
    """test_rollout_life's canary (50 % then 100 %, good numbers promote), `step` a hold."""
    from tests.realkube.test_rollout_life import canary

    body = canary(prom)
    body["rollout"]["stepDuration"] = step
    return body


def holder(real: RealCluster) -> str:
    lease = real.request("GET", LEASE) or {}
    return (lease.get("spec") or {}).get("holderIdentity") or ""


def leader(real: RealCluster):
    """The operator process holding the Lease (each logs its identity when it starts)."""
    who = holder(real)
    if not who:
        return None
    for proc in real.operators:
        if proc.poll() is None and f"as {who}" in real.operator_log(proc):
            return proc
    return None


def takeover(real: RealCluster, killed_at: float, before: str, timeout: float = 60.0) -> float:
    """Seconds from `killed_at` (time.monotonic) until another replica holds the Lease."""
    real.wait(lambda: holder(real) not in ("", before) or None, timeout, "a standby takes the Lease")
    return time.monotonic() - killed_at


def first_reconcile(real: RealCluster, ns: str, since: float, timeout: float = 60.0) -> float:
    """Seconds from `since` (time.time) until the operator next read `ns`'s children (a
    reconcile lists them: the new leader at work), from the audit log."""
    from tests.fixtures.real_cluster import epoch_seconds

    def listed() -> float | None:
        for ev in real.audit(since):
            if ev.get("verb") == "list" and (ev.get("objectRef") or {}).get("namespace") == ns:
                return epoch_seconds(ev["stageTimestamp"])
        return None

    return real.wait(listed, timeout, f"a reconcile in {ns}") - since


def child_write_counts(real: RealCluster, ns: str, since: float = 0.0) -> Counter[str]:
    """How often the operator wrote each child (not the LanguageModel, not Events)."""
    return Counter(w for w in real.writes(ns, since)
                   if "languagemodels" not in w and " events/" not in w)


class StatusWatch:
    """Watches one LanguageModel (a real watch, resumed from the last resourceVersion and
    re-listed on 410 Gone) and keeps every status it was seen with, in order."""

    def __init__(self, real: RealCluster, ns: str, name: str):
        self.url = real.cp.url + f"{LM_API}/namespaces/{ns}/languagemodels"
        self.name = name
        self.session = real.cp.session()  # its own: a Session is not shared across threads
        self.seen: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{name}")

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        rv = None
        while not self._stop.is_set():
            params = {"watch": "1", "fieldSelector": f"metadata.name={self.name}",
                      "timeoutSeconds": "5"}
            if rv:
                params["resourceVersion"] = rv
            try:
                with self.session.get(self.url, params=params, stream=True, timeout=(3, 10)) as r:
                    for line in r.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event.get("object")
                        if obj is None:  # an error Status instead of a stream (server away)
                            break
                        if event["type"] == "ERROR":
                            rv = None  # 410 Gone: start again from the current state
                            break
                        rv = obj["metadata"]["resourceVersion"]
                        if event["type"] in ("ADDED", "MODIFIED"):
                            self.seen.append(obj.get("status") or {})
                        if self._stop.is_set():
                            return
            except (requests.RequestException, ValueError):
                time.sleep(0.2)

    def backwards(self) -> list[str]:
        """Every step back seen: observedGeneration, a version's phase, the rollout's phase
        or step (within one rollout: the same candidate)."""
        out = []
        prev: dict = {}
        for st in self.seen:
            if st.get("observedGeneration", 0) < prev.get("observedGeneration", 0):
                out.append(f"observedGeneration {prev['observedGeneration']} -> {st['observedGeneration']}")
            before = {v["name"]: v.get("phase") for v in prev.get("versions") or []}
            for v in st.get("versions") or []:
                a, b = before.get(v["name"]), v.get("phase")
                if a in VERSION_ORDER and b in VERSION_ORDER and VERSION_ORDER.index(b) < VERSION_ORDER.index(a):
                    out.append(f"version {v['name']}: {a} -> {b}")
            ra, rb = prev.get("rollout") or {}, st.get("rollout") or {}
            if ra.get("candidate") == rb.get("candidate"):
                pa, pb = ra.get("phase"), rb.get("phase")
                if pa in ROLLOUT_ORDER and pb in ROLLOUT_ORDER and ROLLOUT_ORDER.index(pb) < ROLLOUT_ORDER.index(pa):
                    out.append(f"rollout phase {pa} -> {pb}")
                if (rb.get("step") or 0) < (ra.get("step") or 0) and pb == pa == "Progressing":
                    out.append(f"rollout step {ra.get('step')} -> {rb.get('step')}")
            prev = st
        return out
