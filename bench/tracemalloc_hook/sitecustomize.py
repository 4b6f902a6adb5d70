"""Loaded at interpreter start when this folder is on PYTHONPATH (bench/operator.py
--profile does that for the operator process only): traces Python allocations and writes a
tracemalloc snapshot to $LMO_BENCH_SNAPSHOT.<n> on each SIGUSR1."""

import os
import signal
import tracemalloc

if os.environ.get("LMO_BENCH_SNAPSHOT"):
    tracemalloc.start(int(os.environ.get("LMO_BENCH_FRAMES", "1")))
    _count = [0]

    def _dump(*_):
        _count[0] += 1
        tracemalloc.take_snapshot().dump(f"{os.environ['LMO_BENCH_SNAPSHOT']}.{_count[0]}")

    signal.signal(signal.SIGUSR1, _dump)
