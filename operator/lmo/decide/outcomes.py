"""An experiment's outcome counts: how often each arm succeeded since the experiment started.

The counts are lmo's feedback counters (the feedback model in each version's Triton on the
cluster, the front door under `lmo up`; both export `lmo_runtime.feedback.SAMPLES` and
`SUCCESSES` with the labels namespace, lmo_model, lmo_version) or the spec's own
successQuery / totalQuery, read with the same PromQL in both runtimes.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from lmo.api import Experiment, ExperimentOutcome, LanguageModelSpec
from lmo.decide.prometheus import Prometheus, PrometheusError, fill, one_value
from lmo.decide.vocabulary import AnalysisResult, parse_time
from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL
from lmo_runtime.feedback import SAMPLES as FEEDBACK_SAMPLES
from lmo_runtime.feedback import SUCCESSES as FEEDBACK_SUCCESSES

__all__ = ["FEEDBACK_MODEL", "FEEDBACK_SAMPLES", "FEEDBACK_SUCCESSES", "FEEDBACK_SUCCESS_QUERY",
           "FEEDBACK_TOTAL_QUERY", "arms_of", "query_outcomes", "settings_of", "with_outcomes"]

FEEDBACK_SUCCESS_QUERY = (
    f'sum(increase({FEEDBACK_SUCCESSES}{{namespace="{{{{namespace}}}}",lmo_model="{{{{name}}}}",'
    f'lmo_version="{{{{version}}}}"}}[{{{{window}}}}]))'
)
FEEDBACK_TOTAL_QUERY = FEEDBACK_SUCCESS_QUERY.replace(FEEDBACK_SUCCESSES, FEEDBACK_SAMPLES)


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


def query_outcomes(
    url: str, outcome: ExperimentOutcome, namespace: str, lm: str, versions: list[str],
    window_seconds: float,
) -> dict[str, tuple[float, float]]:
    """version -> (samples, successes) over the window: the spec's totalQuery and
    successQuery, or lmo's feedback counters (the same queries under lmo up and on the
    cluster). Raises PrometheusError when Prometheus cannot answer."""
    prom = Prometheus(url)
    total = outcome.total_query or FEEDBACK_TOTAL_QUERY
    success = outcome.success_query or FEEDBACK_SUCCESS_QUERY
    out = {}
    for v in versions:
        n = one_value(prom, fill(total, namespace, lm, v, window_seconds)) or 0.0
        s = one_value(prom, fill(success, namespace, lm, v, window_seconds)) or 0.0
        out[v] = (n, s)
    return out


def with_outcomes(
    result: AnalysisResult, spec: LanguageModelSpec, namespace: str, lm: str,
    started_at: str | None, now: datetime,
) -> AnalysisResult:
    """An Experiment's analysis with its outcome counts since it started, read from
    Prometheus (`query_outcomes`); without counts, and saying why, when Prometheus cannot
    answer (the experiment then skips this look)."""
    assert spec.rollout is not None
    since = parse_time(started_at) if started_at else now
    try:
        counts = query_outcomes(
            spec.rollout.analysis.prometheus_url or "", settings_of(spec).outcome, namespace, lm,
            list(arms_of(spec)), max(1.0, (now - since).total_seconds()))
    except PrometheusError as err:
        return dataclasses.replace(result, reasons=[*result.reasons, str(err)])
    return dataclasses.replace(result, outcomes=counts)
