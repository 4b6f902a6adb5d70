"""The local sampler: each Triton server's /metrics under `lmo up`, scraped by one function
for the rollout analysis and for `lmo status`'s last minute.

`RecentMetrics.sample` scrapes every server once (`lmo.decide.triton.parse_models`: each
model's counters and Triton's p99 summary, which `lmo up` turns on as the cluster does) and
keeps a minute of samples; the controller calls it when a step starts and when it is judged,
and `run` calls it every few seconds. `/lmo/status` reports the difference between the newest
and the oldest sample (`lastMinute`, the shape `lmo.commands.vitals` prints), with the
numbers chosen by the rule the analysis uses (`lmo.decide.triton.version_metrics`); a number
that is not at hand is None, never 0.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from lmo.decide.triton import Models, Snapshot, difference, p99_of, parse_models, version_metrics

WINDOW_SECONDS = 60.0
EVERY_SECONDS = 5.0
MIN_WINDOW_SECONDS = 4.0  # a shorter span gives no rate
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    counters: Models | Snapshot  # each model's counters (a lone Snapshot: one model)
    p99_ms: float | None


def _models(counters: Models | Snapshot) -> Models:
    return {"": counters} if isinstance(counters, Snapshot) else counters


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
    diff = difference(_models(newest.counters), _models(samples[0].counters))
    if any(s.requests < 0 for s in diff.values()):  # the server restarted: counters began again
        return out
    m = version_metrics(diff, newest.p99_ms)
    out["windowSeconds"] = round(span, 1)
    out["requestsPerSecond"] = m.requests / span
    out["errorRatio"] = m.error_ratio if m.requests else None
    out["p99Ms"], out["latencyIsP99"] = m.latency_ms, m.latency_is_p99
    return out


class RecentMetrics:
    """A minute of /metrics samples per version."""

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

    async def sample(self, metrics_urls: Mapping[str, str],
                     session: aiohttp.ClientSession | None = None) -> dict[str, Models]:
        """Scrape each version's /metrics once (version -> its URL): every model's counters,
        kept as this minute's samples and returned (a server that does not answer is left
        out)."""
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await self.sample(metrics_urls, own)
        out: dict[str, Models] = {}
        for name, url in metrics_urls.items():
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS)) as r:
                    models = parse_models((await r.read()).decode())
            except (aiohttp.ClientError, asyncio.TimeoutError):
                continue
            out[name] = models
            self.add(name, Sample(time.monotonic(), models, p99_of(models)))
        for gone in set(self.samples) - set(metrics_urls):
            del self.samples[gone]
        return out

    async def run(self, controller: Any, every: float = EVERY_SECONDS) -> None:
        """Sample every backend of `controller` each `every` seconds until cancelled."""
        while True:
            await controller.snapshots()
            await asyncio.sleep(every)
