"""A/B experiments (`strategy: Experiment`): the names callers use, from `lmo.decide`.

The strategy is `lmo.decide.experiment`, its statistics `lmo.decide.statistics`, the outcome
counts `lmo.decide.outcomes`; `lmo.rollout.decide` dispatches to it.
"""

from lmo.decide.experiment import (  # noqa: F401
    arm,
    decide,
    describe_lift,
    evaluate,
    experiment_hash,
    report_lines,
)
from lmo.decide.outcomes import (  # noqa: F401
    FEEDBACK_MODEL,
    FEEDBACK_SAMPLES,
    FEEDBACK_SUCCESS_QUERY,
    FEEDBACK_SUCCESSES,
    FEEDBACK_TOTAL_QUERY,
    arms_of,
    settings_of,
)
from lmo.decide.statistics import Test, mixing_ratio, sequential_test  # noqa: F401
