"""Benchmark canary rollouts with real Triton servers and a real Prometheus.

    python bench/rollout.py [--step 5s] [--early 2] [--runs 3] [--write]

Two tritonservers (stable v1, candidate v2, the Python-backend embedding model of
tests/rollout/harness.py), Prometheus scraping both every 1 s with the chart's labels, a load
loop at the routed weights, and the operator's loop (`decide` -> route -> hold -> `analyse`
with golden replay -> `decide`) on the wall clock. Scenarios:

1. good: a healthy candidate walks steps 10/25/50/100 -> route updates per step, total time;
2. bad from the start: the candidate fails every third request from its first one;
3. bad mid-step: the candidate turns bad 1 s into the 50% step.

For 2 and 3: time from the candidate's first failed request to the route that sends all
traffic back to the stable, in seconds and in analysis intervals (stepDuration). Each
scenario runs twice: judged only when a step's hold ends, and with early checks within the
hold (`lmo.rollout.EARLY_CHECK_MIN_SECONDS` lowered to `--early` seconds, scaled down like
the hold: on a cluster the floor is 60 s against a 15-30 s scrape interval).

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

import lmo.rollout  # noqa: E402
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
    # Let the previous run's last requests age out of every rate window: on a cluster a new
    # rollout brings new pods (new series); here the same server is reused.
    time.sleep(3)
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
        "why": status.message[:160],
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
    p.add_argument("--early", type=float, default=2.0, help="early-check floor in seconds")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="lmo-bench-rollout-"))
    servers: dict[str, TritonServer] = {}
    behavior: dict[str, Path] = {}
    modes = {"hold end only": None, f"early checks every >= {args.early:g} s": args.early}
    scenarios = ("good", "bad-start", "bad-mid")
    results: dict[tuple[str, str], list[dict]] = {(m, sc): [] for m in modes for sc in scenarios}
    default_floor = lmo.rollout.EARLY_CHECK_MIN_SECONDS
    try:
        for v in ("v1", "v2"):
            behavior[v] = root / f"{v}.json"
            write_embedding_model(root / v, behavior[v])
            servers[v] = TritonServer(root / v, [ENTRY]).start()
        targets = [Target(f"127.0.0.1:{s.metrics_port}", NS, LM, v) for v, s in servers.items()]
        with PrometheusServer(targets) as prom:
            for i in range(args.runs):
                for mode, floor in modes.items():
                    lmo.rollout.EARLY_CHECK_MIN_SECONDS = floor or default_floor
                    for scenario in scenarios:
                        r = run_once(servers, behavior, prom, args.step, scenario)
                        results[(mode, scenario)].append(r)
                        print(f"run {i + 1} [{mode}] {scenario}: {r}", flush=True)
    finally:
        lmo.rollout.EARLY_CHECK_MIN_SECONDS = default_floor
        for s in servers.values():
            s.stop()

    def med(rows: list[dict], key: str, unit: str = "") -> str:
        vals = [r[key] for r in rows if key in r]
        if not vals:
            return "-"
        return f"{statistics.median(vals):.1f}{unit} ({min(vals):.1f}-{max(vals):.1f})"

    labels = {
        "good": "good candidate",
        "bad-start": "bad from its first request",
        "bad-mid": "turns bad 1 s into the 50% step",
    }
    lines = [
        f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} shared cores), "
        f"Triton 2.51 CPU (nvidia-pytriton) x2 + Prometheus 2.42 (1 s scrape), "
        f"stepDuration {args.step}, steps {STEPS}, {args.runs} runs each; median (min-max).",
        "",
        "| judged | scenario | outcome | first error -> all traffic on stable | in intervals "
        "| route updates | analyses | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in modes:
        for sc in scenarios:
            rows = results[(mode, sc)]
            lines.append(
                f"| {mode} | {labels[sc]} | {', '.join(sorted({r['phase'] for r in rows}))} "
                f"| {med(rows, 'detect_s', ' s')} | {med(rows, 'detect_intervals')} "
                f"| {med(rows, 'route_updates')} | {med(rows, 'analyses')} "
                f"| {med(rows, 'seconds')} |"
            )
    lines += [
        "",
        "Route updates: one per step (the route changes only when the weights do), plus the "
        "rollback. Judged at the hold's end only, a failure is caught when the step's "
        "stepDuration elapses: up to one interval plus one analysis (PromQL + golden "
        "replay). Early checks within the hold act only on a fail (with minRequests "
        "requests), cutting the time a bad candidate serves its share; a good candidate "
        "still needs every full hold.",
    ]
    text = "\n".join(lines)
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
