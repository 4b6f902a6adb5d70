"""The last minute of each version under `lmo up`: request rate, error ratio and p99.

On the cluster `lmo status` asks Prometheus (`lmo.commands.vitals`); locally there is no
Prometheus, so `lmo up` samples each Triton server's /metrics every few seconds, keeps a
minute of samples, and `/lmo/status` reports the difference between the newest and the
oldest (`lastMinute`, the shape `lmo.commands.vitals` prints). p99 is Triton's own latency
summary (`nv_inference_request_summary_us{quantile="0.99"}`, which `lmo up` turns on as the
cluster does); a number that is not at hand is None, never 0.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from lmo.local.tritonmetrics import Snapshot, parse
from lmo_runtime.manifest import ENTRY_MODEL

WINDOW_SECONDS = 60.0
EVERY_SECONDS = 5.0
MIN_WINDOW_SECONDS = 4.0  # a shorter span gives no rate


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    counters: Snapshot
    p99_ms: float | None


def p99_ms(text: str, model: str) -> float | None:
    """Triton's p99 request latency of `model` in ms (its summary), None without one."""
    values = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if (s.name == "nv_inference_request_summary_us" and s.labels.get("model") == model
                    and s.labels.get("quantile") == "0.99" and math.isfinite(s.value)):
                values.append(s.value / 1000.0)
    return max(values) if values else None


def last_minute(samples: list[Sample]) -> dict[str, Any]:
    """Rate, error ratio and p99 between the oldest and newest sample (None when unknown)."""
    out: dict[str, Any] = {"requestsPerSecond": None, "errorRatio": None, "p99Ms": None,
                           "latencyIsP99": True, "windowSeconds": None}
    if not samples:
        return out
    newest = samples[-1]
    out["p99Ms"] = newest.p99_ms
    if len(samples) < 2 or newest.at - samples[0].at < MIN_WINDOW_SECONDS:
        return out
    span = newest.at - samples[0].at
    diff = newest.counters - samples[0].counters
    if diff.requests < 0:  # the server restarted: its counters began again
        return out
    out["windowSeconds"] = round(span, 1)
    out["requestsPerSecond"] = diff.requests / span
    out["errorRatio"] = diff.error_ratio if diff.requests else None
    if out["p99Ms"] is None and diff.latency_mean_ms is not None:
        out["p99Ms"], out["latencyIsP99"] = diff.latency_mean_ms, False
    return out


class RecentMetrics:
    """A minute of /metrics samples per version, taken by `run()`."""

    def __init__(self, window: float = WINDOW_SECONDS):
        self.window = window
        self.samples: dict[str, deque[Sample]] = {}

    def add(self, version: str, sample: Sample) -> None:
        kept = self.samples.setdefault(version, deque())
        kept.append(sample)
        while kept and sample.at - kept[0].at > self.window:
            kept.popleft()

    def report(self, versions: list[str]) -> dict[str, dict[str, Any]]:
        return {v: last_minute(list(self.samples.get(v, ()))) for v in versions}

    async def run(self, controller: Any, every: float = EVERY_SECONDS) -> None:
        """Sample every backend of `controller` each `every` seconds until cancelled."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                entry = ENTRY_MODEL[controller.spec.task]
                for name, backend in list(controller.backends.items()):
                    try:
                        async with session.get(backend.metrics_url) as r:
                            text = (await r.read()).decode()
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        continue
                    self.add(name, Sample(time.monotonic(), parse(text, entry),
                                          p99_ms(text, entry)))
                for gone in set(self.samples) - set(controller.backends):
                    del self.samples[gone]
                await asyncio.sleep(every)
