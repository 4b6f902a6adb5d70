"""A/B experiments: which of two versions succeeds more often, with statistics that survive
being looked at on every analysis.

Pure (no I/O, no clock of its own, no kopf/kubernetes): the operator feeds it outcome counts
read from Prometheus, `lmo up` the counts of its front door; both call `decide` (the rollout
decision of `strategy: Experiment`, dispatched to from `lmo.rollout.decide`) and through it
`evaluate` and the sequential test of `lmo.decide.statistics`.


Decision: Running until both arms have `minSamples`; Decided (winner = the better arm) at the
first look with p <= alpha, which is exactly when the interval excludes 0; Inconclusive when
`maxSamples` per arm or `maxDuration` is reached undecided. Decided and Inconclusive are final
for the arms and settings they were reached on (`specHash`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from lmo.api import (
    Experiment,
    ExperimentArm,
    ExperimentPhase,
    ExperimentStatus,
    LanguageModelSpec,
    OnDecision,
    RolloutPhase,
    RolloutStatus,
    parse_duration,
)
from lmo.conditions import NORMAL, WARNING, Reason, rfc3339
from lmo.decide.outcomes import arms_of, settings_of
from lmo.decide.statistics import sequential_test
from lmo.decide.vocabulary import (
    WAIT_REQUEUE_SECONDS,
    AnalysisResult,
    Decision,
    VersionObservation,
    analysis_record,
    seconds_since,
)


# --------------------------------------------------------------------------- one look


def arm(version: str, samples: float, successes: float) -> ExperimentArm:
    samples, successes = max(0.0, float(samples)), max(0.0, float(successes))
    successes = min(successes, samples)
    return ExperimentArm(
        version=version,
        samples=round(samples, 6),
        successes=round(successes, 6),
        rate=round(successes / samples, 6) if samples > 0 else 0.0,
    )


def evaluate(
    settings: Experiment,
    baseline: ExperimentArm,
    candidate: ExperimentArm,
    previous: ExperimentStatus,
    now: datetime,
) -> ExperimentStatus:
    """The experiment after one look at the counts (both cumulative since it started).

    A Decided or Inconclusive experiment is returned unchanged: a verdict is not revisited
    by later looks (that would be peeking in the other direction).
    """
    if previous.phase != ExperimentPhase.RUNNING.value:
        return previous
    t = sequential_test(
        baseline.successes, baseline.samples, candidate.successes, candidate.samples,
        settings.min_samples, settings.confidence,
    )
    alpha = 1.0 - settings.confidence
    prev_ready = bool(previous.arms) and all(
        a.samples >= settings.min_samples for a in previous.arms
    )
    p = t.p_value
    if t.ready and prev_ready and previous.p_value is not None:
        p = min(p, previous.p_value)  # the always-valid p-value never grows back
    out = previous.model_copy(deep=True)
    out.arms = [baseline, candidate]
    out.lift = round(t.lift, 6)
    out.relative_lift = round(t.lift / baseline.rate, 6) if baseline.rate > 0 else None
    out.interval = [round(t.low, 6), round(t.high, 6)]
    out.p_value = float(f"{p:.6g}")
    n = min(baseline.samples, candidate.samples)
    elapsed = seconds_since(previous.started_at, now) if previous.started_at else 0
    out_of_time = settings.max_duration is not None and elapsed >= parse_duration(settings.max_duration)
    if not t.ready:
        out.message = (
            f"collecting: {n:.0f} of minSamples {settings.min_samples} per version"
        )
        if out_of_time:  # too little traffic to ever judge within maxDuration
            out.phase = ExperimentPhase.INCONCLUSIVE.value
            out.decided_at = rfc3339(now)
            out.message = (f"maxDuration {settings.max_duration} reached with {n:.0f} of "
                           f"minSamples {settings.min_samples} per version")
        return out
    if t.p_value <= alpha:
        better = candidate if t.lift > 0 else baseline
        out.phase = ExperimentPhase.DECIDED.value
        out.winner = better.version
        out.decided_at = rfc3339(now)
        out.message = (
            f"{better.version} wins: lift {describe_lift(out)}, p {out.p_value:.3g} <= "
            f"{alpha:.3g}"
        )
        return out
    limit = None
    if settings.max_samples is not None and n >= settings.max_samples:
        limit = f"maxSamples {settings.max_samples} reached"
    elif out_of_time:
        limit = f"maxDuration {settings.max_duration} reached"
    if limit is not None:
        out.phase = ExperimentPhase.INCONCLUSIVE.value
        out.decided_at = rfc3339(now)
        out.message = f"{limit} without a difference: lift {describe_lift(out)}, p {out.p_value:.3g}"
        return out
    out.message = f"no difference yet: lift {describe_lift(out)}, p {out.p_value:.3g}"
    return out


def describe_lift(status: ExperimentStatus) -> str:
    """`+0.031 [+0.012, +0.050]`: the lift with its interval, as people read it."""
    if status.lift is None:
        return "-"
    text = f"{status.lift:+.4f}"
    if status.interval:
        text += f" [{status.interval[0]:+.4f}, {status.interval[1]:+.4f}]"
    return text


def report_lines(status: dict[str, Any]) -> list[str]:
    """How `lmo status` shows status.experiment (camelCase, as read from the API): the
    verdict, each arm's samples and rate, the lift with its interval and the p-value."""
    if not status:
        return []
    exp = ExperimentStatus.model_validate(status)
    head = f"experiment: {exp.phase}"
    if exp.winner:
        head += f"  winner {exp.winner}"
    if exp.decided_at:
        head += f"  at {exp.decided_at}"
    lines = [head]
    for a in exp.arms:
        role = "baseline" if a.version == exp.baseline else "candidate"
        lines.append(f"  {a.version:<12} {role:<9} samples {a.samples:>8g}  successes "
                     f"{a.successes:>8g}  rate {a.rate:.4f}")
    if exp.lift is not None:
        rel = f" ({exp.relative_lift:+.1%})" if exp.relative_lift is not None else ""
        lines.append(f"  lift {describe_lift(exp)}{rel}  p-value "
                     f"{'-' if exp.p_value is None else f'{exp.p_value:.4g}'}")
    if exp.message:
        lines.append(f"  {exp.message}")
    return lines




# --------------------------------------------------------------------------- the settings


def experiment_hash(spec: LanguageModelSpec) -> str:
    """What an experiment is about: both arms' version specs and weights, and the rollout
    settings (without `paused`). A change starts a new experiment."""
    assert spec.rollout is not None
    baseline, candidate = arms_of(spec)
    blob = {
        "arms": [spec.version(baseline).to_dict(), spec.version(candidate).to_dict()],
        "rollout": spec.rollout.model_dump(mode="json", exclude={"paused"}),
        "task": spec.task,
    }
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the rollout


def decide(
    spec: LanguageModelSpec,
    current: RolloutStatus | None,
    previous: ExperimentStatus | None,
    observed: dict[str, VersionObservation],
    ready: Any,
    now: datetime,
    analysis: AnalysisResult | None = None,
) -> Decision:
    """The rollout decision of `strategy: Experiment`.

    The spec's weights are routed while the experiment runs (until both arms serve their
    artifacts, the baseline takes everything). Every `stepDuration` asks for an analysis
    (`Decision.analyse`), whose `outcomes` are the counts since the experiment started and
    whose gates (error rate, latency, custom metrics) still apply: a candidate failing them
    is rolled back and the experiment stops. Decided with onDecision Promote routes 100% to
    the winner (rollout Succeeded, the winner becomes the stable); Report, or Inconclusive,
    keeps the spec's weights (rollout Concluded). `ready(name)` says whether a version's
    pods serve the artifact its spec asks for (the Canary's rule).
    """
    assert spec.rollout is not None
    x = _Look(spec, now)
    exp, ro = x.statuses(current, previous)
    if ro.phase == RolloutPhase.ROLLED_BACK.value:
        return x.done(ro, exp, x.weights({x.baseline: 100}))
    if ro.phase in (RolloutPhase.SUCCEEDED.value, RolloutPhase.CONCLUDED.value):
        return x.done(ro, exp, x.settled(exp))
    if spec.rollout.paused:
        ro.phase = RolloutPhase.PAUSED.value
        ro.message = "paused (spec.rollout.paused): the experiment takes no look"
        return x.done(ro, exp, x.spec_weights)
    if not (ready(x.baseline) and ready(x.candidate)):
        ro.phase = RolloutPhase.WAITING.value
        ro.step_started_at = ""
        waiting = [n for n in (x.baseline, x.candidate) if not ready(n)]
        ro.message = f"waiting for {', '.join(waiting)} to serve its artifact with ready pods"
        traffic = x.weights({x.baseline: 100}) if ready(x.baseline) else x.spec_weights
        return x.done(ro, exp, traffic, WAIT_REQUEUE_SECONDS)
    if ro.phase != RolloutPhase.PROGRESSING.value or not ro.step_started_at:
        ro.phase = RolloutPhase.PROGRESSING.value
        ro.step_started_at = x.stamp
        ro.message = f"experiment {x.candidate} vs {x.baseline}: collecting outcomes"
        return x.done(ro, exp, x.spec_weights, x.hold)
    elapsed = seconds_since(ro.step_started_at, now)
    if elapsed < x.hold:
        return x.done(ro, exp, x.spec_weights, x.hold - elapsed)
    if analysis is None:
        return x.done(ro, exp, x.spec_weights, None, analyse=True)
    return x.look(ro, exp, analysis)


class _Look:
    """One decision of an experiment (a helper object; `decide` is the interface)."""

    def __init__(self, spec: LanguageModelSpec, now: datetime):
        assert spec.rollout is not None
        self.spec, self.now = spec, now
        self.settings = settings_of(spec)
        self.baseline, self.candidate = arms_of(spec)
        self.digest = experiment_hash(spec)
        self.stamp = rfc3339(now, microseconds=True)
        self.hold = parse_duration(spec.rollout.step_duration)
        self.events: list[tuple[str, str, str]] = []
        self.spec_weights = self.weights(spec.effective_traffic())

    def weights(self, assign: dict[str, int]) -> dict[str, int]:
        return {v.name: assign.get(v.name, 0) for v in self.spec.versions}

    def done(self, ro, exp, traffic, requeue=None, analyse=False) -> Decision:
        return Decision(traffic=traffic, rollout=ro, events=self.events, requeue_after=requeue,
                        analyse=analyse, experiment=exp)

    def settled(self, exp: ExperimentStatus) -> dict[str, int]:
        if (exp.phase == ExperimentPhase.DECIDED.value and exp.winner
                and self.settings.on_decision == OnDecision.PROMOTE.value):
            return self.weights({exp.winner: 100})
        return self.spec_weights

    def statuses(
        self, current: RolloutStatus | None, previous: ExperimentStatus | None
    ) -> tuple[ExperimentStatus, RolloutStatus]:
        """status.experiment and status.rollout of this experiment: the last ones when they
        are about the same arms and settings, else new ones (with the start's Event)."""
        baseline, candidate, settings = self.baseline, self.candidate, self.settings
        exp = previous.model_copy(deep=True) if previous is not None else None
        if exp is None or exp.spec_hash != self.digest:
            exp = ExperimentStatus(
                phase=ExperimentPhase.RUNNING, baseline=baseline, candidate=candidate,
                arms=[arm(baseline, 0, 0), arm(candidate, 0, 0)], started_at=self.stamp,
                spec_hash=self.digest, message="waiting for both versions to serve",
            )
        ro = current.model_copy(deep=True) if current is not None else None
        if ro is None or ro.spec_hash != self.digest:
            ro = RolloutStatus(
                phase=RolloutPhase.WAITING, step=0, candidate=candidate, stable=baseline,
                spec_hash=self.digest, step_started_at="",
                message=f"experiment {baseline} vs {candidate}: waiting for both to serve",
            )
            self.events.append((NORMAL, Reason.EXPERIMENT_STARTED,
                                f"experiment {candidate} vs {baseline} (minSamples "
                                f"{settings.min_samples} per version, confidence "
                                f"{settings.confidence:g}, onDecision {settings.on_decision})"))
        return exp, ro

    def look(self, ro: RolloutStatus, exp: ExperimentStatus, analysis: AnalysisResult) -> Decision:
        """A hold ended and `analysis` measured it: roll back on failed gates, else take a
        look at the outcome counts."""
        baseline, candidate = self.baseline, self.candidate
        ro.last_analysis = analysis_record(analysis, self.now, 0, early=False)
        ro.step_started_at = self.stamp  # the next look is one stepDuration away
        if analysis.verdict == "fail":
            why = "; ".join(analysis.reasons)
            ro.phase = RolloutPhase.ROLLED_BACK.value
            ro.step_started_at = ""
            ro.message = f"rolled back to {baseline}: {candidate} failed the analysis: {why}"
            exp.message = f"stopped: {candidate} failed the analysis gates ({why})"
            self.events.append((WARNING, Reason.EXPERIMENT_STOPPED,
                                f"{candidate} rolled back, all traffic to {baseline}: {why}"))
            return self.done(ro, exp, self.weights({baseline: 100}))
        counts = analysis.outcomes
        if not counts:  # the counts could not be read: this look is skipped, not taken as zeros
            why = "; ".join(analysis.reasons) or "no outcome counts"
            ro.message = f"experiment {candidate} vs {baseline}: look skipped: {why}"
            return self.done(ro, exp, self.spec_weights, self.hold)
        b = arm(baseline, *counts.get(baseline, (0.0, 0.0)))
        c = arm(candidate, *counts.get(candidate, (0.0, 0.0)))
        exp = evaluate(self.settings, b, c, exp, self.now)
        if exp.phase == ExperimentPhase.RUNNING.value:
            ro.message = f"experiment {candidate} vs {baseline}: {exp.message}"
            return self.done(ro, exp, self.spec_weights, self.hold)
        if exp.phase == ExperimentPhase.DECIDED.value:
            self.events.append((NORMAL, Reason.EXPERIMENT_DECIDED, exp.message))
            if self.settings.on_decision == OnDecision.PROMOTE.value:
                loser = baseline if exp.winner == candidate else candidate
                ro.phase = RolloutPhase.SUCCEEDED.value
                ro.stable, ro.previous, ro.candidate = exp.winner, loser, ""
                ro.message = f"{exp.winner} serves all traffic: {exp.message}"
                return self.done(ro, exp, self.settled(exp))
        else:
            self.events.append((NORMAL, Reason.EXPERIMENT_INCONCLUSIVE, exp.message))
        ro.phase = RolloutPhase.CONCLUDED.value
        ro.message = (f"experiment concluded ({exp.phase}): {exp.message}; traffic as the spec "
                      "says")
        return self.done(ro, exp, self.spec_weights)
