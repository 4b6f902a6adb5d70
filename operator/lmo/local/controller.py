"""The local counterpart of the operator's reconciler for one LanguageModel: `lmo up`'s control loop.

It holds the spec (from the file, or as `lmo set-traffic --local` changed it), the Triton
servers of the versions (`Backend`) and the rollout state, and owns the loop (`start`,
`tick`): each tick polls the servers' readiness, then runs the operator's own stages on what
it sees (`lmo.stages.observe_local` -> `step` -> `plan` -> `status_from`): the same rollout
state machine, the same measurement path and gates (`lmo.decide.measure.assess` on the
servers' /metrics, sampled by `RecentMetrics`), the same status shape with the same
conditions. The front door (`frontdoor.FrontDoor`) is only the
data plane: it routes, proxies and mirrors by the `Router` this controller sets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import aiohttp

from lmo import stages as S
from lmo.api import ExperimentStatus, LanguageModel, LanguageModelSpec, RolloutStatus, Strategy
from lmo.conditions import NORMAL, WARNING, Reason
from lmo.decide.measure import assess, measure_gates, replay_targets
from lmo.decide.outcomes import arms_of, settings_of, with_outcomes
from lmo.decide.prometheus import Prometheus
from lmo.decide.triton import Models, difference, version_metrics
from lmo.local.feedback import Feedback
from lmo.local.recent import RecentMetrics
from lmo.local.routing import Router
from lmo.local.versions import Artifact
from lmo.rollout import decide
from lmo.settings import OperatorSettings
from lmo.weights import MANUAL_NOTE, summary, traffic_change

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
    experiment: ExperimentStatus | None = None  # status.experiment (strategy Experiment)
    feedback: Feedback = field(default_factory=Feedback)  # POST /v1/feedback counts
    # the sampler of the servers' /metrics: the analysis' numbers and each version's last minute
    recent: RecentMetrics = field(default_factory=RecentMetrics)
    _feedback_mark: tuple[str, dict[str, tuple[float, float]]] | None = field(default=None, init=False)
    router: Router = field(init=False)
    _marks: dict[str, Models] = field(default_factory=dict, init=False)
    _mark_key: tuple[Any, ...] | None = field(default=None, init=False)
    _mark_time: datetime | None = field(default=None, init=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False)
    _loop: asyncio.Task | None = field(default=None, init=False)
    _decision: Any = field(default=None, init=False)  # the last rollout Decision

    def __post_init__(self) -> None:
        self.router = Router(weights=self.lm.spec.effective_traffic(), available=set())
        self.feedback.namespace = self.lm.metadata.namespace or "default"
        self.feedback.model = self.lm.metadata.name
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
        spec = self.spec.to_dict()
        change = traffic_change(spec, weights)
        spec["versions"] = change["versions"]
        if "rollout" in change:
            spec["rollout"].update(change["rollout"])
        self.set_spec(LanguageModelSpec.model_validate(spec), now)
        note = f" ({MANUAL_NOTE})" if "rollout" in change else ""
        full = {v["name"]: v["traffic"] for v in change["versions"]}
        self.event(NORMAL, Reason.TRAFFIC_SET, "traffic set to " + summary(full) + note)

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

    # ------------------------------------------------------------------ the loop

    async def start(self, tick_seconds: float = 1.0) -> None:
        """Run `tick` every `tick_seconds` until `stop()` (a failed tick is logged and the
        next one tries again, as the operator's resync does)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        await self.tick()
        self._loop = asyncio.create_task(self._forever(tick_seconds))

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            self._loop = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _forever(self, tick_seconds: float) -> None:
        while True:
            await asyncio.sleep(tick_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; the next tick tries again
                log.exception("control loop tick failed")

    async def tick(self, now: datetime | None = None) -> None:
        """Poll readiness, then decide the weights with the operator's `stages.step`."""
        assert self._session is not None, "start() first"
        for name, b in list(self.backends.items()):
            try:
                async with self._session.get(
                    b.url + "/v2/health/ready", timeout=aiohttp.ClientTimeout(total=2)
                ) as r:
                    await r.read()
                    self.set_ready(name, r.status == 200)
            except (aiohttp.ClientError, asyncio.TimeoutError):
                self.set_ready(name, False)
        now = now or _now()
        await self.step(now, self._measure(now))
        if self.needs_mark():
            self.mark(await self.snapshots(), now)

    async def step(self, now: datetime, measure: S.Measure | None = None) -> Any:
        """The rollout decision (`lmo.stages.step`, Manual: the spec's weights) on what this
        controller observes; routes it and records its Events. Returns the Decision."""
        return self._act(await S.step(self.spec, self.observe(), now, measure))

    def decide(self, now: datetime, analysis: Any = None) -> Any:
        """`step` without I/O, for a spec change between ticks (no analysis is due then)."""
        return self._act(decide(self.spec, self.rollout, S.observations(self.observe()), now, analysis,
                                experiment=self.experiment))

    def _act(self, decision: Any) -> Any:
        """Record the decision's Events and rollout state, and route its weights."""
        for type_, reason, message in decision.events:
            self.event(type_, reason, message)
        self.rollout = decision.rollout
        self.experiment = decision.experiment
        if self.experiment is not None and (self._feedback_mark is None
                                            or self._feedback_mark[0] != self.experiment.spec_hash):
            # an experiment counts the feedback from its start on
            self._feedback_mark = (self.experiment.spec_hash or "", self.feedback.counts())
        if self.rollout is not None and self.rollout.last_analysis is not None:
            self.last_analysis = self.rollout.last_analysis
        self._route(decision.traffic)
        self._decision = decision
        return decision

    def observe(self) -> S.Observed:
        """What the servers show, as the operator's stages read a cluster."""
        old = {"rollout": self.rollout.to_dict()} if self.rollout is not None else {}
        if self.experiment is not None:
            old["experiment"] = self.experiment.to_dict()
        return S.observe_local(self.spec, {
            n: (f"file://{b.artifact.directory}", b.artifact.spec_key,
                b.artifact.manifest.summary(f"file://{b.artifact.directory}"), b.ready)
            for n, b in self.backends.items()
        }, self.converting, old)

    def _measure(self, now: datetime) -> S.Measure:
        async def measure(ro: RolloutStatus) -> Any:
            if self._mark_key != _step_key(ro):  # the window of this step starts now
                self.mark(await self.snapshots(), now)
            return await self.analyse(ro, now)

        return measure

    async def snapshots(self) -> dict[str, Models]:
        """Each server's counters per model, now (`RecentMetrics.sample`, which also keeps
        them for the last-minute line)."""
        return await self.recent.sample({n: b.metrics_url for n, b in self.backends.items()},
                                        self._session)

    async def analyse(self, ro: RolloutStatus, now: datetime) -> Any:
        """Judge the candidate's current step from the Triton counters of both versions since
        the step started: the cluster's path (`lmo.decide.measure.assess`) on another source."""
        assert self.spec.rollout is not None
        analysis = self.spec.rollout.analysis
        candidate, stable = ro.candidate or "", ro.stable or ""
        snaps = await self.snapshots()
        numbers = {n: self.since_mark(n, snaps.get(n, {})) for n in (candidate, stable)}
        replay = None
        if analysis.max_output_drift is not None:
            if candidate in self.backends and stable in self.backends:
                manifest = self.backends[candidate].artifact.manifest
                replay = replay_targets(self.spec, candidate, {
                    "key": manifest.key, "entryModel": manifest.entry_model,
                    "goldenInputs": list(manifest.golden.inputs) if manifest.golden else [],
                }, self.backends[candidate].url, self.backends[stable].url)
            else:
                replay = f"golden replay failed: {candidate} or {stable} is not running"
        window = self.window_seconds(now)

        def gates() -> list:  # custom gates: the cluster's queries on the spec's Prometheus
            return measure_gates(
                Prometheus(analysis.prometheus_url or ""), analysis.metrics,
                self.lm.metadata.namespace or "default", self.lm.metadata.name, candidate,
                stable, window)

        result = await asyncio.to_thread(
            assess, analysis, lambda v: version_metrics(numbers[v]), candidate, stable, window,
            replay, gates)
        if self.spec.rollout.strategy == Strategy.EXPERIMENT.value:
            result = await self.with_outcomes(result, now)
        return result

    async def with_outcomes(self, result: Any, now: datetime) -> Any:
        """The analysis with the experiment's counts since it started: the front door's
        feedback, or the spec's successQuery/totalQuery on Prometheus (as on the cluster)."""
        outcome = settings_of(self.spec).outcome
        if outcome.uses_feedback:
            mark = self._feedback_mark[1] if self._feedback_mark else {}
            now_counts = self.feedback.counts()
            counts = {}
            for v in arms_of(self.spec):
                (n, s), (n0, s0) = now_counts.get(v, (0.0, 0.0)), mark.get(v, (0.0, 0.0))
                counts[v] = (n - n0, s - s0)
            return dataclasses.replace(result, outcomes=counts)
        return await asyncio.to_thread(
            with_outcomes, result, self.spec, self.lm.metadata.namespace or "default",
            self.lm.metadata.name, self.experiment.started_at if self.experiment else None, now)

    # ------------------------------------------------------------------ servers

    def add_backends(self, new: dict[str, Backend]) -> None:
        """Servers started (or restarted) for these versions; ready once started."""
        self.backends.update(new)
        for name in new:
            self.set_ready(name, True)

    def remove_backends(self, names: list[str]) -> None:
        """Versions no longer in the spec: never routed to again."""
        for name in names:
            self.backends.pop(name, None)
        self.router.available -= set(names)

    def step_key(self) -> tuple[Any, ...] | None:
        return _step_key(self.rollout)

    def mark(self, snapshots: dict[str, Models], now: datetime) -> None:
        """Counters at the start of a rollout step (analysis uses the difference)."""
        self._marks = dict(snapshots)
        self._mark_key = self.step_key()
        self._mark_time = now

    def needs_mark(self) -> bool:
        return self.rollout is not None and self._mark_key != self.step_key()

    def since_mark(self, name: str, models: Models) -> Models:
        return difference(models, self._marks.get(name, {}))

    def window_seconds(self, now: datetime) -> float:
        return (now - self._mark_time).total_seconds() if self._mark_time else 0.0

    def _route(self, weights: dict[str, int]) -> None:
        if weights != self.router.weights:
            self.router.set_weights(weights)

    def _apply_routing(self, spec: LanguageModelSpec) -> None:
        r = spec.routing
        self.router.header = r.ab_test.header.lower() if r.ab_test else None
        self.router.sticky = r.sticky.header.lower() if r.sticky else None
        self.feedback.versions = [v.name for v in spec.versions]
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
        """The cluster's status shape (`lmo.stages.status_from`: conditions, versions, traffic,
        rollout) plus `name`, `task` and a `local` block for lmo status."""
        observed = self.observe()
        decision = self._decision
        if decision is None:  # no tick yet: what the first would decide, without acting on it
            decision = decide(self.spec, self.rollout, S.observations(observed), _now())
        _, routed = S.plan(self.lm, observed, decision)
        out = S.status_from(self.lm, OperatorSettings(), observed, routed, decision, [], None, _now())
        out["endpoint"] = self.endpoint
        out = {"name": self.lm.metadata.name, "task": self.spec.task, **out}
        out["local"] = {
            "backends": {
                n: {"url": b.url, "grpcUrl": b.grpc_url, "metricsUrl": b.metrics_url,
                    "answered": b.answered, "mirrored": b.mirrored, "errors": b.errors}
                for n, b in self.backends.items()
            },
            "abTestHeader": self.router.header,
            "mirror": {"version": self.router.mirror_version, "percent": self.router.mirror_percent}
            if self.router.mirror_version else None,
            "events": [e.to_dict() for e in self.events[-10:]],
            # spec.rollout, for the "step N/M" of `lmo status --local`
            "rollout": self.spec.rollout.to_dict() if self.spec.rollout else None,
        }
        if self.last_analysis is not None:
            out.setdefault("rollout", {})["lastAnalysis"] = self.last_analysis
        out["local"]["lastMinute"] = self.recent.report(list(self.backends))
        return out


def _step_key(r: RolloutStatus | None) -> tuple[Any, ...] | None:
    if r is None:
        return None
    return (r.candidate, r.stable, r.step, r.step_started_at)
