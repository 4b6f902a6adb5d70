"""Judging a rollout step: the names callers use, from `lmo.decide`.

The cluster's analysis is `analyse` (`lmo.decide.measure`: Prometheus numbers and the golden
replay), the gates are applied by `judge` (`lmo.decide.judge`) in both runtimes, and an
experiment's outcome counts come from `lmo.decide.outcomes`. The operator looks `analyse` up
here when it starts, so a test may stand in for it.
"""

from lmo.decide.judge import judge  # noqa: F401
from lmo.decide.measure import analyse, golden_drift, measure, measure_gates  # noqa: F401
from lmo.decide.outcomes import FEEDBACK_MODEL, query_outcomes, with_outcomes  # noqa: F401
from lmo.decide.prometheus import (  # noqa: F401
    Prometheus,
    QUERY_TIMEOUT_SECONDS,
    PrometheusError,
    fill,
    selector,
)
from lmo.decide.vocabulary import (  # noqa: F401
    FAIL,
    INCONCLUSIVE,
    PASS,
    AnalysisResult,
    GateValue,
    VersionMetrics,
)
