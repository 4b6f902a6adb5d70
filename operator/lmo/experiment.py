"""A/B experiments: which of two versions succeeds more often, with statistics that survive
being looked at on every analysis.

Pure (no I/O, no clock of its own, no kopf/kubernetes): the operator feeds it outcome counts
read from Prometheus, `lmo up` the counts of its front door; both call `decide` (the rollout
decision of `strategy: Experiment`, dispatched to from `lmo.rollout.decide`) and through it
`evaluate` and `sequential_test`.

The test: a mixture sequential probability ratio test (mSPRT) on the difference of two
means, in the normal approximation, as in Johari, Koomen, Pekelis & Walsh, "Peeking at A/B
tests" (KDD 2017) and "Always valid inference" (Operations Research 2022); the interval is
the matching confidence sequence (Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021, normal mixture).

* lift = candidate rate - baseline rate (absolute; `relative` = lift / baseline rate).
* V = p_b(1-p_b)/n_b + p_c(1-p_c)/n_c, the variance of the lift (each rate shrunk as
  (s + 1/2)/(n + 1) inside the variance only, so an arm with no failures yet does not get
  zero variance).
* The mixture's variance tau^2 is fixed in advance relative to the planned sample size
  `minSamples`: tau^2 / V = r* (2/m) / (1/n_b + 1/n_c), where r* minimises the interval's
  width at n_b = n_c = m. The sharpest interval is therefore around minSamples per arm,
  and the choice depends on nothing observed (sigma^2 cancels), as the mSPRT requires.
* Likelihood ratio of "lift = 0": L = sqrt(1/(1+rho)) exp(z^2/2 * rho/(1+rho)) with
  z^2 = lift^2/V and rho = tau^2/V. The always-valid p-value is the running minimum of
  min(1, 1/L) over the looks; the interval is
  lift +- sqrt(V (1+rho)/rho (2 ln(1/alpha) + ln(1+rho))), alpha = 1 - confidence.
  By Ville's inequality the chance that 1/L ever drops below alpha under equal rates is at
  most alpha, however many looks are taken: peeking is free.
* Scores in [0, 1] (`"score": 0.7` feedback) use the same test with successes = the sum
  of scores: a [0, 1] variable with mean mu has variance at most mu(1-mu), so the Bernoulli
  variance is a conservative bound for them.

Decision: Running until both arms have `minSamples`; Decided (winner = the better arm) at the
first look with p <= alpha, which is exactly when the interval excludes 0; Inconclusive when
`maxSamples` per arm or `maxDuration` is reached undecided. Decided and Inconclusive are final
for the arms and settings they were reached on (`specHash`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from lmo.api import (
    Experiment,
    ExperimentArm,
    ExperimentPhase,
    ExperimentStatus,
    LanguageModelSpec,
    OnDecision,
    RolloutPhase,
    RolloutStatus,
)
from lmo.conditions import NORMAL, WARNING, Reason, rfc3339

if TYPE_CHECKING:
    from lmo.analysis import AnalysisResult
    from lmo.rollout import Decision, VersionObservation

# Metric names of lmo's own feedback counts (the front door under lmo up, the feedback model
# in each version's Triton on the cluster), labelled lmo_model, lmo_version, namespace.
FEEDBACK_MODEL = "feedback"  # the Triton model counting them (lmo_runtime.feedback.MODEL)
FEEDBACK_SAMPLES = "lmo_feedback_samples_total"
FEEDBACK_SUCCESSES = "lmo_feedback_successes_total"
FEEDBACK_SUCCESS_QUERY = (
    f'sum(increase({FEEDBACK_SUCCESSES}{{namespace="{{{{namespace}}}}",lmo_model="{{{{name}}}}",'
    f'lmo_version="{{{{version}}}}"}}[{{{{window}}}}]))'
)
FEEDBACK_TOTAL_QUERY = FEEDBACK_SUCCESS_QUERY.replace(FEEDBACK_SUCCESSES, FEEDBACK_SAMPLES)


# --------------------------------------------------------------------------- the statistics


@lru_cache(maxsize=64)
def mixing_ratio(alpha: float) -> float:
    """r* = tau^2 / V at the planned sample size: the ratio that minimises the interval's
    half-width (1 + 1/r)(2 ln(1/alpha) + ln(1 + r)) (a fixed grid, so it is deterministic)."""
    r = np.logspace(-2, 4, 6001)
    width = (1 + 1 / r) * (2 * math.log(1 / alpha) + np.log1p(r))
    return float(r[int(np.argmin(width))])


@dataclass(frozen=True)
class Test:
    """One look of the sequential test (each field a float, or an array of looks)."""

    lift: Any  # candidate rate - baseline rate
    low: Any  # always-valid interval of the lift
    high: Any
    p_value: Any  # min(1, 1/likelihood ratio) at this look (fold with a running minimum)
    ready: Any  # both arms have minSamples: a decision may be taken


def sequential_test(
    successes_b: Any, samples_b: Any, successes_c: Any, samples_c: Any,
    min_samples: int, confidence: float,
) -> Test:
    """The mixture SPRT of "candidate rate = baseline rate" at one look (see the module
    docstring). Works on numbers and, element-wise, on numpy arrays of looks."""
    sb, nb = np.asarray(successes_b, float), np.asarray(samples_b, float)
    sc, nc = np.asarray(successes_c, float), np.asarray(samples_c, float)
    alpha = 1.0 - confidence
    with np.errstate(divide="ignore", invalid="ignore"):
        pb = np.where(nb > 0, sb / np.maximum(nb, 1), 0.0)
        pc = np.where(nc > 0, sc / np.maximum(nc, 1), 0.0)
        lift = pc - pb
        qb, qc = (sb + 0.5) / (nb + 1), (sc + 0.5) / (nc + 1)
        inv = 1 / np.maximum(nb, 1) + 1 / np.maximum(nc, 1)
        var = qb * (1 - qb) / np.maximum(nb, 1) + qc * (1 - qc) / np.maximum(nc, 1)
        rho = mixing_ratio(alpha) * (2.0 / min_samples) / inv
        z2 = lift * lift / var
        log_lr = 0.5 * z2 * rho / (1 + rho) - 0.5 * np.log1p(rho)
        p = np.minimum(1.0, np.exp(-log_lr))
        half = np.sqrt(var * (1 + rho) / rho * (2 * math.log(1 / alpha) + np.log1p(rho)))
    empty = (nb <= 0) | (nc <= 0)
    p = np.where(empty, 1.0, p)
    ready = (nb >= min_samples) & (nc >= min_samples)
    out = [lift, lift - half, lift + half, p, ready]
    if np.ndim(lift) == 0:
        out = [bool(x) if isinstance(x, np.bool_) else float(x) for x in out]
        out[4] = bool(out[4])
    return Test(*out)


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
    elapsed = (now - _parse(previous.started_at)).total_seconds() if previous.started_at else 0
    out_of_time = settings.max_duration is not None and elapsed >= _duration(settings.max_duration)
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


def _parse(text: str) -> datetime:
    from lmo.rollout import parse_time

    return parse_time(text)


def _duration(text: str) -> float:
    from lmo.rollout import parse_duration

    return parse_duration(text)


# --------------------------------------------------------------------------- the rollout


def settings_of(spec: LanguageModelSpec) -> Experiment:
    assert spec.rollout is not None
    return spec.rollout.experiment or Experiment()


def arms_of(spec: LanguageModelSpec) -> tuple[str, str]:
    """(baseline, candidate): the two versions with traffic; the baseline has more (the
    first listed on a tie)."""
    weights = spec.effective_traffic()
    names = [v.name for v in spec.versions if weights.get(v.name, 0) > 0]
    assert len(names) == 2, "the API refuses an Experiment without exactly two arms"
    first, second = names
    return (second, first) if weights[second] > weights[first] else (first, second)


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


@dataclass
class _Out:
    events: list[tuple[str, str, str]] = field(default_factory=list)


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
    from lmo.rollout import Decision, WAIT_REQUEUE_SECONDS, parse_duration, parse_time

    assert spec.rollout is not None
    settings = settings_of(spec)
    baseline, candidate = arms_of(spec)
    digest = experiment_hash(spec)
    stamp = rfc3339(now, microseconds=True)
    out = _Out()
    names = [v.name for v in spec.versions]

    def weights(assign: dict[str, int]) -> dict[str, int]:
        return {n: assign.get(n, 0) for n in names}

    def done(ro, exp, traffic, requeue=None, analyse=False) -> Decision:
        return Decision(traffic=traffic, rollout=ro, events=out.events, requeue_after=requeue,
                        analyse=analyse, experiment=exp)

    exp = previous.model_copy(deep=True) if previous is not None else None
    if exp is None or exp.spec_hash != digest:
        exp = ExperimentStatus(
            phase=ExperimentPhase.RUNNING, baseline=baseline, candidate=candidate,
            arms=[arm(baseline, 0, 0), arm(candidate, 0, 0)], started_at=stamp,
            spec_hash=digest, message="waiting for both versions to serve",
        )
    ro = current.model_copy(deep=True) if current is not None else None
    if ro is None or ro.spec_hash != digest:
        ro = RolloutStatus(
            phase=RolloutPhase.WAITING, step=0, candidate=candidate, stable=baseline,
            spec_hash=digest, step_started_at="",
            message=f"experiment {baseline} vs {candidate}: waiting for both to serve",
        )
        out.events.append((NORMAL, Reason.EXPERIMENT_STARTED,
                           f"experiment {candidate} vs {baseline} (minSamples "
                           f"{settings.min_samples} per version, confidence "
                           f"{settings.confidence:g}, onDecision {settings.on_decision})"))
    spec_weights = weights(spec.effective_traffic())

    if ro.phase == RolloutPhase.ROLLED_BACK.value:
        return done(ro, exp, weights({baseline: 100}))
    if ro.phase in (RolloutPhase.SUCCEEDED.value, RolloutPhase.CONCLUDED.value):
        return done(ro, exp, _settled(exp, settings, weights, spec_weights))

    if spec.rollout.paused:
        ro.phase = RolloutPhase.PAUSED.value
        ro.message = "paused (spec.rollout.paused): the experiment takes no look"
        return done(ro, exp, spec_weights)
    if not (ready(baseline) and ready(candidate)):
        ro.phase = RolloutPhase.WAITING.value
        ro.step_started_at = ""
        waiting = [n for n in (baseline, candidate) if not ready(n)]
        ro.message = f"waiting for {', '.join(waiting)} to serve its artifact with ready pods"
        traffic = weights({baseline: 100}) if ready(baseline) else spec_weights
        return done(ro, exp, traffic, WAIT_REQUEUE_SECONDS)

    hold = parse_duration(spec.rollout.step_duration)
    if ro.phase != RolloutPhase.PROGRESSING.value or not ro.step_started_at:
        ro.phase = RolloutPhase.PROGRESSING.value
        ro.step_started_at = stamp
        ro.message = f"experiment {candidate} vs {baseline}: collecting outcomes"
        return done(ro, exp, spec_weights, hold)
    elapsed = (now - parse_time(ro.step_started_at)).total_seconds()
    if elapsed < hold:
        return done(ro, exp, spec_weights, hold - elapsed)
    if analysis is None:
        return done(ro, exp, spec_weights, None, analyse=True)

    from lmo.rollout import _analysis_record

    ro.last_analysis = _analysis_record(analysis, now, 0, early=False)
    ro.step_started_at = stamp  # the next look is one stepDuration away
    if analysis.verdict == "fail":
        why = "; ".join(analysis.reasons)
        ro.phase = RolloutPhase.ROLLED_BACK.value
        ro.step_started_at = ""
        ro.message = f"rolled back to {baseline}: {candidate} failed the analysis: {why}"
        exp.message = f"stopped: {candidate} failed the analysis gates ({why})"
        out.events.append((WARNING, Reason.EXPERIMENT_STOPPED,
                           f"{candidate} rolled back, all traffic to {baseline}: {why}"))
        return done(ro, exp, weights({baseline: 100}))

    counts = analysis.outcomes
    if not counts:  # the counts could not be read: this look is skipped, not taken as zeros
        why = "; ".join(analysis.reasons) or "no outcome counts"
        ro.message = f"experiment {candidate} vs {baseline}: look skipped: {why}"
        return done(ro, exp, spec_weights, hold)
    b = arm(baseline, *counts.get(baseline, (0.0, 0.0)))
    c = arm(candidate, *counts.get(candidate, (0.0, 0.0)))
    exp = evaluate(settings, b, c, exp, now)
    if exp.phase == ExperimentPhase.RUNNING.value:
        ro.message = f"experiment {candidate} vs {baseline}: {exp.message}"
        return done(ro, exp, spec_weights, hold)
    if exp.phase == ExperimentPhase.DECIDED.value:
        out.events.append((NORMAL, Reason.EXPERIMENT_DECIDED, exp.message))
        if settings.on_decision == OnDecision.PROMOTE.value:
            loser = baseline if exp.winner == candidate else candidate
            ro.phase = RolloutPhase.SUCCEEDED.value
            ro.stable, ro.previous, ro.candidate = exp.winner, loser, ""
            ro.message = f"{exp.winner} serves all traffic: {exp.message}"
            return done(ro, exp, _settled(exp, settings, weights, spec_weights))
    else:
        out.events.append((NORMAL, Reason.EXPERIMENT_INCONCLUSIVE, exp.message))
    ro.phase = RolloutPhase.CONCLUDED.value
    ro.message = f"experiment concluded ({exp.phase}): {exp.message}; traffic as the spec says"
    return done(ro, exp, spec_weights)


def _settled(exp: ExperimentStatus, settings: Experiment, weights, spec_weights) -> dict[str, int]:
    if (exp.phase == ExperimentPhase.DECIDED.value and exp.winner
            and settings.on_decision == OnDecision.PROMOTE.value):
        return weights({exp.winner: 100})
    return spec_weights
