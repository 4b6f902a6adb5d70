"""Traffic rules of a LanguageModel, applied per request on one machine.

The cluster expresses the same rules as an HTTPRoute (weighted backends, one exact header
match per version, a RequestMirror filter). Locally they are applied by `Router`, which is
pure: no I/O, no clock, no randomness. Weights are honoured with smooth weighted
round-robin (the nginx algorithm) and mirroring with an error-diffusion counter, so every
100 consecutive requests split exactly as the weights say; a gateway's random choice only
converges to them. That keeps `lmo up` predictable and its tests free of chance.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from lmo.weights import check_weights, parse_assignments  # noqa: F401 (their old home)


@dataclass
class Choice:
    """Where one request goes: the version that answers, and a version that gets a copy."""

    version: str
    mirror: str | None = None
    by_header: bool = False


@dataclass
class Router:
    """Weighted choice, exact header A/B and mirroring over a set of versions.

    `weights` are percentages (summing to 100) of the versions that take traffic;
    `available` are the versions that can answer at all (ready servers). A header naming an
    available version routes to it whatever its weight (as an HTTPRoute header match does);
    a header naming anything else falls through to the weights. The weights pick among the
    ready versions with a weight above 0 only: as an HTTPRoute never sends traffic to a
    0-weight backend, a version at 0% (a rolled-back candidate, the version a rollout
    replaced) never stands in for a stable that is down; `choose` raises LookupError then,
    and the front door answers 503 as the gateway would.
    """

    weights: dict[str, int]
    available: set[str] = field(default_factory=set)
    header: str | None = None
    sticky: str | None = None  # routing.sticky.header, lower-case
    mirror_version: str | None = None
    mirror_percent: int = 0
    _current: dict[str, int] = field(default_factory=dict, repr=False)
    _mirror_acc: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.set_weights(self.weights)
        if not self.available:
            self.available = set(self.weights)

    def set_weights(self, weights: dict[str, int]) -> None:
        """Replace the weights (keeps the round-robin position of versions that stay).

        They are what the rollout decided, routed as they are: a person's weights are checked
        where they come in (`lmo.weights`), and a decision may route nothing at all (its stable
        version was removed and the successor has no ready server: `choose` then says why).
        """
        self.weights = dict(weights)
        self._current = {v: self._current.get(v, 0) for v in weights}

    def set_mirror(self, version: str | None, percent: int = 100) -> None:
        self.mirror_version = version
        self.mirror_percent = percent if version else 0
        self._mirror_acc = 0

    def choose(self, header_value: str | None = None, sticky_value: str | None = None) -> Choice:
        """Pick the version for one request.

        `sticky_value` is the request's `routing.sticky` header: the same value always gets
        the same version while the weights and ready versions stay (`sticky_bucket`).
        Raises LookupError, saying why, when no version with traffic is ready.
        """
        if header_value is not None and self.header and header_value in self.available:
            return Choice(header_value, self._mirror_for(header_value), by_header=True)
        if sticky_value is not None and self.sticky:
            version = self._sticky(sticky_value)
        else:
            version = self._weighted()
        return Choice(version, self._mirror_for(version))

    def _sticky(self, value: str) -> str:
        """The version whose share of [0, 1) holds the value's hash: users split as the
        weights say (over many users) and one user never moves while they stay."""
        live = [(v, w) for v, w in self.weights.items() if w > 0 and v in self.available]
        if not live:
            return self._weighted()  # raises LookupError saying why
        point = sticky_bucket(value) * sum(w for _, w in live)
        for v, w in live:
            if point < w:
                return v
            point -= w
        return live[-1][0]

    def _weighted(self) -> str:
        live = {v: w for v, w in self.weights.items() if w > 0 and v in self.available}
        if not live:
            # E.g. the stable's server is restarting. The cluster answers 503 then (no
            # ready endpoints behind any weighted backend); so does the front door.
            routed = ",".join(f"{v}={w}" for v, w in self.weights.items())
            if not self.available:
                raise LookupError(f"no version is ready (traffic {routed})")
            raise LookupError(
                f"no version with traffic is ready (traffic {routed}; ready: "
                f"{', '.join(sorted(self.available))}, which a version at 0% does not "
                f"replace)"
            )
        total = sum(live.values())
        best = None
        for v, w in live.items():
            self._current[v] = self._current.get(v, 0) + w
            if best is None or self._current[v] > self._current[best]:
                best = v
        assert best is not None
        self._current[best] -= total
        return best

    def _mirror_for(self, version: str) -> str | None:
        m = self.mirror_version
        if not m or m == version or m not in self.available:
            return None
        self._mirror_acc += self.mirror_percent
        if self._mirror_acc >= 100:
            self._mirror_acc -= 100
            return m
        return None


def sticky_bucket(value: str) -> float:
    """Where a sticky header value falls in [0, 1): the first 8 bytes of its SHA-256 (a
    stable hash: the same user lands in the same place in every run and process)."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64
