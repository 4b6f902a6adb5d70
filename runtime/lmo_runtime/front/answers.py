"""Request ids of answers and the feedback reports about them (both runtimes).

Every answer of a version carries `x-lmo-request-id`; `AnsweredIds` remembers which version
gave it, the newest `capacity` ids for at most `ttl` seconds, so memory stays bounded however
many requests come. `parse_report` checks the body of `POST /v1/feedback`; `AnsweredIds.take`
accepts an id once: a report about an id never answered here, too old, or already reported is
refused with 404, so a client cannot inflate an Experiment's outcome counts.

Stdlib only: this runs in the Triton pod (`lmo_runtime.front`) and under `lmo up`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from typing import Any, Callable

DEFAULT_CAPACITY = 100_000
DEFAULT_TTL_SECONDS = 3600.0
EXAMPLE = '{"requestId": "<x-lmo-request-id of the answer>", "success": true} (or "score": 0.7)'


class FeedbackError(ValueError):
    """A feedback report that cannot be counted; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def new_id() -> str:
    return secrets.token_hex(12)


def parse_report(body: Any) -> tuple[str, float]:
    """(request id, success value in [0, 1]) of a parsed feedback body, or FeedbackError(400)."""
    if not isinstance(body, dict):
        raise FeedbackError(400, f"the body must be a JSON object such as {EXAMPLE}")
    unknown = sorted(set(body) - {"requestId", "success", "score"})
    if unknown:
        raise FeedbackError(400, f"unknown field(s) {', '.join(unknown)}; send {EXAMPLE}")
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise FeedbackError(400, "requestId must be the x-lmo-request-id header of the "
                                 f"answer (a string); send {EXAMPLE}")
    has_success, has_score = "success" in body, "score" in body
    if has_success == has_score:
        raise FeedbackError(400, "send exactly one of success (true/false) and score (a "
                                 f"number from 0 to 1); e.g. {EXAMPLE}")
    if has_success:
        if not isinstance(body["success"], bool):
            raise FeedbackError(400, f"success must be true or false (got {body['success']!r})")
        return request_id, 1.0 if body["success"] else 0.0
    score = body["score"]
    if (isinstance(score, bool) or not isinstance(score, (int, float))
            or not math.isfinite(score) or not 0.0 <= score <= 1.0):
        raise FeedbackError(400, f"score must be a number from 0 to 1 (got {score!r})")
    return request_id, float(score)


class AnsweredIds:
    """request id -> version of the newest answers (one event loop: no locks needed)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, ttl: float = DEFAULT_TTL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self.ttl = ttl
        self.clock = clock
        self._ids: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def remember(self, version: str) -> str:
        """A new request id for an answer of `version` (the oldest ids are forgotten)."""
        request_id = new_id()
        self._ids[request_id] = (version, self.clock())
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return request_id

    def take(self, request_id: str) -> str:
        """The version that gave answer `request_id`, forgetting it (one report per
        answer); FeedbackError(404) when it is unknown, expired or already reported."""
        entry = self._ids.pop(request_id, None)
        if entry is None or self.clock() - entry[1] > self.ttl:
            raise FeedbackError(404, f"request id {request_id!r} is unknown or expired: "
                                     f"feedback is taken for the last {self.capacity} answers, "
                                     f"within {self.ttl:.0f}s (or it was already reported)")
        return entry[0]
