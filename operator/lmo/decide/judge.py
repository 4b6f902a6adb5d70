"""Judge one rollout step: the gates of `spec.rollout.analysis` applied to measured numbers.

Pure, and the one place the gates are applied: the operator feeds it Prometheus numbers, `lmo
up` the differences of Triton /metrics snapshots (both through `lmo.decide.measure`).

Verdict: fewer candidate requests than `minRequests` -> "inconclusive" (a step with no
traffic proves nothing). Any threshold exceeded -> "fail". Otherwise "pass". Every reason
states the measured value against its threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lmo.api import Analysis
from lmo.decide.vocabulary import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    AnalysisResult,
    GateValue,
    VersionMetrics,
)

if TYPE_CHECKING:
    from lmo.replay import Drift

Gate = Callable[[bool, str], None]


def _latency_name(m: VersionMetrics) -> str:
    return "latency_p99_ms" if m.latency_is_p99 else "latency_mean_ms"


def _measurements(cand: VersionMetrics, base: VersionMetrics, window_seconds: float) -> dict[str, float]:
    m: dict[str, float] = {
        "requests": round(cand.requests, 3),
        "failures": round(cand.failures, 3),
        "error_ratio": cand.error_ratio,
        "stable_requests": round(base.requests, 3),
        "stable_error_ratio": base.error_ratio,
        "window_seconds": float(window_seconds),
    }
    if cand.latency_ms is not None:
        m[_latency_name(cand)] = cand.latency_ms
    if base.latency_ms is not None:
        m["stable_" + _latency_name(base)] = base.latency_ms
    if cand.queue_time_ms is not None:
        m["queue_time_ms"] = cand.queue_time_ms
    return m


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

    `drift` is the golden replay's result, or why it could not run (the step then fails
    with that reason), or None when no drift gate applies. `gates` are the measured values
    of `analysis.metrics[]` (`measure_gates`, on Prometheus in both runtimes).
    """
    m = _measurements(cand, base, window_seconds)
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

    _judge_service(analysis, cand, base, gate)
    _judge_drift(analysis, drift, m, gate)
    if analysis.metrics:
        _judge_gates(analysis, gates or [], m, gate)
    if failed:
        return AnalysisResult(FAIL, m, failed)
    return AnalysisResult(PASS, m, passed)


def _judge_service(analysis: Analysis, cand: VersionMetrics, base: VersionMetrics, gate: Gate) -> None:
    """Error ratio, latency and queue time against their thresholds."""
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


def _judge_drift(analysis: Analysis, drift: Drift | str | None, m: dict[str, float], gate: Gate) -> None:
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


def _judge_gates(analysis: Analysis, values: list[GateValue], m: dict[str, float], gate: Gate) -> None:
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
