"""The rollout decision: which weights to route now, and what to do next.

`decide()` is pure: it reads the spec, the last `status.rollout` (and `status.experiment`),
what is observed of each version (ready? which artifact?) and the clock passed in, and returns
a `Decision`. It dispatches on spec.rollout.strategy:

* Manual (or no spec.rollout): the versions' `traffic` fields are routed exactly.
* Canary and BlueGreen: the state machine of `lmo.decide.canary`.
* Experiment: the A/B experiment of `lmo.decide.experiment`.

The shared words (`Decision`, `VersionObservation`, ...) live in `lmo.decide.vocabulary`
and are re-exported here for the callers of `decide`.
"""

from __future__ import annotations

from datetime import datetime

from lmo.api import ExperimentStatus, LanguageModelSpec, RolloutStatus, Strategy
from lmo.api import parse_duration  # noqa: F401  (re-exported, as before)
from lmo.decide import canary
from lmo.decide import experiment as experiments
from lmo.decide.canary import (  # noqa: F401  (re-exported: the rollout's vocabulary)
    EARLY_CHECK_MIN_SECONDS,
    analysis_window,
    early_check_interval,
    pick_candidate,
    pick_stable,
    rollout_hash,
)
from lmo.decide.vocabulary import (  # noqa: F401
    NONE,
    NOT_STARTED,
    WAIT_REQUEUE_SECONDS,
    AnalysisResult,
    Decision,
    VersionObservation,
    desired_key,
    parse_time,
    serves_desired,
    step_label,
    utc,
)
from lmo.weights import MANUAL_NOTE, hands_over  # noqa: F401


def decide(
    spec: LanguageModelSpec,
    current: RolloutStatus | None,
    versions: list[VersionObservation],
    now: datetime,
    analysis: AnalysisResult | None = None,
    experiment: ExperimentStatus | None = None,
) -> Decision:
    """The weights to route now and the next status.rollout (see the module docstring);
    `experiment` is the last status.experiment (strategy Experiment)."""
    now = utc(now)
    strategy = spec.rollout.strategy if spec.rollout is not None else Strategy.MANUAL.value
    if strategy == Strategy.MANUAL.value:
        return Decision(traffic=spec.effective_traffic(), rollout=None)
    observed = {v.name: v for v in versions}
    if strategy == Strategy.EXPERIMENT.value:
        return experiments.decide(
            spec, current, experiment, observed,
            lambda name: serves_desired(spec, observed, name), now, analysis,
        )
    return canary.decide(spec, current, observed, now, analysis)
