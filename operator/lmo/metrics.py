"""The operator's own Prometheus metrics, served on LMO_METRICS_PORT (default 8080).

A private registry (not prometheus-client's global one) so that tests and `lmo up` can
import lmo without exporting anything, and so the exporter shows only lmo's series plus
the process collectors.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from lmo.api import Phase
from lmo.conditions import Reason

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

RECONCILE_TOTAL = Counter(
    "lmo_reconcile_total",
    "Reconciles of LanguageModels by result (ready, progressing, failed, invalid, error).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "lmo_reconcile_errors_total",
    "Reconciles that raised (API server refused a request, unreachable, bug).",
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "lmo_reconcile_duration_seconds",
    "Wall time of one reconcile (observe, apply, status).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
READY = Gauge(
    "lmo_languagemodel_ready",
    "1 when the LanguageModel's Ready condition is True, else 0.",
    ["namespace", "name"],
    registry=REGISTRY,
)
CHILDREN_APPLIED = Counter(
    "lmo_children_applied_total",
    "Children written with server-side apply (skipped no-op applies are not counted), by kind.",
    ["kind"],
    registry=REGISTRY,
)


VERSION_PHASE = Gauge(
    "lmo_version_phase",
    "1 for the phase each version is in (status.versions[].phase), "
    "0 for the others: what the alerts on failed conversions and stuck versions read.",
    ["namespace", "name", "version", "phase"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "lmo_rollbacks_total",
    "Rollouts rolled back (an analysis failed, or the candidate never got ready).",
    ["namespace", "name"],
    registry=REGISTRY,
)
TRAFFIC = Gauge(
    "lmo_version_traffic_percent",
    "Share of requests each version is really routed (status.versions[].traffic).",
    ["namespace", "name", "version"],
    registry=REGISTRY,
)
ROLLOUT_STEP = Gauge(
    "lmo_rollout_step",
    "The running rollout's step, counted from 1 (0: no rollout running).",
    ["namespace", "name"],
    registry=REGISTRY,
)
PHASES = tuple(p.value for p in Phase)
_versions: dict[tuple[str, str], set[str]] = {}


def record(result: Any, seconds: float, namespace: str, name: str) -> None:
    """Account one finished reconcile (`lmo.reconcile.Result`)."""
    RECONCILE_TOTAL.labels(result=result.outcome).inc()
    RECONCILE_DURATION.observe(seconds)
    READY.labels(namespace=namespace, name=name).set(1 if result.ready else 0)
    for kind, n in result.applied.items():
        CHILDREN_APPLIED.labels(kind=kind).inc(n)
    phases = result.phases
    if phases:
        for gone in _versions.get((namespace, name), set()) - set(phases):
            _drop_version(namespace, name, gone)
        _versions[(namespace, name)] = set(phases)
    for version, share in result.traffic.items():
        TRAFFIC.labels(namespace=namespace, name=name, version=version).set(share)
    if phases:
        ROLLOUT_STEP.labels(namespace=namespace, name=name).set(result.rollout_step)
    for version, phase in phases.items():
        for p in PHASES:
            VERSION_PHASE.labels(namespace=namespace, name=name, version=version, phase=p).set(
                1 if p == phase else 0)
    # The series exists at 0 from the first reconcile: a counter that first appears at 1 has
    # no increase() in Prometheus, so the first rollback would never fire LmoRolloutRolledBack
    # (caught on a real Prometheus scraping the real operator).
    rollbacks = ROLLBACKS.labels(namespace=namespace, name=name)
    rolled_back = sum(1 for _, reason, _ in result.events if reason == Reason.ROLLOUT_ROLLED_BACK)
    if rolled_back:
        rollbacks.inc(rolled_back)


def _drop_version(namespace: str, name: str, version: str) -> None:
    try:
        TRAFFIC.remove(namespace, name, version)
    except KeyError:
        pass
    for p in PHASES:
        try:
            VERSION_PHASE.remove(namespace, name, version, p)
        except KeyError:
            pass


def forget(namespace: str, name: str) -> None:
    """Drop the series of a deleted LanguageModel."""
    for gauge in (READY, ROLLOUT_STEP, ROLLBACKS):
        try:
            gauge.remove(namespace, name)
        except KeyError:
            pass
    for version in _versions.pop((namespace, name), set()):
        _drop_version(namespace, name, version)


def serve(port: int, addr: str = "0.0.0.0") -> Any:
    """Start the /metrics HTTP server in a daemon thread; returns the server (port 0: any)."""
    server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return server
