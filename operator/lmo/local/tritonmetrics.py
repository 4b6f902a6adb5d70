"""Triton's counters as `lmo up` reads them from each server's /metrics: `Snapshot` and
`parse`, which live in `lmo.decide.triton` next to the rule both runtimes judge them by."""

from lmo.decide.triton import Snapshot, parse, parse_models  # noqa: F401
