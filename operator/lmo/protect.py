"""spec.protection as rules applied per request: the one module the front door of `lmo up`
runs (the cluster's gateway enforces the same fields through the policies of
lmo.builders.protection).

Pure: no I/O, no clock of its own. Every call takes `now` (monotonic seconds), so tests
drive time and the front door passes `time.monotonic()`.

* `KeyTable`: API keys by client id (a Secret's data). `Authorization: Bearer <key>`;
  none -> 401, unknown -> 403. Keys are held as sha256 digests and never appear in a
  message.
* `TokenBucket`: `burst` tokens, refilled at `requestsPerSecond`; an empty bucket -> 429
  with the seconds until the next token (Retry-After).
* `Breaker`: per version, at most `maxPendingRequests` in flight (one more -> 503), and
  `consecutiveErrors` failures in a row (5xx or no answer) eject the version for
  `ejectionTime`; then exactly one probe request is let through (half-open): success closes
  the breaker, failure ejects it again.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from lmo.api import Protection, parse_duration


@dataclass(frozen=True)
class Refusal:
    """A request turned away before it reaches a version."""

    status: int  # 401, 403, 429 or 503
    message: str
    retry_after: int | None = None  # whole seconds, for the Retry-After header

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyTable:
    """Client id by API key, from a Secret's data (client id -> key)."""

    def __init__(self, keys: dict[str, str]):
        self._by_digest = {_digest(k): client for client, k in keys.items() if k}

    def __len__(self) -> int:
        return len(self._by_digest)

    def client(self, authorization: str | None) -> str | Refusal:
        """The client id of a request's Authorization header, or why it is refused."""
        if not authorization or not authorization.strip():
            return Refusal(401, "missing API key: send Authorization: Bearer <key>")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Refusal(401, "Authorization must be 'Bearer <key>'")
        client = self._by_digest.get(_digest(token.strip()))
        if client is None:
            return Refusal(403, "unknown API key")
        return client


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    size: float
    tokens: float = -1.0
    stamp: float | None = None

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one is there."""
        if self.stamp is None or self.tokens < 0:
            self.tokens, self.stamp = self.size, now
        else:
            self.tokens = min(self.size, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class _VersionState:
    pending: int = 0
    failures: int = 0
    open_until: float | None = None  # ejected until then
    probing: bool = False  # the one half-open request is in flight


@dataclass
class Breaker:
    max_pending: int | None
    threshold: int | None
    ejection: float
    _state: dict[str, _VersionState] = field(default_factory=dict)

    def _of(self, version: str) -> _VersionState:
        return self._state.setdefault(version, _VersionState())

    def ejected(self, version: str, now: float) -> bool:
        """True while `version` takes no requests (ejected, or its probe is in flight)."""
        s = self._of(version)
        if s.open_until is None:
            return False
        return now < s.open_until or s.probing

    def admit(self, version: str, now: float) -> Refusal | None:
        """Count one request in flight to `version`, or say why it may not go."""
        s = self._of(version)
        if s.open_until is not None:
            if now < s.open_until:
                wait = max(1, math.ceil(s.open_until - now))
                return Refusal(503, f"version {version} is ejected after {self.threshold} "
                                    f"errors in a row (spec.protection.circuitBreaker); "
                                    f"retry in {wait}s", wait)
            if s.probing:
                return Refusal(503, f"version {version} is being probed after an ejection "
                                    "(spec.protection.circuitBreaker)", 1)
            s.probing = True
        if self.max_pending is not None and s.pending >= self.max_pending:
            if s.probing:
                s.probing = False
            return Refusal(503, f"version {version} has {s.pending} requests in flight, the "
                                f"most spec.protection.circuitBreaker.maxPendingRequests "
                                "allows", 1)
        s.pending += 1
        return None

    def done(self, version: str, ok: bool, now: float) -> None:
        """A request admitted by `admit` ended: ok, or a 5xx / no answer."""
        s = self._of(version)
        s.pending = max(0, s.pending - 1)
        if ok:
            s.failures = 0
            if s.probing or (s.open_until is not None and now >= s.open_until):
                s.open_until, s.probing = None, False
            return
        s.failures += 1
        if s.probing:  # the probe failed: out again
            s.open_until, s.probing = now + self.ejection, False
        elif self.threshold is not None and s.failures >= self.threshold and s.open_until is None:
            s.open_until = now + self.ejection

    def forget(self, version: str) -> None:
        self._state.pop(version, None)

    def state(self, now: float) -> dict[str, str]:
        """closed | ejected | probing per version seen (for status)."""
        out = {}
        for v, s in self._state.items():
            if s.open_until is None:
                out[v] = "closed"
            elif s.probing:
                out[v] = "probing"
            else:
                out[v] = "ejected" if now < s.open_until else "half-open"
        return out


class Gate:
    """All of spec.protection for one front door: `check` before a version is picked
    (auth, rate limit), `breaker` around the call to the version."""

    def __init__(self, protection: Protection | None, keys: dict[str, str] | None = None):
        self.protection = protection
        p = protection
        self.keys = KeyTable(keys or {}) if p is not None and p.auth is not None else None
        self.rate = p.rate_limit if p is not None else None
        self._buckets: dict[str | None, TokenBucket] = {}
        cb = p.circuit_breaker if p is not None else None
        self.breaker = Breaker(
            max_pending=cb.max_pending_requests if cb else None,
            threshold=cb.consecutive_errors if cb else None,
            ejection=parse_duration(cb.ejection_time) if cb else 30.0,
        )
        self.timeout = parse_duration(p.timeout) if p is not None and p.timeout else None

    def summary(self, now: float) -> dict:
        """What is enforced and each version's breaker state (client ids and counts only,
        never a key), for `GET /lmo/status`."""
        if self.protection is None:
            return {}
        out: dict = {}
        if self.keys is not None:
            out["apiKeys"] = len(self.keys)
        if self.rate is not None:
            out["rateLimit"] = {"requestsPerSecond": self.rate.requests_per_second,
                                "burst": self.rate.bucket, "perClient": self.rate.per_client}
        if self.timeout is not None:
            out["timeoutSeconds"] = self.timeout
        if self.protection.circuit_breaker is not None:
            out["breaker"] = self.breaker.state(now)
        return out

    def check(self, authorization: str | None, now: float) -> Refusal | str | None:
        """A Refusal, or the client id (None without auth) of an admitted request."""
        client: str | None = None
        if self.keys is not None:
            who = self.keys.client(authorization)
            if isinstance(who, Refusal):
                return who
            client = who
        if self.rate is not None:
            bucket_id = client if self.rate.per_client else None
            bucket = self._buckets.get(bucket_id)
            if bucket is None:
                bucket = self._buckets[bucket_id] = TokenBucket(
                    float(self.rate.requests_per_second), float(self.rate.bucket))
            wait = bucket.take(now)
            if wait > 0:
                whose = f"client {client}" if bucket_id is not None else "this model"
                return Refusal(
                    429, f"rate limit of {whose} reached ({self.rate.requests_per_second}/s, "
                         f"burst {self.rate.bucket}; spec.protection.rateLimit)",
                    max(1, math.ceil(wait)))
        return client
