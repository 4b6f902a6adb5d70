"""Comparing a desired manifest with what the API server holds (pure: dicts in, values out).

`is_subset` decides whether an apply is needed (`lmo.kube.Kube.apply`) and whether a
Deployment runs the template lmo wants (`lmo.stages.assess`); `merge_diff` makes the status
merge patch.
"""

from __future__ import annotations

from typing import Any


def is_subset(desired: Any, observed: Any) -> bool:
    """True when every field of `desired` is in `observed` with the same value.

    Dicts: each desired key must be present and a subset of the observed value (the server
    adds defaults and status, which do not count as drift), or absent while its desired
    value is a zero value (false, 0, "", {}, [], null): a real API server drops those from
    `omitempty` fields (a volumeMount's `readOnly: false`), so they never read back. Lists:
    same length, items pairwise subsets (the server defaults fields inside list items, e.g.
    a container's terminationMessagePath). Scalars: equal. Numbers compare by value (1 == 1.0).
    """
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(
            is_subset(v, observed[k]) if k in observed else _zero(v) for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return False
        return all(is_subset(d, o) for d, o in zip(desired, observed))
    return desired == observed


def _zero(value: Any) -> bool:
    """A value the API server omits when it serialises an `omitempty` field."""
    return value is None or (not isinstance(value, (int, float)) and not value) or (
        isinstance(value, (int, float)) and value == 0
    )


def first_difference(desired: Any, observed: Any, where: str = "") -> str | None:
    """The path of the first desired field `observed` lacks or holds otherwise (None when
    `is_subset` holds): says in a log line why an apply was sent."""
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return where or "."
        for k, v in desired.items():
            if k not in observed:
                if _zero(v):
                    continue
                return f"{where}.{k}"
            found = first_difference(v, observed[k], f"{where}.{k}")
            if found is not None:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return where
        for i, (d, o) in enumerate(zip(desired, observed)):
            found = first_difference(d, o, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    return None if desired == observed else where


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`.

    Changed keys carry their new value (dicts recursively, lists whole), removed keys are
    null. Equal inputs give {}.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    out: dict[str, Any] = {}
    for key, value in new.items():
        if key not in old:
            out[key] = value
        elif old[key] != value:
            out[key] = merge_diff(old[key], value)
    for key in old:
        if key not in new:
            out[key] = None
    return out
