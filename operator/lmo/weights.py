"""Traffic set by hand: `lmo set-traffic`, `promote` and `rollback`, on the cluster and under
`lmo up` alike.

The weights a person gives are checked here (known versions, 0 to 100, summing to 100), and
`traffic_change` is the one rewrite of the spec they cause: every version's `traffic`, and
`spec.rollout.strategy: Manual` when an automated rollout would override the weights. The
CLI sends it to the API server as a merge patch; `lmo up` applies it to its running spec.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from lmo.api import Strategy, traffic_sum_problem
from lmo.errors import UserError

MANUAL_NOTE = "rollout strategy set to Manual: the traffic is yours until you change it"


def hands_over(strategy: str | None) -> bool:
    """Whether setting traffic by hand (set-traffic, promote, rollback) must also set
    `spec.rollout.strategy: Manual`: an automated rollout would override the weights."""
    return (strategy or Strategy.MANUAL.value) != Strategy.MANUAL.value


def check_weights(weights: dict[str, int], versions: list[str]) -> None:
    """Refuse weights that name unknown versions, are out of range or do not sum to 100."""
    unknown = sorted(set(weights) - set(versions))
    if unknown:
        raise UserError(
            f"traffic names unknown version(s) {', '.join(unknown)}; versions are "
            f"{', '.join(versions)}"
        )
    bad = [f"{v}={w}" for v, w in weights.items() if not 0 <= int(w) <= 100]
    if bad:
        raise UserError(f"traffic weights must be between 0 and 100 (got {', '.join(bad)})")
    problem = traffic_sum_problem(weights) if weights else None
    if problem:
        raise UserError(f"traffic weights must sum to 100; {problem}")


def parse_assignments(items: list[str], versions: list[str] | None = None) -> dict[str, int]:
    """`["v1=90", "v2=10"]` -> {"v1": 90, "v2": 10}, with a clear error for each mistake.

    The messages do not name the command: `lmo set-traffic: error: ` is the CLI's prefix.
    """
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise UserError(f"expected VERSION=PERCENT such as v1=90, got {item!r}")
        if name in out:
            raise UserError(f"version {name!r} given twice")
        out[name] = int(value)
    if versions is not None:
        missing = [v for v in versions if v not in out]
        for v in missing:
            out[v] = 0
    check_weights(out, versions if versions is not None else list(out))
    return out


def traffic_change(spec: Mapping[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    """What setting `weights` by hand changes in `spec` (its JSON shape), as a JSON merge
    patch of the spec: `versions` whole (a merge patch replaces lists) with every version's
    traffic (0 for versions not named), and `rollout.strategy: Manual` when an automated
    rollout would override the weights. Refuses bad weights (`check_weights`)."""
    versions = copy.deepcopy(list(spec["versions"]))
    check_weights({k: int(v) for k, v in weights.items()}, [v["name"] for v in versions])
    for v in versions:
        v["traffic"] = int(weights.get(v["name"], 0))
    change: dict[str, Any] = {"versions": versions}
    if hands_over((spec.get("rollout") or {}).get("strategy")):
        change["rollout"] = {"strategy": Strategy.MANUAL.value}
    return change


def summary(weights: Mapping[str, int]) -> str:
    """`v1=90,v2=10`: weights as the commands and Events print them."""
    return ",".join(f"{k}={v}" for k, v in weights.items())
