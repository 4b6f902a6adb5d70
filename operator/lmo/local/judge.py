"""The canary gates of `spec.rollout.analysis`, applied to locally measured numbers.

The same thresholds, measurement names and reasons as the cluster's `lmo.analysis`; the
numbers come from the candidate's and the stable's Triton /metrics over the step instead of
from Prometheus. Triton's default metrics have no latency histograms, so `maxLatencyP99Ms`
is checked against the mean latency (as the API documents for that case). With
`maxOutputDrift` the golden inputs recorded at conversion are replayed against both local
servers (`lmo.replay`), exactly as on the cluster.
"""

from __future__ import annotations

from lmo.analysis import FAIL, INCONCLUSIVE, PASS, AnalysisResult
from lmo.api import Analysis
from lmo.local.tritonmetrics import Snapshot


def judge(
    analysis: Analysis,
    candidate: str,
    cand: Snapshot,
    base: Snapshot,
    window_seconds: float,
    replay=None,
) -> AnalysisResult:
    """pass / fail / inconclusive for one step, every reason a value against its threshold."""
    m: dict[str, float] = {
        "requests": cand.requests,
        "failures": cand.failure,
        "error_ratio": cand.error_ratio,
        "stable_requests": base.requests,
        "stable_error_ratio": base.error_ratio,
        "window_seconds": float(window_seconds),
    }
    if cand.latency_mean_ms is not None:
        m["latency_mean_ms"] = cand.latency_mean_ms
    if base.latency_mean_ms is not None:
        m["stable_latency_mean_ms"] = base.latency_mean_ms
    if cand.queue_time_ms is not None:
        m["queue_time_ms"] = cand.queue_time_ms
    if cand.requests < analysis.min_requests:
        return AnalysisResult(
            INCONCLUSIVE,
            m,
            [f"{candidate} served {cand.requests:.0f} requests in {window_seconds:.0f}s "
             f"< minRequests {analysis.min_requests}"],
        )
    failed: list[str] = []
    passed: list[str] = []

    def gate(ok: bool, text: str) -> None:
        (passed if ok else failed).append(text)

    ok = cand.error_ratio <= analysis.max_error_rate
    gate(ok, f"error ratio {cand.error_ratio:.4f} ({cand.failure:.0f}/{cand.requests:.0f}) "
             f"{'<=' if ok else '>'} maxErrorRate {analysis.max_error_rate:.4f} "
             f"(stable {base.error_ratio:.4f})")
    if analysis.max_latency_p99_ms is not None and cand.latency_mean_ms is not None:
        ok = cand.latency_mean_ms <= analysis.max_latency_p99_ms
        gate(ok, f"mean latency (no histograms) {cand.latency_mean_ms:.1f}ms "
                 f"{'<=' if ok else '>'} maxLatencyP99Ms {analysis.max_latency_p99_ms:g}")
    if analysis.max_queue_time_ms is not None and cand.queue_time_ms is not None:
        ok = cand.queue_time_ms <= analysis.max_queue_time_ms
        gate(ok, f"queue time {cand.queue_time_ms:.2f}ms {'<=' if ok else '>'} "
                 f"maxQueueTimeMs {analysis.max_queue_time_ms:g}")
    if replay is not None and analysis.max_output_drift is not None:
        from lmo.replay import ReplayError, replay_drift

        try:
            drift = replay_drift(replay)
        except ReplayError as err:
            gate(False, f"golden replay failed: {err}")
        else:
            m["output_drift"] = drift.drift
            m["golden_inputs"] = float(drift.samples)
            ok = drift.drift <= analysis.max_output_drift
            gate(ok, f"output drift {drift.drift:.4f} ({drift.metric}, {drift.samples} golden "
                     f"inputs) {'<=' if ok else '>'} maxOutputDrift {analysis.max_output_drift:g}")
    if failed:
        return AnalysisResult(FAIL, m, failed)
    return AnalysisResult(PASS, m, passed)
