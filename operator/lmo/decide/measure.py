"""Measure one rollout step, on the cluster and under `lmo up` alike.

A *source* gives one version's numbers over the step's window (`VersionMetrics`):

* on the cluster, `prometheus_source`: `increase()` of Triton's counters per model and the
  highest `nv_inference_request_summary_us{quantile="0.99"}` of the window (Triton's p99
  summary, `--metrics-config summary_latencies=true`; histograms are read first when a server
  exports them), over the series every Triton pod's scrape carries (`namespace`,
  `lmo_model`, `lmo_version`);
* under `lmo up`, the difference of two scrapes of each server's /metrics (the controller's).

Both go through `lmo.decide.triton.version_metrics`, so the entry model, the p99 and its
fallback (the mean request duration of a server without a summary) are chosen by one rule.
`assess` then does the rest for both runtimes: a source that cannot answer makes the step
"inconclusive"; the golden replay (`replay_targets`, one builder for both) runs once the
candidate has `minRequests`, and a drift gate that cannot run fails the step at once, saying
why; `analysis.metrics[]` are measured on the spec's Prometheus (`measure_gates`: PromQL with
{{version}} {{namespace}} {{name}} {{window}} filled in; a gate that cannot be measured
fails); `lmo.decide.judge` decides on all of it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from lmo.api import Analysis, LanguageModelSpec, MetricGate
from lmo.decide.judge import judge
from lmo.decide.prometheus import (
    Prometheus,
    PrometheusError,
    fill,
    one_value,
    per_model,
    promql_range,
    selector,
)
from lmo.decide.triton import COUNTERS, Snapshot, version_metrics
from lmo.decide.vocabulary import FAIL, INCONCLUSIVE, AnalysisResult, GateValue, VersionMetrics
from lmo.replay import Drift, ReplayError, ReplayTargets, replay_drift
from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL
from lmo_runtime.manifest import ENTRY_MODEL

log = logging.getLogger("lmo.decide.measure")

# One version's numbers over the window (raises PrometheusError when it cannot answer).
Source = Callable[[str], VersionMetrics]


def measure(
    prom: Prometheus, namespace: str, lm: str, version: str, window_seconds: float
) -> VersionMetrics:
    """One version's numbers over the window, from Prometheus."""
    sel, w = selector(namespace, lm, version), promql_range(window_seconds)
    increases = {
        key: per_model(prom, f"sum by (model) (increase({metric}{sel}[{w}]))")
        for metric, key in COUNTERS.items()
    }
    models = {
        m: Snapshot(**{key: values.get(m, 0.0) for key, values in increases.items()})
        for m in set().union(*increases.values())
    }
    return version_metrics(models, _p99_ms(prom, sel, w))


def prometheus_source(prom: Prometheus, namespace: str, lm: str, window_seconds: float) -> Source:
    return lambda version: measure(prom, namespace, lm, version, window_seconds)


def _p99_ms(prom: Prometheus, sel: str, w: str) -> float | None:
    """p99 request latency (ms) from Triton histograms or summaries, when it exports them:
    the slowest answering model (the feedback model's reports are no answers)."""
    answers = f'{sel[1:-1]},model!="{FEEDBACK_MODEL}"'
    queries = [
        # histograms (milliseconds buckets), the slowest model
        "max(histogram_quantile(0.99, sum by (model, le) "
        f"(rate(nv_inference_request_duration_bucket{{{answers}}}[{w}]))))",
        # summaries (--metrics-config summary_latencies=true), microseconds
        f'max(max_over_time(nv_inference_request_summary_us{{quantile="0.99",{answers}}}[{w}]))'
        " / 1000",
    ]
    for q in queries:
        values = [v for _, v in prom.query(q) if math.isfinite(v)]
        if values:
            return max(values)
    return None


def replay_targets(
    spec: LanguageModelSpec, candidate: str, artifact: Mapping[str, Any], candidate_url: str,
    stable_url: str,
) -> ReplayTargets | str | None:
    """Where and what to replay for the drift gate: the candidate artifact's golden inputs
    (`artifact` in the shape of status.versions[].artifact: goldenInputs, entryModel, key),
    sent to both versions; None when `analysis.maxOutputDrift` is not set; why it cannot run
    when it is set but the artifact recorded no golden inputs (the step then fails)."""
    assert spec.rollout is not None
    if spec.rollout.analysis.max_output_drift is None:
        return None
    inputs = [t for t in artifact.get("goldenInputs") or [] if isinstance(t, str)]
    if not inputs:
        return (
            f"spec.rollout.analysis.maxOutputDrift is set but artifact "
            f"{(artifact.get('key') or '')[:8]} of {candidate} has no golden inputs "
            f"(status.versions[].artifact.goldenInputs; artifacts converted by an older lmo "
            f"lack them), so its output drift cannot be measured; remove maxOutputDrift to "
            f"roll out on the metrics alone (the change starts the rollout again), or convert "
            f"the candidate again under a new version name (its conversion records them)"
        )
    entry = artifact.get("entryModel") or ENTRY_MODEL[spec.task]
    return ReplayTargets(candidate_url=candidate_url, stable_url=stable_url, entry_model=entry,
                         inputs=tuple(inputs))


def cannot_replay(why: str) -> AnalysisResult:
    """The step's result when its drift gate cannot run: a gate that cannot run must not pass."""
    return AnalysisResult(FAIL, {}, [why])


def assess(
    analysis: Analysis,
    source: Source,
    candidate: str,
    stable: str,
    window_seconds: float,
    replay: ReplayTargets | str | None = None,
    gates: Callable[[], list[GateValue]] | None = None,
) -> AnalysisResult:
    """Judge the candidate's step from `source`'s numbers (see the module docstring): the one
    path of both runtimes. `gates` measures `analysis.metrics[]` when there are any."""
    if isinstance(replay, str):
        return cannot_replay(replay)
    try:
        cand, base = source(candidate), source(stable)
    except PrometheusError as err:
        log.warning("analysis of %s: %s", candidate, err)
        return AnalysisResult(INCONCLUSIVE, {}, [str(err)])
    drift = golden_drift(replay, analysis) if cand.requests >= analysis.min_requests else None
    values = gates() if analysis.metrics and gates is not None else []
    return judge(analysis, candidate, cand, base, window_seconds, drift, values)


def golden_drift(replay: ReplayTargets | None, analysis: Analysis) -> Drift | str | None:
    """The golden replay's drift, or why it could not be measured (a string, which fails the
    drift gate: a gate that cannot run must not pass); None when `maxOutputDrift` is unset."""
    if analysis.max_output_drift is None or replay is None:
        return None
    try:
        return replay_drift(replay)
    except ReplayError as err:
        return f"golden replay failed: {err}"


def measure_gates(
    prom: Prometheus, gates: list[MetricGate], namespace: str, lm: str, candidate: str,
    stable: str, window_seconds: float,
) -> list[GateValue]:
    out = []
    for g in gates:
        try:
            cand = one_value(prom, fill(g.query, namespace, lm, candidate, window_seconds))
            base = (one_value(prom, fill(g.query, namespace, lm, stable, window_seconds))
                    if g.max_increase_over_stable is not None else None)
        except PrometheusError as err:
            out.append(GateValue(g.name, None, None, str(err)))
            continue
        out.append(GateValue(g.name, cand, base))
    return out


def analyse(
    analysis: Analysis,
    namespace: str,
    lm: str,
    candidate: str,
    stable: str,
    window_seconds: float,
    replay: ReplayTargets | None = None,
) -> AnalysisResult:
    """The cluster's analysis of a step: `assess` on Prometheus numbers."""
    if not analysis.prometheus_url:
        return AnalysisResult(
            INCONCLUSIVE, {}, ["spec.rollout.analysis.prometheusUrl is not set: nothing to judge"]
        )
    prom = Prometheus(analysis.prometheus_url)
    return assess(
        analysis, prometheus_source(prom, namespace, lm, window_seconds), candidate, stable,
        window_seconds, replay,
        lambda: measure_gates(prom, analysis.metrics, namespace, lm, candidate, stable,
                              window_seconds),
    )
