"""The local counterpart of the operator's reconciler for one LanguageModel.

It holds the spec (from the file, or as `lmo set-traffic --local` changed it), which
versions are ready, and the rollout state; it decides the routed weights with the same
pure state machine the operator uses (`lmo.rollout.decide`) and feeds them to the
`Router`. Analysis reads the candidate's Triton /metrics directly (see `tritonmetrics`).
Status is kept in the `LanguageModelStatus` shape, so `lmo status` renders a local run and
a cluster resource with the same code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lmo.api import LanguageModel, LanguageModelSpec, RolloutStatus
from lmo.conditions import NORMAL, WARNING, Reason
from lmo.local.routing import Router, check_weights
from lmo.local.tritonmetrics import Snapshot
from lmo.local.versions import Artifact

log = logging.getLogger("lmo.up")


@dataclass
class Backend:
    """One version's Triton server as the front door sees it."""

    name: str
    url: str  # http://127.0.0.1:PORT
    grpc_url: str
    metrics_url: str
    artifact: Artifact
    ready: bool = False
    answered: int = 0
    mirrored: int = 0
    errors: int = 0


@dataclass
class Event:
    type: str
    reason: str
    message: str
    time: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "reason": self.reason, "message": self.message, "time": self.time}


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Controller:
    lm: LanguageModel
    backends: dict[str, Backend]
    endpoint: str = ""
    rollout: RolloutStatus | None = None
    last_analysis: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    converting: set[str] = field(default_factory=set)  # versions being converted now
    router: Router = field(init=False)
    _marks: dict[str, Snapshot] = field(default_factory=dict, init=False)
    _mark_key: tuple[Any, ...] | None = field(default=None, init=False)
    _mark_time: datetime | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.router = Router(weights=self.lm.spec.effective_traffic(), available=set())
        self._apply_routing(self.lm.spec)

    # ------------------------------------------------------------------ inputs

    @property
    def spec(self) -> LanguageModelSpec:
        return self.lm.spec

    def set_spec(self, spec: LanguageModelSpec, now: datetime | None = None) -> None:
        """A new spec (the file changed, or set-traffic): routing follows it at once."""
        self.lm = self.lm.model_copy(update={"spec": spec})
        self._apply_routing(spec)
        self.decide(now or _now())

    def set_traffic(self, weights: dict[str, int], now: datetime | None = None) -> None:
        """What `lmo set-traffic` does on the cluster: rewrite spec.versions[].traffic.

        An automated rollout would override the weights, so it is switched to Manual.
        """
        names = [v.name for v in self.spec.versions]
        check_weights({k: int(v) for k, v in weights.items()}, names)
        full = {n: int(weights.get(n, 0)) for n in names}
        versions = [v.model_copy(update={"traffic": full[v.name]}) for v in self.spec.versions]
        update: dict[str, Any] = {"versions": versions}
        note = ""
        if self.spec.rollout is not None and self.spec.rollout.strategy != "Manual":
            update["rollout"] = self.spec.rollout.model_copy(update={"strategy": "Manual"})
            note = " (rollout strategy set to Manual)"
        self.set_spec(self.spec.model_copy(update=update), now)
        self.event(NORMAL, Reason.TRAFFIC_SET, "traffic set to " + _summary(full) + note)

    def set_ready(self, name: str, ready: bool) -> None:
        b = self.backends.get(name)
        if b is None or b.ready == ready:
            return
        b.ready = ready
        self.router.available = {n for n, x in self.backends.items() if x.ready}
        self.event(
            NORMAL if ready else WARNING,
            Reason.VERSION_READY if ready else Reason.VERSION_NOT_READY,
            f"version {name} is {'ready' if ready else 'not ready'} at {b.url}",
        )

    def event(self, type_: str, reason: str, message: str) -> None:
        log.info("%s %s: %s", type_, reason, message)
        self.events.append(Event(type_, reason, message, _now().isoformat(timespec="seconds")))
        del self.events[:-50]

    # ------------------------------------------------------------------ decisions

    def decide(self, now: datetime, analysis: Any = None) -> Any:
        """Route per the spec (Manual) or per `lmo.rollout.decide`; returns its Decision."""
        spec = self.spec
        if spec.rollout is None or spec.rollout.strategy == "Manual":
            self.rollout = None
            self._route(spec.effective_traffic())
            return None
        from lmo.rollout import VersionObservation, decide

        observations = [
            VersionObservation(
                name=v.name,
                ready=bool(self.backends.get(v.name) and self.backends[v.name].ready),
                artifact_key=self.backends[v.name].artifact.spec_key
                if v.name in self.backends
                else None,
            )
            for v in spec.versions
        ]
        decision = decide(spec, self.rollout, observations, now, analysis)
        for type_, reason, message in decision.events:
            self.event(type_, reason, message)
        self.rollout = decision.rollout
        if self.rollout is not None and self.rollout.last_analysis is not None:
            self.last_analysis = self.rollout.last_analysis
        self._route(decision.traffic)
        return decision

    def step_key(self) -> tuple[Any, ...] | None:
        r = self.rollout
        if r is None:
            return None
        return (r.candidate, r.stable, r.step, r.step_started_at)

    def mark(self, snapshots: dict[str, Snapshot], now: datetime) -> None:
        """Counters at the start of a rollout step (analysis uses the difference)."""
        self._marks = dict(snapshots)
        self._mark_key = self.step_key()
        self._mark_time = now

    def needs_mark(self) -> bool:
        return self.rollout is not None and self._mark_key != self.step_key()

    def since_mark(self, name: str, snapshot: Snapshot) -> Snapshot:
        return snapshot - self._marks.get(name, Snapshot())

    def window_seconds(self, now: datetime) -> float:
        return (now - self._mark_time).total_seconds() if self._mark_time else 0.0

    def _route(self, weights: dict[str, int]) -> None:
        if weights != self.router.weights:
            self.router.set_weights(weights)

    def _apply_routing(self, spec: LanguageModelSpec) -> None:
        r = spec.routing
        self.router.header = r.ab_test.header.lower() if r.ab_test else None
        if r.mirror:
            if (self.router.mirror_version, self.router.mirror_percent) != (
                r.mirror.version,
                r.mirror.percent,
            ):
                self.router.set_mirror(r.mirror.version, r.mirror.percent)
        else:
            self.router.set_mirror(None)

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """`LanguageModelStatus` shape (camelCase) plus a `local` block for lmo status."""
        routed = self.router.weights
        versions = []
        for v in self.spec.versions:
            b = self.backends.get(v.name)
            if b is None or v.name in self.converting:
                converting = v.name in self.converting
                versions.append({
                    "name": v.name, "phase": "Converting" if converting else "Pending",
                    "traffic": routed.get(v.name, 0), "replicas": 0, "readyReplicas": 0,
                    "message": "converting the new checkpoint" if converting else "not started",
                })
                continue
            versions.append(
                {
                    "name": v.name,
                    "phase": "Ready" if b.ready else "Deploying",
                    "artifact": b.artifact.manifest.summary(f"file://{b.artifact.directory}"),
                    "traffic": routed.get(v.name, 0),
                    "replicas": 1,
                    "readyReplicas": 1 if b.ready else 0,
                    "message": "" if b.ready else "Triton server not ready",
                }
            )
        ready = sum(1 for v in versions if v["phase"] == "Ready")
        out: dict[str, Any] = {
            "name": self.lm.metadata.name,
            "task": self.spec.task,
            "endpoint": self.endpoint,
            "versions": versions,
            "trafficSummary": _summary(routed),
            "readyVersions": f"{ready}/{len(versions)}",
            "local": {
                "backends": {
                    n: {"url": b.url, "grpcUrl": b.grpc_url, "metricsUrl": b.metrics_url,
                        "answered": b.answered, "mirrored": b.mirrored, "errors": b.errors}
                    for n, b in self.backends.items()
                },
                "abTestHeader": self.router.header,
                "mirror": {"version": self.router.mirror_version,
                           "percent": self.router.mirror_percent}
                if self.router.mirror_version else None,
                "events": [e.to_dict() for e in self.events[-10:]],
                # spec.rollout, for the "step N/M" of `lmo status --local`
                "rollout": self.spec.rollout.to_dict() if self.spec.rollout else None,
            },
        }
        if self.rollout is not None:
            out["rollout"] = self.rollout.to_dict()
        if self.last_analysis is not None:
            out.setdefault("rollout", {})["lastAnalysis"] = self.last_analysis
        return out


def _summary(weights: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in weights.items())
