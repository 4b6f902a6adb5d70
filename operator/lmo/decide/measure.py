"""Measure one rollout step: Triton metrics from Prometheus, plus golden-output drift.

`analyse()` reads, for the candidate and the stable version over the step's window:

* requests and failures: `increase()` of `nv_inference_request_success` and
  `nv_inference_request_failure` per model, taken at the model with the most requests (the
  entry model; an ensemble's composing models would otherwise count a request twice);
* latency: p99 from `nv_inference_request_duration` histograms or the
  `nv_inference_request_summary_us{quantile="0.99"}` summary (Triton 2.51 exports it with
  `--metrics-config summary_latencies=true`; the highest value seen in the window), else
  the mean request duration (`nv_inference_request_duration_us` / `nv_inference_count`), per
  model, the slowest model (the entry model's duration includes its composing models);
* queue time: `nv_inference_queue_duration_us` / `nv_inference_count`, per model, the worst.

An unreachable Prometheus makes the step "inconclusive". With `replay` targets and
`maxOutputDrift` set, the golden inputs are replayed against both versions (lmo.replay) and a
drift above the threshold fails the step. `analysis.metrics[]` adds the user's own gates
(`measure_gates`): PromQL with {{version}} {{namespace}} {{name}} {{window}} filled in,
against max / min / the stable version's value; a gate that cannot be measured fails.
`lmo.decide.judge` decides on all of it.
"""

from __future__ import annotations

import logging
import math

from lmo.api import Analysis, MetricGate
from lmo.decide.judge import judge
from lmo.decide.outcomes import FEEDBACK_MODEL
from lmo.decide.prometheus import (
    Prometheus,
    PrometheusError,
    fill,
    one_value,
    per_model,
    promql_range,
    selector,
)
from lmo.decide.vocabulary import INCONCLUSIVE, AnalysisResult, GateValue, VersionMetrics
from lmo.replay import Drift, ReplayError, ReplayTargets, replay_drift

log = logging.getLogger("lmo.analysis")


def measure(
    prom: Prometheus, namespace: str, lm: str, version: str, window_seconds: float
) -> VersionMetrics:
    sel, w = selector(namespace, lm, version), promql_range(window_seconds)

    def increase(metric: str) -> dict[str, float]:
        return per_model(prom, f"sum by (model) (increase({metric}{sel}[{w}]))")

    success = increase("nv_inference_request_success")
    failure = increase("nv_inference_request_failure")
    count = increase("nv_inference_count")
    duration = increase("nv_inference_request_duration_us")
    queue = increase("nv_inference_queue_duration_us")

    # the feedback model's reports are not answers: a client's bad report is no error of
    # the version (lmo.decide.experiment)
    models = (set(success) | set(failure)) - {FEEDBACK_MODEL}
    totals = {m: success.get(m, 0.0) + failure.get(m, 0.0) for m in models}
    entry = max(totals, key=lambda m: (totals[m], m)) if totals else None
    requests_ = totals.get(entry, 0.0) if entry is not None else 0.0
    failures = failure.get(entry, 0.0) if entry is not None else 0.0

    def worst_ratio(num: dict[str, float]) -> float | None:
        ratios = [num[m] / count[m] for m in num if count.get(m, 0.0) > 0]
        return max(ratios) / 1000.0 if ratios else None

    p99 = _p99_ms(prom, sel, w)
    mean = worst_ratio(duration)
    return VersionMetrics(
        requests=requests_,
        failures=failures,
        latency_ms=p99 if p99 is not None else mean,
        latency_is_p99=p99 is not None,
        queue_time_ms=worst_ratio(queue),
    )


def _p99_ms(prom: Prometheus, sel: str, w: str) -> float | None:
    """p99 request latency (ms) from Triton histograms or summaries, when it exports them."""
    queries = [
        # histograms (milliseconds buckets), the slowest model
        "max(histogram_quantile(0.99, sum by (model, le) "
        f"(rate(nv_inference_request_duration_bucket{sel}[{w}]))))",
        # summaries (--metrics-config summary_latencies=true), microseconds
        f'max(max_over_time(nv_inference_request_summary_us{{quantile="0.99",{sel[1:-1]}}}[{w}]))'
        " / 1000",
    ]
    for q in queries:
        values = [v for _, v in prom.query(q) if math.isfinite(v)]
        if values:
            return max(values)
    return None


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
    """Judge the candidate over the last `window_seconds`, measured by Prometheus (see the
    module docstring); `judge` decides, as it does for `lmo up`'s Triton /metrics."""
    if not analysis.prometheus_url:
        return AnalysisResult(
            INCONCLUSIVE, {}, ["spec.rollout.analysis.prometheusUrl is not set: nothing to judge"]
        )
    prom = Prometheus(analysis.prometheus_url)
    try:
        cand = measure(prom, namespace, lm, candidate, window_seconds)
        base = measure(prom, namespace, lm, stable, window_seconds)
    except PrometheusError as err:
        log.warning("analysis of %s/%s %s: %s", namespace, lm, candidate, err)
        return AnalysisResult(INCONCLUSIVE, {}, [str(err)])
    drift = golden_drift(replay, analysis) if cand.requests >= analysis.min_requests else None
    gates = measure_gates(prom, analysis.metrics, namespace, lm, candidate, stable,
                          window_seconds) if analysis.metrics else []
    return judge(analysis, candidate, cand, base, window_seconds, drift, gates)
