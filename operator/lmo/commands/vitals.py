"""The "last minute" lines of `lmo status`: per version request rate, error ratio and p99.

Cluster: Prometheus (the rollout analysis' own queries, `lmo.decide.measure.measure`, over 60 s)
at `--prometheus URL`, else spec.rollout.analysis.prometheusUrl. Local: `lmo up` samples
Triton's /metrics itself (`lmo.local.recent`) and reports `local.lastMinute`. Both give
`{version: {requestsPerSecond, errorRatio, p99Ms, latencyIsP99}}`; a number that is not at
hand (no Prometheus, no requests, a minute not yet sampled) is None and prints as "-",
never as a zero that would read as "idle and healthy".
"""

from __future__ import annotations

from typing import Any

from lmo.decide.measure import measure
from lmo.decide.prometheus import Prometheus, PrometheusError

WINDOW_SECONDS = 60.0


def cluster_last_minute(prometheus_url: str | None, namespace: str, name: str,
                        versions: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """(numbers per version, why there are none) from Prometheus."""
    if not prometheus_url:
        return {}, ("no Prometheus: pass --prometheus URL (or set "
                    "spec.rollout.analysis.prometheusUrl)")
    prom = Prometheus(prometheus_url, timeout=5.0)
    out: dict[str, dict[str, Any]] = {}
    for version in versions:
        try:
            m = measure(prom, namespace, name, version, WINDOW_SECONDS)
        except PrometheusError as err:
            return out, str(err)
        has = m.requests > 0
        out[version] = {
            "requestsPerSecond": m.requests / WINDOW_SECONDS,
            "errorRatio": m.error_ratio if has else None,
            "p99Ms": m.latency_ms if has else None,
            "latencyIsP99": m.latency_is_p99,
        }
    return out, None


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def lines(numbers: dict[str, dict[str, Any]], versions: list[str]) -> list[str]:
    """One compact line per version: `v1  last 1m: 3.2 req/s  errors 0.0%  p99 12.5 ms`."""
    out = []
    for v in versions:
        n = numbers.get(v) or {}
        errors = n.get("errorRatio")
        # the mean stands in where Triton exports no latency quantiles, and says so
        latency = "mean" if n.get("p99Ms") is not None and not n.get("latencyIsP99", True) \
            else "p99"
        out.append(
            f"{v}  last 1m: {_num(n.get('requestsPerSecond'), '.2f')} req/s  "
            f"errors {'-' if errors is None else format(errors * 100, '.1f') + '%'}  "
            f"{latency} {_num(n.get('p99Ms'), '.1f')}"
            + ("" if n.get("p99Ms") is None else " ms")
        )
    return out
