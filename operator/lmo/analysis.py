"""Judge one rollout step: Triton metrics from Prometheus, plus golden-output drift.

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

Series are selected with the labels every Triton pod's scrape carries (the chart relabels the
pod labels `lmo.dev/model` and `lmo.dev/version`): `namespace`, `lmo_model`, `lmo_version`.

Verdict: fewer candidate requests than `minRequests` -> "inconclusive" (a step with no
traffic proves nothing; so does an unreachable Prometheus). Any threshold exceeded ->
"fail". Otherwise "pass". Every reason states the measured value against its threshold.
With `replay` targets and `maxOutputDrift` set, the golden inputs are replayed against both
versions (lmo.replay) and a drift above the threshold fails the step.

`analysis.metrics[]` adds the user's own gates (`measure_gates`, judged in `judge`): PromQL
with {{version}} {{namespace}} {{name}} {{window}} filled in (`fill`), against max / min /
the stable version's value; a gate that cannot be measured fails. For strategy Experiment,
`with_outcomes` adds each version's outcome counts since the experiment started
(`query_outcomes`: lmo's feedback counters or the spec's successQuery / totalQuery), which
`lmo.experiment` decides on.

Talks HTTP to Prometheus with `requests`; never imports kopf or kubernetes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import requests

from lmo.api import Analysis, ExperimentOutcome, LanguageModelSpec, MetricGate
from lmo.experiment import FEEDBACK_MODEL

if TYPE_CHECKING:
    from lmo.replay import Drift, ReplayTargets

log = logging.getLogger(__name__)

PASS = "pass"
FAIL = "fail"
INCONCLUSIVE = "inconclusive"
QUERY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class AnalysisResult:
    verdict: str  # "pass" | "fail" | "inconclusive"
    measurements: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    # Experiment: version -> (samples, successes) since the experiment started
    outcomes: dict[str, tuple[float, float]] = field(default_factory=dict)


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query (unreachable, bad query, error status)."""


class Prometheus:
    """A minimal client of the Prometheus HTTP API (instant queries)."""

    def __init__(self, url: str, timeout: float = QUERY_TIMEOUT_SECONDS):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Instant vector: (labels, value) per series; a scalar comes back as one series."""
        try:
            resp = requests.get(
                f"{self.url}/api/v1/query", params={"query": promql}, timeout=self.timeout
            )
            body = resp.json()
        except (requests.RequestException, ValueError) as err:
            raise PrometheusError(f"Prometheus at {self.url} did not answer: {err}") from err
        if body.get("status") != "success":
            raise PrometheusError(
                f"Prometheus at {self.url} refused the query {promql!r}: "
                f"{body.get('errorType', '')} {body.get('error', resp.status_code)}"
            )
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]


def selector(namespace: str, lm: str, version: str) -> str:
    return f'{{namespace="{namespace}",lmo_model="{lm}",lmo_version="{version}"}}'


def _range(window_seconds: float) -> str:
    return f"{max(1, int(math.ceil(window_seconds)))}s"


def _per_model(prom: Prometheus, promql: str) -> dict[str, float]:
    return {
        labels.get("model", ""): value
        for labels, value in prom.query(promql)
        if math.isfinite(value)
    }


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


def measure(
    prom: Prometheus, namespace: str, lm: str, version: str, window_seconds: float
) -> VersionMetrics:
    sel, w = selector(namespace, lm, version), _range(window_seconds)

    def increase(metric: str) -> dict[str, float]:
        return _per_model(prom, f"sum by (model) (increase({metric}{sel}[{w}]))")

    success = increase("nv_inference_request_success")
    failure = increase("nv_inference_request_failure")
    count = increase("nv_inference_count")
    duration = increase("nv_inference_request_duration_us")
    queue = increase("nv_inference_queue_duration_us")

    # the feedback model's reports are not answers: a client's bad report is no error of
    # the version (lmo.experiment)
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
    from lmo.replay import ReplayError, replay_drift

    try:
        return replay_drift(replay)
    except ReplayError as err:
        return f"golden replay failed: {err}"


def fill(query: str, namespace: str, lm: str, version: str, window_seconds: float) -> str:
    """A user's PromQL with {{version}} {{namespace}} {{name}} {{window}} filled in."""
    return (query.replace("{{version}}", version).replace("{{namespace}}", namespace)
            .replace("{{name}}", lm).replace("{{window}}", _range(window_seconds)))


def _one_value(prom: Prometheus, promql: str) -> float | None:
    """The query's value (the sum when it returns several series); None without one."""
    values = [v for _, v in prom.query(promql) if math.isfinite(v)]
    return sum(values) if values else None


def query_outcomes(
    url: str, outcome: ExperimentOutcome, namespace: str, lm: str, versions: list[str],
    window_seconds: float,
) -> dict[str, tuple[float, float]]:
    """version -> (samples, successes) over the window: the spec's totalQuery and
    successQuery, or lmo's feedback counters (the same queries under lmo up and on the
    cluster). Raises PrometheusError when Prometheus cannot answer."""
    from lmo.experiment import FEEDBACK_SUCCESS_QUERY, FEEDBACK_TOTAL_QUERY

    prom = Prometheus(url)
    total = outcome.total_query or FEEDBACK_TOTAL_QUERY
    success = outcome.success_query or FEEDBACK_SUCCESS_QUERY
    out = {}
    for v in versions:
        n = _one_value(prom, fill(total, namespace, lm, v, window_seconds)) or 0.0
        s = _one_value(prom, fill(success, namespace, lm, v, window_seconds)) or 0.0
        out[v] = (n, s)
    return out


def with_outcomes(
    result: AnalysisResult, spec: LanguageModelSpec, namespace: str, lm: str,
    started_at: str | None, now: datetime,
) -> AnalysisResult:
    """An Experiment's analysis with its outcome counts since it started, read from
    Prometheus (`query_outcomes`); without counts, and saying why, when Prometheus cannot
    answer (the experiment then skips this look)."""
    import dataclasses

    from lmo.experiment import arms_of, settings_of
    from lmo.rollout import parse_time

    assert spec.rollout is not None
    since = parse_time(started_at) if started_at else now
    try:
        counts = query_outcomes(
            spec.rollout.analysis.prometheus_url or "", settings_of(spec).outcome, namespace, lm,
            list(arms_of(spec)), max(1.0, (now - since).total_seconds()))
    except PrometheusError as err:
        return dataclasses.replace(result, reasons=[*result.reasons, str(err)])
    return dataclasses.replace(result, outcomes=counts)


@dataclass(frozen=True)
class GateValue:
    """One custom gate (`analysis.metrics[]`) measured: the candidate's and the stable's
    values (None when the query returned nothing), or why it could not be measured."""

    name: str
    candidate: float | None
    stable: float | None = None
    error: str | None = None


def measure_gates(
    prom: Prometheus, gates: list[MetricGate], namespace: str, lm: str, candidate: str,
    stable: str, window_seconds: float,
) -> list[GateValue]:
    out = []
    for g in gates:
        try:
            cand = _one_value(prom, fill(g.query, namespace, lm, candidate, window_seconds))
            base = (_one_value(prom, fill(g.query, namespace, lm, stable, window_seconds))
                    if g.max_increase_over_stable is not None else None)
        except PrometheusError as err:
            out.append(GateValue(g.name, None, None, str(err)))
            continue
        out.append(GateValue(g.name, cand, base))
    return out


def _judge_gates(analysis: Analysis, values: list[GateValue], m: dict[str, float], gate) -> None:
    """Apply `analysis.metrics[]` to their measured values (a gate that cannot be measured
    fails: it must not pass unseen)."""
    by_name = {v.name: v for v in values}
    for g in analysis.metrics:
        v = by_name.get(g.name)
        if v is None or v.error is not None or v.candidate is None:
            why = v.error if v is not None and v.error else "its query returned no value"
            gate(False, f"{g.name}: cannot be measured ({why})")
            continue
        m[g.name] = v.candidate
        if g.max is not None:
            ok = v.candidate <= g.max
            gate(ok, f"{g.name} {v.candidate:.4g} {'<=' if ok else '>'} max {g.max:g}")
        if g.min is not None:
            ok = v.candidate >= g.min
            gate(ok, f"{g.name} {v.candidate:.4g} {'>=' if ok else '<'} min {g.min:g}")
        if g.max_increase_over_stable is not None:
            if v.stable is None:
                gate(False, f"{g.name}: the stable version's value cannot be measured (its "
                            "query returned no value)")
                continue
            m["stable_" + g.name] = v.stable
            rise = v.candidate - v.stable
            ok = rise <= g.max_increase_over_stable
            gate(ok, f"{g.name} {v.candidate:.4g} is {rise:+.4g} over the stable's "
                     f"{v.stable:.4g} {'<=' if ok else '>'} maxIncreaseOverStable "
                     f"{g.max_increase_over_stable:g}")


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


def judge(
    analysis: Analysis,
    candidate: str,
    cand: VersionMetrics,
    base: VersionMetrics,
    window_seconds: float,
    drift: Drift | str | None = None,
    gates: list[GateValue] | None = None,
) -> AnalysisResult:
    """pass / fail / inconclusive for one step, every reason a value against its threshold.

    Pure, and the one place the gates of `spec.rollout.analysis` are applied: the operator
    feeds it Prometheus numbers (`analyse`), `lmo up` the differences of Triton /metrics
    snapshots. `drift` is the golden replay's result, or why it could not run (the step then
    fails with that reason), or None when no drift gate applies. `gates` are the measured
    values of `analysis.metrics[]` (`measure_gates`, on Prometheus in both runtimes).
    """
    m: dict[str, float] = {
        "requests": round(cand.requests, 3),
        "failures": round(cand.failures, 3),
        "error_ratio": cand.error_ratio,
        "stable_requests": round(base.requests, 3),
        "stable_error_ratio": base.error_ratio,
        "window_seconds": float(window_seconds),
    }
    latency_name = "latency_p99_ms" if cand.latency_is_p99 else "latency_mean_ms"
    if cand.latency_ms is not None:
        m[latency_name] = cand.latency_ms
    if base.latency_ms is not None:
        m["stable_" + ("latency_p99_ms" if base.latency_is_p99 else "latency_mean_ms")] = base.latency_ms
    if cand.queue_time_ms is not None:
        m["queue_time_ms"] = cand.queue_time_ms

    if cand.requests < analysis.min_requests:
        return AnalysisResult(
            INCONCLUSIVE,
            m,
            [
                f"{candidate} served {cand.requests:.0f} requests in {window_seconds:.0f}s "
                f"< minRequests {analysis.min_requests}"
            ],
        )

    failed: list[str] = []
    passed: list[str] = []

    def gate(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    rel = ">" if cand.error_ratio > analysis.max_error_rate else "<="
    gate(
        rel == "<=",
        f"error ratio {cand.error_ratio:.4f} ({cand.failures:.0f}/{cand.requests:.0f}) {rel} "
        f"maxErrorRate {analysis.max_error_rate:.4f} (stable {base.error_ratio:.4f})",
    )
    if analysis.max_latency_p99_ms is not None and cand.latency_ms is not None:
        what = "p99 latency" if cand.latency_is_p99 else "mean latency (no histograms)"
        ok = cand.latency_ms <= analysis.max_latency_p99_ms
        gate(
            ok,
            f"{what} {cand.latency_ms:.1f}ms {'<=' if ok else '>'} maxLatencyP99Ms "
            f"{analysis.max_latency_p99_ms:g}",
        )
    if analysis.max_queue_time_ms is not None and cand.queue_time_ms is not None:
        ok = cand.queue_time_ms <= analysis.max_queue_time_ms
        gate(
            ok,
            f"queue time {cand.queue_time_ms:.2f}ms {'<=' if ok else '>'} maxQueueTimeMs "
            f"{analysis.max_queue_time_ms:g}",
        )
    if isinstance(drift, str):
        gate(False, drift)
    elif drift is not None and analysis.max_output_drift is not None:
        m["output_drift"] = drift.drift
        m["golden_inputs"] = float(drift.samples)
        ok = drift.drift <= analysis.max_output_drift
        gate(
            ok,
            f"output drift {drift.drift:.4f} ({drift.metric}, {drift.samples} golden inputs) "
            f"{'<=' if ok else '>'} maxOutputDrift {analysis.max_output_drift:g}",
        )
    if analysis.metrics:
        _judge_gates(analysis, gates or [], m, gate)
    if failed:
        return AnalysisResult(FAIL, m, failed)
    return AnalysisResult(PASS, m, passed)
