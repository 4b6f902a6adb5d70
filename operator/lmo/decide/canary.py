"""The Canary / BlueGreen state machine: which weights to route now, and what to do next.

`decide()` is pure: it reads the spec, the last `status.rollout`, what is observed of each
version (ready? which artifact?) and the clock passed in, and returns a `Decision`. All the
state of a rollout lives in `status.rollout`, so an operator that restarts mid-rollout
resumes at the same step and never repeats an analysis or an Event.

Strategies (spec.rollout.strategy):

* Manual (or no spec.rollout): the versions' `traffic` fields are routed exactly.
* Canary: the *stable* version is the one serving before (status.rollout.stable; at first
  the version with the most spec traffic). The *candidate* is the last version listed after
  the stable in spec.versions whose artifact differs from the stable's. Until the candidate's
  pods are Ready *and* serve the artifact its spec asks for (a changed version keeps serving
  its previous artifact while the new one converts) the stable keeps 100%. Then each step routes
  `steps[i]`% to the candidate and the rest to the stable, holds `stepDuration`, and asks the
  caller to analyse (`Decision.analyse`). pass -> next step (after the last step the
  candidate becomes the stable at 100%, Succeeded); fail -> RolledBack: all traffic to the
  stable at once, a Warning Event with the measured numbers and thresholds, and no retry
  until the candidate's spec or the rollout settings change (their hash is kept in
  status.rollout.specHash); inconclusive (too few requests) -> the step holds for another
  window, and after `analysis.inconclusiveLimit` consecutive holds it rolls back (a
  candidate nobody can judge is not promoted). `paused` holds the current weights. Long
  holds also get early checks (`early_check_interval`): a `fail` seen mid-hold rolls back
  at once; anything else waits for the hold's end.
  Versions other than the stable and the candidate get 0%. A stable removed from
  spec.versions mid-rollout is replaced by the version with the most spec traffic, with a
  Warning Event (`StableRemoved`): no check can run without a stable to compare with, so it
  takes all traffic once it serves its artifact with ready pods, and nothing is routed
  until then (never 100% to pods that cannot answer).
* BlueGreen: the candidate runs at full size (its autoscaler's lower bound is the stable's
  current replica count, within the spec's range) with 0% of the traffic while it is checked for
  one `stepDuration` (golden replay and a metric window on mirrored traffic, if
  spec.routing.mirror sends it some); pass -> 100% at once. The previous version keeps its
  pods for `scaleDownDelay` (instant rollback by editing the spec), then its bounds drop to
  (0, 0) (KEDA, or no autoscaler: no pods) or (minReplicas, minReplicas) (HPA).

During Canary and BlueGreen the spec's `traffic` fields are not obeyed; the weights actually
routed are in status.versions[].traffic. Switching the strategy to Manual hands control back
to the spec's weights at once.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from lmo.api import Engine, LanguageModelSpec, RolloutPhase, RolloutStatus, Strategy, parse_duration
from lmo.builders.autoscaling import share_bounds
from lmo.conditions import NORMAL, WARNING, Reason, rfc3339
from lmo.decide.vocabulary import (
    NONE,
    NOT_STARTED,
    WAIT_REQUEUE_SECONDS,
    AnalysisResult,
    Decision,
    VersionObservation,
    analysis_record,
    desired_key,
    parse_time,
    seconds_since,
    serves_desired,
    step_label,
    weights,
)

# Early checks within a hold are at least this far apart (see early_check_interval).
EARLY_CHECK_MIN_SECONDS = 60.0


def analysis_window(
    spec: LanguageModelSpec, rollout: RolloutStatus | None = None, now: datetime | None = None
) -> float:
    """Seconds of metrics one analysis judges: one step's hold.

    Given the rollout status and the clock, an early check (mid-hold) judges only the part of
    the step elapsed so far (at least one second), so it never mixes in the previous step.
    """
    assert spec.rollout is not None
    hold = parse_duration(spec.rollout.step_duration)
    if rollout is None or now is None or not rollout.step_started_at:
        return hold
    elapsed = seconds_since(rollout.step_started_at, now)
    return max(1.0, min(hold, elapsed))


def early_check_interval(hold: float) -> float | None:
    """Seconds between early checks within a hold; None when the hold is too short for any.

    A failing candidate is rolled back at the first check that sees it fail (with at least
    minRequests requests), instead of serving its share for the whole hold. Checks are
    spaced a quarter of the hold apart, never closer than EARLY_CHECK_MIN_SECONDS (rates
    over shorter windows are noise at Prometheus' usual 15-30 s scrape interval).
    """
    interval = max(EARLY_CHECK_MIN_SECONDS, hold / 4)
    return interval if interval < hold else None


def rollout_hash(spec: LanguageModelSpec, stable: str, candidate: str) -> str:
    """What a rollout was decided on: the candidate's version spec and the rollout settings.

    `paused` is left out (pausing is not a new rollout); so are other versions' traffic
    fields, which Canary and BlueGreen do not obey.
    """
    assert spec.rollout is not None
    blob = {
        "stable": stable,
        "candidate": candidate,
        "version": spec.version(candidate).to_dict() | {"traffic": None},
        "rollout": spec.rollout.model_dump(mode="json", exclude={"paused"}),
        "task": spec.task,
        "serving": spec.serving.model_dump(mode="json"),
    }
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pick_stable(spec: LanguageModelSpec, current: RolloutStatus | None) -> str:
    """The stable version: the one recorded in status, else the one with the most spec traffic."""
    names = [v.name for v in spec.versions]
    if current is not None and current.stable in names:
        return current.stable
    weights = spec.effective_traffic()
    return max(names, key=lambda n: (weights.get(n, 0), -names.index(n)))


def pick_candidate(
    spec: LanguageModelSpec, stable: str, observed: dict[str, VersionObservation]
) -> str | None:
    """The last version after the stable in spec.versions whose artifact differs from it.

    An artifact not known yet (not converted) counts as different: the rollout waits for it.
    """
    names = [v.name for v in spec.versions]
    stable_key = observed[stable].artifact_key if stable in observed else None
    for name in reversed(names[names.index(stable) + 1 :]):
        key = observed[name].artifact_key if name in observed else None
        if key is None or key != stable_key:
            return name
    return None


def _split(spec: LanguageModelSpec, stable: str, candidate: str, percent: int) -> dict[str, int]:
    return weights(spec, {stable: 100 - percent, candidate: percent})


def _scale_down_bounds(spec: LanguageModelSpec) -> tuple[int, int]:
    a = spec.autoscaling
    if a is None or a.engine == Engine.KEDA.value:
        return (0, 0)
    return (a.min_replicas, a.min_replicas)


def decide(
    spec: LanguageModelSpec,
    current: RolloutStatus | None,
    observed: dict[str, VersionObservation],
    now: datetime,
    analysis: AnalysisResult | None = None,
) -> Decision:
    """The Canary or BlueGreen decision (see the module docstring)."""
    return _Machine(spec, current, observed, now, analysis).run()


class _Machine:
    """One decision for Canary or BlueGreen (a helper object; `decide` is the interface)."""

    def __init__(self, spec, current, observed, now, analysis):
        self.spec: LanguageModelSpec = spec
        self.ro = spec.rollout
        self.now: datetime = now
        self.analysis = analysis
        self.observed: dict[str, VersionObservation] = observed
        self.current = current
        self.events: list[tuple[str, str, str]] = []
        self.blue_green = self.ro.strategy == Strategy.BLUE_GREEN.value
        self.step_count = 1 if self.blue_green else len(self.ro.steps)
        self.hold = parse_duration(self.ro.step_duration)
        # when a fresh hold next needs a look: its first early check, or its end
        self.first_wake = early_check_interval(self.hold) or self.hold

    # ------------------------------------------------------------------ helpers
    def ready(self, name: str) -> bool:
        """Ready pods serving the artifact the spec asks for now (`serves_desired`)."""
        return serves_desired(self.spec, self.observed, name)

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def done(
        self,
        status: RolloutStatus,
        traffic: dict[str, int],
        requeue: float | None = None,
        bounds: dict[str, tuple[int, int]] | None = None,
        analyse: bool = False,
    ) -> Decision:
        return Decision(
            traffic=traffic,
            rollout=status,
            events=self.events,
            requeue_after=requeue,
            bounds=bounds or {},
            analyse=analyse,
        )

    def step_text(self, status: RolloutStatus) -> str:
        """The status' step as Events and messages name it: "step 2/4"."""
        return step_label(status.step, self.step_count)

    def percent(self, status: RolloutStatus) -> int:
        """Candidate share at the status' step (BlueGreen checks at 0%)."""
        return 0 if self.blue_green else self.ro.steps[status.step]

    def candidate_bounds(self, status: RolloutStatus) -> dict[str, tuple[int, int]]:
        """Autoscaler bounds of the candidate: its share of the range (Canary), or full
        size before the switch (BlueGreen).

        A BlueGreen candidate has 0% of the traffic until it takes 100% at once, so its
        autoscaler alone would keep it at minReplicas and the switch would land the whole
        load on a minimum-size version. Its lower bound is the stable's current replica
        count (what the stable's autoscaler sized for the load it will take over), at least
        max(1, minReplicas) and at most maxReplicas.
        """
        a = self.spec.autoscaling
        if a is None or not status.candidate:
            return {}
        if self.blue_green:
            seen = self.observed.get(status.stable)
            stable_now = seen.replicas if seen is not None and seen.replicas else 0
            low = min(a.max_replicas, max(1, a.min_replicas, stable_now))
            return {status.candidate: (low, a.max_replicas)}
        return {status.candidate: share_bounds(a, self.percent(status))}

    # ------------------------------------------------------------------ the machine
    def run(self) -> Decision:
        spec, current = self.spec, self.current
        stable = pick_stable(spec, current)
        names = [v.name for v in spec.versions]
        removed = (
            current.stable
            if current is not None and current.stable and current.stable not in names
            else None
        )
        taking_over = (  # a stable was removed before: its successor was not ready yet
            current is not None
            and current.phase == RolloutPhase.WAITING.value
            and not current.candidate
            and current.stable == stable
        )
        if removed is not None or taking_over:
            if not self.ready(stable):
                return self.stable_removed(removed, stable)
            if removed is not None:
                self.event(
                    WARNING,
                    Reason.STABLE_REMOVED,
                    f"the stable version {removed} was removed from spec.versions: {stable} "
                    "takes its traffic without the rollout's checks",
                )
        candidate = pick_candidate(spec, stable, self.observed)
        all_stable = weights(spec, {stable: 100})
        if candidate is None:
            return self.settled(stable, all_stable)
        status = self.begin(stable, candidate)
        if status.phase == RolloutPhase.ROLLED_BACK.value:
            # No retry until the candidate's spec or the rollout settings change.
            return self.done(status, all_stable)
        if self.ro.paused:
            return self.paused(status)
        if status.phase == RolloutPhase.PAUSED.value:
            self.resume(status)
        if not self.ready(candidate):
            return self.wait_for(status, all_stable)
        if status.phase == RolloutPhase.WAITING.value or not status.step_started_at:
            if not self.ready(stable):
                return self.wait_for_stable(status, all_stable)
            return self.start_step(status, status.step)
        return self.progress(status)

    def begin(self, stable: str, candidate: str) -> RolloutStatus:
        """The rollout of `candidate` over `stable`: the current one when it is about the
        same versions and settings (and not over), else a new one (with its Event)."""
        current = self.current
        digest = rollout_hash(self.spec, stable, candidate)
        status = current.model_copy(deep=True) if current is not None else None
        same = (
            status is not None
            and status.candidate == candidate
            and status.stable == stable
            and status.spec_hash == digest
        )
        if same and status.phase not in (RolloutPhase.IDLE.value, RolloutPhase.SUCCEEDED.value):
            return status
        restarted = (
            status is not None
            and bool(status.candidate)
            and status.phase
            in (RolloutPhase.WAITING.value, RolloutPhase.PROGRESSING.value, RolloutPhase.PAUSED.value)
        )
        what = "blue-green switch" if self.blue_green else (
            "canary through steps " + ",".join(str(s) for s in self.ro.steps)
        )
        if restarted:
            self.event(
                NORMAL,
                Reason.ROLLOUT_RESTARTED,
                f"the rollout spec changed: {what} of {candidate} (stable {stable}) "
                "starts again",
            )
        else:
            self.event(NORMAL, Reason.ROLLOUT_STARTED, f"{what} of {candidate} (stable {stable})")
        return RolloutStatus(
            phase=RolloutPhase.WAITING,
            step=0,
            candidate=candidate,
            stable=stable,
            spec_hash=digest,
            step_started_at=NOT_STARTED,
            message=f"waiting for {candidate} to serve its artifact",
        )

    def resume(self, status: RolloutStatus) -> None:
        """spec.rollout.paused was cleared: wait or hold again (the hold starts over)."""
        self.event(NORMAL, Reason.ROLLOUT_RESUMED, f"rollout of {status.candidate} resumed")
        status.phase = (
            RolloutPhase.WAITING.value
            if not status.step_started_at
            else RolloutPhase.PROGRESSING.value
        )
        if status.step_started_at:  # the hold starts again
            status.step_started_at = rfc3339(self.now, microseconds=True)

    def wait_for(self, status: RolloutStatus, all_stable: dict[str, int]) -> Decision:
        """The candidate has no ready pods serving its artifact: all traffic to the stable."""
        candidate, stable = status.candidate, status.stable
        if status.phase == RolloutPhase.PROGRESSING.value:
            self.event(
                WARNING,
                Reason.CANDIDATE_NOT_READY,
                f"{candidate} has no ready pods serving its artifact: all traffic to "
                f"{stable} until it has",
            )
        return self.waiting(status, all_stable, candidate, candidate)

    def wait_for_stable(self, status: RolloutStatus, all_stable: dict[str, int]) -> Decision:
        """A step starts only once the stable serves too: a canary against a stable still
        converting or starting (both versions new, the candidate quicker) would send the
        candidate every request, its share being relative to a stable that cannot take any."""
        return self.waiting(status, all_stable, status.stable, f"the stable version {status.stable}")

    def waiting(self, status: RolloutStatus, all_stable: dict[str, int], version: str,
                who: str) -> Decision:
        """Phase Waiting, no step running, until `version` serves its artifact."""
        status.phase = RolloutPhase.WAITING.value
        status.step_started_at = NOT_STARTED
        status.message = (
            f"waiting for {who} to serve artifact "
            f"{desired_key(self.spec, version)[:8]} with ready pods"
        )
        return self.done(status, all_stable, WAIT_REQUEUE_SECONDS, self.candidate_bounds(status))

    def stable_removed(self, removed: str | None, successor: str) -> Decision:
        """The stable left spec.versions and `successor` (the version with the most spec
        traffic) has no ready pods serving its artifact: route nothing rather than send all
        requests to pods that cannot answer, and wait for it (no checks are possible: there
        is no stable left to compare with)."""
        current = self.current
        assert current is not None
        if removed is not None:
            message = (
                f"the stable version {removed} was removed from spec.versions: waiting for "
                f"{successor} to serve artifact {desired_key(self.spec, successor)[:8]} with "
                "ready pods; no traffic is routed until then"
            )
            self.event(WARNING, Reason.STABLE_REMOVED, message)
        else:
            message = current.message
        status = RolloutStatus(
            phase=RolloutPhase.WAITING,
            step=0,
            stable=successor,
            candidate=NONE,
            spec_hash=NONE,
            step_started_at=NOT_STARTED,
            last_analysis=current.last_analysis,
            message=message,
        )
        return self.done(status, weights(self.spec, {}), WAIT_REQUEUE_SECONDS)

    def settled(self, stable: str, all_stable: dict[str, int]) -> Decision:
        """No candidate: the stable serves everything; BlueGreen scales the old one down."""
        current = self.current
        succeeded = current is not None and current.phase == RolloutPhase.SUCCEEDED.value
        status = RolloutStatus(
            phase=RolloutPhase.SUCCEEDED if succeeded else RolloutPhase.IDLE,
            step=current.step if succeeded else 0,
            stable=stable,
            candidate=NONE,
            # where `lmo rollback` goes back to, for as long as the success stands
            previous=current.previous if succeeded else None,
            step_started_at=current.step_started_at if succeeded else NOT_STARTED,
            last_analysis=current.last_analysis if current is not None else None,
            message=current.message if succeeded else f"{stable} serves all traffic",
        )
        if not (self.blue_green and succeeded and status.step_started_at):
            return self.done(status, all_stable)
        others = [v.name for v in self.spec.versions if v.name != stable]
        left = parse_duration(self.ro.scale_down_delay) - seconds_since(
            status.step_started_at, self.now
        )
        if left > 0:
            return self.done(status, all_stable, left)
        return self.done(status, all_stable, bounds={n: _scale_down_bounds(self.spec) for n in others})

    def paused(self, status: RolloutStatus) -> Decision:
        if status.phase != RolloutPhase.PAUSED.value:
            self.event(NORMAL, Reason.ROLLOUT_PAUSED,
                       f"rollout of {status.candidate} paused at {self.step_text(status)}")
        status.phase = RolloutPhase.PAUSED.value
        status.message = "paused (spec.rollout.paused)"
        routed = bool(status.step_started_at) and self.ready(status.candidate)
        traffic = (
            _split(self.spec, status.stable, status.candidate, self.percent(status))
            if routed
            else weights(self.spec, {status.stable: 100})
        )
        return self.done(status, traffic, None, self.candidate_bounds(status))

    def start_step(self, status: RolloutStatus, step: int) -> Decision:
        status.phase = RolloutPhase.PROGRESSING.value
        status.step = step
        status.step_started_at = rfc3339(self.now, microseconds=True)
        status.inconclusive = 0
        pct = self.percent(status)
        if self.blue_green:
            status.message = f"checking {status.candidate} at full size before the switch"
        else:
            status.message = f"{self.step_text(status)}: {status.candidate} at {pct}%"
        self.event(NORMAL, Reason.ROLLOUT_STEP, status.message)
        return self.done(
            status,
            _split(self.spec, status.stable, status.candidate, pct),
            self.first_wake,
            self.candidate_bounds(status),
        )

    def progress(self, status: RolloutStatus) -> Decision:
        traffic = _split(self.spec, status.stable, status.candidate, self.percent(status))
        bounds = self.candidate_bounds(status)
        started = parse_time(status.step_started_at)
        elapsed = (self.now - started).total_seconds()
        if elapsed < self.hold:
            return self.early_check(status, traffic, bounds, started, elapsed)
        if self.analysis is None:
            return self.done(status, traffic, None, bounds, analyse=True)

        result = self.analysis
        status.last_analysis = analysis_record(result, self.now, status.step, early=False)
        why = "; ".join(result.reasons)
        if result.verdict == "pass":
            last = self.blue_green or status.step + 1 >= len(self.ro.steps)
            if last:
                return self.promote(status)
            return self.start_step(status, status.step + 1)
        if result.verdict == "fail":
            return self.roll_back(status, f"analysis failed at {self.step_text(status)}: {why}")
        # inconclusive
        status.inconclusive += 1
        limit = self.ro.analysis.inconclusive_limit
        if status.inconclusive >= limit:
            return self.roll_back(
                status,
                f"analysis inconclusive {status.inconclusive} times in a row "
                f"(inconclusiveLimit {limit}): {why}",
            )
        status.step_started_at = rfc3339(self.now, microseconds=True)
        status.message = (
            f"{self.step_text(status)} held: analysis inconclusive "
            f"({status.inconclusive}/{limit}): {why}"
        )
        self.event(NORMAL, Reason.ANALYSIS_INCONCLUSIVE, status.message)
        return self.done(status, traffic, self.first_wake, bounds)

    def early_check(self, status, traffic, bounds, started: datetime, elapsed: float) -> Decision:
        """Mid-hold: ask for an analysis when an early check is due; act only on "fail"."""
        remaining = self.hold - elapsed
        interval = early_check_interval(self.hold)
        if interval is None:
            return self.done(status, traffic, remaining, bounds)
        last = status.last_analysis or {}
        reference = started
        if last.get("step") == status.step and last.get("early") and last.get("time"):
            reference = max(started, parse_time(last["time"]))
        wait = interval - (self.now - reference).total_seconds()
        if wait > 0 or remaining < 1.0:
            return self.done(status, traffic, min(remaining, wait) if wait > 0 else remaining, bounds)
        if self.analysis is None:
            return self.done(status, traffic, None, bounds, analyse=True)
        result = self.analysis
        status.last_analysis = analysis_record(result, self.now, status.step, early=True)
        if result.verdict == "fail":
            why = "; ".join(result.reasons)
            return self.roll_back(
                status,
                f"early check failed {elapsed:.0f}s into {self.step_text(status)}: {why}",
            )
        return self.done(status, traffic, min(remaining, interval), bounds)

    def promote(self, status: RolloutStatus) -> Decision:
        new, old = status.candidate, status.stable
        status.phase = RolloutPhase.SUCCEEDED.value
        status.stable = new
        status.previous = old
        status.candidate = NONE
        status.inconclusive = 0
        status.step_started_at = rfc3339(self.now, microseconds=True)
        status.message = f"{new} serves all traffic (previous: {old})"
        self.event(NORMAL, Reason.ROLLOUT_SUCCEEDED, status.message)
        requeue = parse_duration(self.ro.scale_down_delay) if self.blue_green else None
        return self.done(status, weights(self.spec, {new: 100}), requeue)

    def roll_back(self, status: RolloutStatus, why: str) -> Decision:
        status.phase = RolloutPhase.ROLLED_BACK.value
        status.step_started_at = NOT_STARTED
        status.message = f"rolled back to {status.stable}: {why}"
        self.event(
            WARNING,
            Reason.ROLLOUT_ROLLED_BACK,
            f"{status.candidate} rolled back, all traffic to {status.stable}: {why}",
        )
        return self.done(status, weights(self.spec, {status.stable: 100}))
