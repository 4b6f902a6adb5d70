"""Outcome feedback under `lmo up`: request ids on every answer, `POST /v1/feedback`, and
per-version counts for `strategy: Experiment`.

* Every answer of the front door carries `x-lmo-request-id` (a fresh random id). The ids of
  answers a version gave (those with `x-lmo-version`) are remembered with that version, the
  newest `capacity` of them for at most `ttl` seconds: memory stays bounded however many
  requests come, and feedback about an older answer is refused with 404.
* `POST /v1/feedback {"requestId": "...", "success": true}` (or `"score": 0.7`, a number in
  [0, 1]) counts one sample for the version that answered, with 1/0 or the score as its
  success. Each request id counts once (a second report is 404, like an unknown id). A body that is not that
  shape is 400, naming what is wrong.
* `GET /lmo/metrics` exports the counts in the Prometheus text format under the names the
  cluster's feedback model exports (`lmo_runtime.feedback.SAMPLES`, `SUCCESSES`),
  with the labels the cluster's scrape adds (namespace, lmo_model, lmo_version), so the
  same PromQL reads both runtimes.

Nothing here imports kopf or kubernetes; the front door calls it through three small hooks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from lmo_runtime.feedback import SAMPLES as FEEDBACK_SAMPLES
from lmo_runtime.feedback import SUCCESSES as FEEDBACK_SUCCESSES
from lmo_runtime.front.answers import (
    DEFAULT_CAPACITY,
    DEFAULT_TTL_SECONDS,
    EXAMPLE,
    AnsweredIds,
    FeedbackError,
    new_id,
    parse_report,
)
from lmo_runtime.front.wire import REQUEST_ID_HEADER, VERSION_HEADER

__all__ = ["EXAMPLE", "Feedback", "FeedbackError"]


@dataclass
class Feedback:
    """Remembered request ids and per-version counts (one event loop: no locks needed)."""

    namespace: str = "default"  # labels of the exported counters, as the cluster's scrape
    model: str = ""
    # the spec's versions: exported from 0 before their first report, or Prometheus'
    # increase() would miss the reports that make a series appear
    versions: list[str] = field(default_factory=list)
    capacity: int = DEFAULT_CAPACITY
    ttl: float = DEFAULT_TTL_SECONDS
    clock: Callable[[], float] = time.monotonic
    samples: dict[str, float] = field(default_factory=dict)
    successes: dict[str, float] = field(default_factory=dict)
    ids: AnsweredIds = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = AnsweredIds(self.capacity, self.ttl, self.clock)

    # ------------------------------------------------------------------ request ids

    def remember(self, version: str) -> str:
        """A new request id for an answer of `version` (the oldest ids are forgotten)."""
        return self.ids.remember(version)

    def remembered(self) -> int:
        return len(self.ids)

    # ------------------------------------------------------------------ reports

    def record(self, body: Any) -> tuple[str, float]:
        """Count one report (the parsed JSON body); (version, success) counted, or
        FeedbackError saying what is wrong (the same rules as the cluster's front)."""
        request_id, value = parse_report(body)
        version = self.ids.take(request_id)
        self.samples[version] = self.samples.get(version, 0.0) + 1.0
        self.successes[version] = self.successes.get(version, 0.0) + value
        return version, value

    def counts(self) -> dict[str, tuple[float, float]]:
        """version -> (samples, successes) since `lmo up` started."""
        return {v: (n, self.successes.get(v, 0.0)) for v, n in self.samples.items()}

    def exposition(self, namespace: str, model: str) -> str:
        """The counts in the Prometheus text format (labels as on the cluster)."""
        lines = []
        for name, values, help_ in (
            (FEEDBACK_SAMPLES, self.samples, "Outcome reports per version."),
            (FEEDBACK_SUCCESSES, self.successes, "Successes (or summed scores) reported."),
        ):
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
            for version in sorted(set(values) | set(self.versions)):
                labels = f'namespace="{namespace}",lmo_model="{model}",lmo_version="{version}"'
                lines.append(f"{name}{{{labels}}} {values.get(version, 0.0)!r}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ aiohttp hooks

    async def stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare: every answer gets a request id; answers of a version are
        remembered for feedback."""
        version = response.headers.get(VERSION_HEADER)
        if version:
            response.headers[REQUEST_ID_HEADER] = self.remember(version)
        else:
            response.headers[REQUEST_ID_HEADER] = new_id()

    async def serve_metrics(self, request: web.Request) -> web.Response:
        """GET /lmo/metrics."""
        return web.Response(text=self.exposition(self.namespace, self.model),
                            content_type="text/plain", charset="utf-8")

    async def handle(self, request: web.Request) -> web.Response:
        """POST /v1/feedback."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError as err:
            return _json(400, {"error": f"the body is not JSON ({err}); send {EXAMPLE}"})
        try:
            version, value = self.record(body)
        except FeedbackError as err:
            return _json(err.status, {"error": str(err)})
        return _json(200, {"version": version, "success": value})


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status)
