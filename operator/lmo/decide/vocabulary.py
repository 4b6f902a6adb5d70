"""The shared words of the decision core: what was observed, what was decided, what an
analysis found, and how times and durations are read. Every strategy and both runtimes speak
them; nothing here decides anything."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

from lmo.api import ExperimentStatus, LanguageModelSpec, RolloutStatus
from lmo.builders import conversion_request
from lmo.conditions import rfc3339

# "No value" is written as an empty string, never as a missing field: the status is written
# with a JSON merge patch, and a field left out of a merge patch keeps its old value.
NOT_STARTED = ""
NONE = ""

# How often to look again while a version's pods are starting (child events also wake the
# reconciler; this is the fallback).
WAIT_REQUEUE_SECONDS = 15.0

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"

def step_label(step: int, total: int | None = None) -> str:
    """How a step is named to a person: 1-based, "step 2/4" (status.rollout.step is 0-based).

    `total` is the number of steps (BlueGreen has one: its check before the switch); "step
    2" when it is not known.
    """
    return f"step {step + 1}" + (f"/{total}" if total else "")


@dataclass(frozen=True)
class VersionObservation:
    """What the reconciler saw of one version: Ready pods, and the artifact key they serve.

    `artifact_key` is the key *every* pod of the version serves (None while pods of another
    artifact remain, or before there is a Deployment); `ready` means some of those pods are
    Ready. The state machine compares the key with the one the spec asks for.
    """

    name: str
    ready: bool
    artifact_key: str | None
    # Replicas its Deployment runs now (spec.replicas: what its autoscaler chose for the
    # current load); None when unknown. BlueGreen sizes its candidate from the stable's.
    replicas: int | None = None


@dataclass(frozen=True)
class Decision:
    # weights to route now, every spec version, sum 100 (all 0 only while the stable was
    # removed from the spec and the version taking over has no ready pods yet)
    traffic: dict[str, int]
    rollout: RolloutStatus | None  # the new status.rollout (None under Manual)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None  # seconds until the next decision is due
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)  # autoscaler (min, max)
    analyse: bool = False  # a hold elapsed: run analysis, then call decide again with it
    experiment: ExperimentStatus | None = None  # the new status.experiment (Experiment only)


@dataclass(frozen=True)
class AnalysisResult:
    verdict: str  # "pass" | "fail" | "inconclusive"
    measurements: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    # Experiment: version -> (samples, successes) since the experiment started
    outcomes: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionMetrics:
    """What one version did during the window."""

    requests: float
    failures: float
    latency_ms: float | None  # p99 when histograms/summaries exist, else the mean
    latency_is_p99: bool
    queue_time_ms: float | None

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class GateValue:
    """One custom gate (`analysis.metrics[]`) measured: the candidate's and the stable's
    values (None when the query returned nothing), or why it could not be measured."""

    name: str
    candidate: float | None
    stable: float | None = None
    error: str | None = None


def utc(t: datetime) -> datetime:
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def parse_time(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def seconds_since(text: str, now: datetime) -> float:
    """Seconds from the RFC 3339 time `text` to `now`."""
    return (utc(now) - parse_time(text)).total_seconds()


def analysis_record(analysis: AnalysisResult, now: datetime, step: int, early: bool) -> dict:
    """status.rollout.lastAnalysis: the verdict, its finite measurements and reasons."""
    return {
        "verdict": analysis.verdict,
        "early": early,
        "measurements": {
            k: round(v, 6) for k, v in analysis.measurements.items() if math.isfinite(v)
        },
        "reasons": list(analysis.reasons),
        "step": step,
        "time": rfc3339(now, microseconds=True),
    }


def weights(spec: LanguageModelSpec, assign: dict[str, int]) -> dict[str, int]:
    """Every spec version's weight: `assign`'s, 0 for the others."""
    out = {v.name: 0 for v in spec.versions}
    out.update(assign)
    return out


def desired_key(spec: LanguageModelSpec, name: str) -> str:
    """Content key of the artifact version `name` should serve (what the converter builds)."""
    return conversion_request(spec, spec.version(name)).key()


def serves_desired(
    spec: LanguageModelSpec, observed: dict[str, VersionObservation], name: str
) -> bool:
    """Ready pods serving the artifact the spec asks for now.

    While a changed version converts, its pods still serve the previous artifact (the last
    good one); that artifact is not what a rollout is about, so a version only counts as
    ready once it serves the desired content key.
    """
    v = observed.get(name)
    return bool(v and v.ready and v.artifact_key == desired_key(spec, name))
