"""Benchmark canary rollouts with real Triton servers and a real Prometheus.

    python bench/rollout.py [--step 5s] [--runs 3] [--write]

Two tritonservers (stable v1, candidate v2, the Python-backend embedding model of
tests/rollout/harness.py), Prometheus scraping both every 1 s with the chart's labels, a load
loop at the routed weights, and the operator's loop (`decide` -> route -> hold -> `analyse`
with golden replay -> `decide`) on the wall clock. Scenarios:

1. good: a healthy candidate walks steps 10/25/50/100 -> route updates per step, total time;
2. bad from the start: the candidate fails every third request from its first one;
3. bad mid-step: the candidate turns bad 1 s into the 50% step.

For 2 and 3: time from the candidate's first failed request to the route that sends all
traffic back to the stable, in seconds and in analysis intervals (stepDuration).

`--write` replaces the `## Rollouts (bench/rollout.py)` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lmo.api import LanguageModelSpec  # noqa: E402
from lmo.replay import ReplayTargets  # noqa: E402
from lmo.rollout import VersionObservation, desired_key, parse_duration  # noqa: E402
from lmo_runtime.triton.server import TritonServer  # noqa: E402
from tests.fixtures.prometheus import PrometheusServer, Target  # noqa: E402
from tests.rollout.harness import (  # noqa: E402
    ENTRY,
    GOLDEN,
    LoadLoop,
    drive,
    set_behavior,
    write_embedding_model,
)

SECTION = "## Rollouts (bench/rollout.py)"
NS, LM = "bench", "embed"
STEPS = [10, 25, 50, 100]


def spec(prom_url: str, step: str) -> LanguageModelSpec:
    return LanguageModelSpec.model_validate(
        {
            "task": "feature-extraction",
            "versions": [
                {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
                {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 0},
            ],
            "rollout": {
                "strategy": "Canary",
                "steps": STEPS,
                "stepDuration": step,
                "analysis": {
                    "prometheusUrl": prom_url,
                    "maxErrorRate": 0.02,
                    "maxOutputDrift": 0.05,
                    "minRequests": 10,
                },
            },
        }
    )


def run_once(servers, behavior, prom, step: str, scenario: str) -> dict:
    urls = {v: s.http_address for v, s in servers.items()}
    set_behavior(behavior["v2"], **({"fail_every": 3} if scenario == "bad-start" else {}))
    load = LoadLoop(urls).start()
    routes: list[tuple[float, dict[str, int]]] = []
    timers: list[threading.Timer] = []

    def on_route(traffic: dict[str, int]) -> None:
        routes.append((time.monotonic(), dict(traffic)))
        if scenario == "bad-mid" and traffic.get("v2") == 50:
            t = threading.Timer(1.0, lambda: set_behavior(behavior["v2"], fail_every=3))
            t.start()
            timers.append(t)

    sp = spec(prom.url, step)
    versions = [VersionObservation(v.name, True, desired_key(sp, v.name)) for v in sp.versions]
    t0 = time.monotonic()
    try:
        status, steps = drive(
            sp,
            NS,
            LM,
            versions,
            load,
            lambda c, s: ReplayTargets(f"http://{urls[c]}", f"http://{urls[s]}", ENTRY, GOLDEN),
            timeout=len(STEPS) * parse_duration(step) * 4 + 30,
            on_route=on_route,
        )
    finally:
        load.stop()
        for t in timers:
            t.cancel()
    out = {
        "phase": status.phase,
        "seconds": time.monotonic() - t0,
        "route_updates": len(routes),
        "analyses": sum(1 for s in steps if s.analysis_verdict),
        "requests": sum(load.sent.values()),
    }
    if scenario != "good":
        back = [t for t, tr in routes if tr.get("v2") == 0 and t >= (load.first_failure_at or 0)]
        if load.first_failure_at is not None and back:
            out["detect_s"] = back[0] - load.first_failure_at
            out["detect_intervals"] = out["detect_s"] / parse_duration(step)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step", default="5s", help="stepDuration (analysis interval)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lmo-bench-rollout-"))
    servers: dict[str, TritonServer] = {}
    behavior: dict[str, Path] = {}
    results: dict[str, list[dict]] = {"good": [], "bad-start": [], "bad-mid": []}
    try:
        for v in ("v1", "v2"):
            behavior[v] = root / f"{v}.json"
            write_embedding_model(root / v, behavior[v])
            servers[v] = TritonServer(root / v, [ENTRY]).start()
        targets = [Target(f"127.0.0.1:{s.metrics_port}", NS, LM, v) for v, s in servers.items()]
        with PrometheusServer(targets) as prom:
            for i in range(args.runs):
                for scenario in results:
                    r = run_once(servers, behavior, prom, args.step, scenario)
                    results[scenario].append(r)
                    print(f"run {i + 1} {scenario}: {r}", flush=True)
    finally:
        for s in servers.values():
            s.stop()

    def med(rows: list[dict], key: str) -> str:
        vals = [r[key] for r in rows if key in r]
        if not vals:
            return "n/a"
        return f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})"

    good, start, mid = results["good"], results["bad-start"], results["bad-mid"]
    text = "\n".join(
        [
            f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} shared cores), "
            f"Triton 2.51 CPU (nvidia-pytriton) x2 + Prometheus 2.42 (1 s scrape), "
            f"stepDuration {args.step}, steps {STEPS}, {args.runs} runs each; "
            "median (min-max).",
            "",
            "| scenario | outcome | first error -> all traffic on stable | in analysis intervals "
            "| route updates | analyses | wall s |",
            "|---|---|---|---|---|---|---|",
            f"| good candidate | {', '.join(sorted({r['phase'] for r in good}))} | - | - "
            f"| {med(good, 'route_updates')} | {med(good, 'analyses')} | {med(good, 'seconds')} |",
            f"| bad from first request | {', '.join(sorted({r['phase'] for r in start}))} "
            f"| {med(start, 'detect_s')} s | {med(start, 'detect_intervals')} "
            f"| {med(start, 'route_updates')} | {med(start, 'analyses')} | {med(start, 'seconds')} |",
            f"| turns bad 1 s into the 50% step | {', '.join(sorted({r['phase'] for r in mid}))} "
            f"| {med(mid, 'detect_s')} s | {med(mid, 'detect_intervals')} "
            f"| {med(mid, 'route_updates')} | {med(mid, 'analyses')} | {med(mid, 'seconds')} |",
            "",
            "Route updates: one per step (the route changes only when the weights do), plus "
            "the rollback. Detection is bounded by the hold: a failure is judged when the "
            "step's stepDuration elapses, so the worst case is one interval plus one "
            "analysis (PromQL + golden replay); errors starting mid-step are caught at that "
            "step's end.",
        ]
    )
    print("\n" + text)
    if args.write:
        path = ROOT / "bench" / "RESULTS.md"
        old = path.read_text() if path.exists() else "# Benchmark results\n"
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        block = f"{SECTION}\n\n{text.strip()}\n\n"
        new = pattern.sub(block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
