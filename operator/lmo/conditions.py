"""metav1.Condition helpers for `status.conditions` (pure: the clock is a parameter).

Conditions are plain dicts in the API's JSON shape (type, status, reason, message,
lastTransitionTime, observedGeneration), a list-map keyed by `type`. `lastTransitionTime`
changes only when `status` changes, so a reconcile that finds nothing new produces the very
same list and the status write is skipped (cert-manager `pkg/api/util/conditions.go`).
`Ready` is the aggregate of Converted, Deployed and Routed (KServe's
`inference_service_status.go`). Every reason lmo writes is a CamelCase constant here.
"""

from __future__ import annotations

from datetime import datetime, timezone

CONVERTED = "Converted"
DEPLOYED = "Deployed"
ROUTED = "Routed"
READY = "Ready"
STICKY = "Sticky"  # spec.routing.sticky on the cluster (not part of Ready)
COMPONENTS = (CONVERTED, DEPLOYED, ROUTED)
ORDER = (*COMPONENTS, READY)

TRUE = "True"
FALSE = "False"
UNKNOWN = "Unknown"


# Event types (core/v1 Event.type)
NORMAL = "Normal"
WARNING = "Warning"


class Reason:
    """CamelCase reasons of conditions and Events, in one place (the operator, the rollout
    state machine and `lmo up` alike)."""

    INVALID_SPEC = "InvalidSpec"
    SECRET_MISSING = "SecretMissing"
    PENDING = "Pending"
    CONVERTING = "Converting"
    CONVERTED = "Converted"
    CONVERSION_FAILED = "ConversionFailed"
    CONVERSION_REFUSED = "ConversionRefused"
    DEPLOYING = "Deploying"
    DEPLOYED = "Deployed"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    ROUTED = "Routed"
    ROUTE_PENDING = "RoutePending"
    READY = "Ready"
    VERSION_READY = "VersionReady"
    NOT_READY = "NotReady"
    NOT_SERVABLE = "NotServable"
    APPLY_REFUSED = "ApplyRefused"
    # the rollout state machine (lmo.rollout)
    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_RESTARTED = "RolloutRestarted"
    ROLLOUT_STEP = "RolloutStep"
    ROLLOUT_PAUSED = "RolloutPaused"
    ROLLOUT_RESUMED = "RolloutResumed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ROLLOUT_SUCCEEDED = "RolloutSucceeded"
    ROLLOUT_ROLLED_BACK = "RolloutRolledBack"
    CANDIDATE_NOT_READY = "CandidateNotReady"
    STABLE_REMOVED = "StableRemoved"
    # experiments (lmo.decide.experiment)
    EXPERIMENT_STARTED = "ExperimentStarted"
    EXPERIMENT_DECIDED = "ExperimentDecided"
    EXPERIMENT_INCONCLUSIVE = "ExperimentInconclusive"
    EXPERIMENT_STOPPED = "ExperimentStopped"
    SESSION_PERSISTENCE = "SessionPersistence"
    SESSION_PERSISTENCE_UNAVAILABLE = "SessionPersistenceUnavailable"
    # lmo up
    VERSION_NOT_READY = "VersionNotReady"
    TRAFFIC_SET = "TrafficSet"
    TRITON_EXITED = "TritonExited"
    TRITON_RESTART_FAILED = "TritonRestartFailed"
    SPEC_APPLIED = "SpecApplied"
    APPLY_FAILED = "ApplyFailed"


def rfc3339(now: datetime, *, microseconds: bool = False) -> str:
    """`2026-01-02T03:04:05Z`: the metav1.Time format (UTC, whole seconds; a naive `now` is
    UTC). With `microseconds`, a time that has them keeps them (`...05.123456Z`, the rollout's
    step and history times); a whole second is still written `...05Z`."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now = now.astimezone(timezone.utc)
    if microseconds:
        return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ").replace(".000000Z", "Z")
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def get_condition(conditions: list[dict], type_: str) -> dict | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: list[dict], type_: str) -> bool:
    c = get_condition(conditions, type_)
    return c is not None and c.get("status") == TRUE


def set_condition(
    conditions: list[dict],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[dict]:
    """A new list with condition `type_` set; the input is not modified.

    lastTransitionTime is kept when the status is unchanged (a new reason or message alone
    is not a transition). Conditions keep the canonical order Converted, Deployed, Routed,
    Ready, then any other type in the order found.
    """
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    old = get_condition(conditions, type_)
    since = old["lastTransitionTime"] if old and old.get("status") == status else rfc3339(now)
    new = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        new["observedGeneration"] = generation
    out = [c for c in conditions if c.get("type") != type_] + [new]
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(out, key=lambda c: rank.get(c.get("type"), len(ORDER)))


def aggregate_ready(conditions: list[dict], generation: int | None, now: datetime) -> list[dict]:
    """Set `Ready` from the component conditions.

    Ready is True only when Converted, Deployed and Routed are all True; otherwise it is
    False (Unknown when a component has not been judged yet) with the reason and message of
    the first component that is not True, so `kubectl wait --for=condition=Ready` and a
    person reading `kubectl describe` see the same cause.
    """
    for type_ in COMPONENTS:
        c = get_condition(conditions, type_)
        if c is None:
            return set_condition(
                conditions, READY, UNKNOWN, Reason.PENDING, f"{type_} not judged yet",
                generation, now,
            )
        if c["status"] != TRUE:
            status = FALSE if c["status"] == FALSE else UNKNOWN
            return set_condition(
                conditions, READY, status, c["reason"], c.get("message", ""), generation, now
            )
    return set_condition(
        conditions, READY, TRUE, Reason.READY, "all versions are serving as routed",
        generation, now,
    )
