"""Benchmark A/B experiments: what the sequential test costs in samples, and what request ids
and sticky routing cost the `lmo up` front door.

    python bench/experiment.py [--runs 2000] [--requests 3000] [--rounds 4] [--write]

1. Samples to a decision (numpy simulation, fixed seeds, side by side on the same simulated
   users): lmo's mixture SPRT looked at every 50 outcomes per version (minSamples 1,000,
   confidence 0.95) against a fixed-horizon two-sided z-test at 5 % run once at the sample
   size that gives it 80 % power for that lift (the classic plan a team would make in
   advance). For each true lift: power, median samples per version when it decides, and the
   false-winner share with no lift.
2. Front door cost (in-process FrontDoor over an aiohttp stand-in of Triton, so the door's
   own work dominates): requests per second with request ids and feedback memory switched
   off (the stamp hook removed) against on, plus a sticky header on every request; rounds
   interleave the two in ABBA order so both see the same background load and neither
   always runs second.

`--write` replaces the `## Experiments (bench/experiment.py)` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Experiments (bench/experiment.py)"
MIN_SAMPLES, CONFIDENCE, LOOK = 1000, 0.95, 50


def fixed_n(p0: float, p1: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm size of a two-sided two-proportion z-test with `power` at p0 vs p1."""
    from statistics import NormalDist

    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    pbar = (p0 + p1) / 2
    num = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))
    return math.ceil(num * num / (p1 - p0) ** 2)


def samples_to_decision(runs: int) -> list[dict]:
    from lmo.decide.statistics import sequential_test

    rows = []
    base = 0.10
    for lift in (0.0, 0.01, 0.02, 0.05):
        p1 = base + lift
        n_fixed = fixed_n(base, p1) if lift else fixed_n(base, base + 0.02)
        looks = max(math.ceil(max(n_fixed, 4 * MIN_SAMPLES) * 2 / LOOK), 40)
        rng = np.random.default_rng(int(lift * 1000) + 1)
        sb = rng.binomial(LOOK, base, size=(runs, looks)).cumsum(axis=1)
        sc = rng.binomial(LOOK, p1, size=(runs, looks)).cumsum(axis=1)
        n = np.broadcast_to(np.arange(1, looks + 1) * LOOK, (runs, looks)).astype(float)
        t = sequential_test(sb, n, sc, n, MIN_SAMPLES, CONFIDENCE)
        decided = t.ready & (t.p_value <= 1 - CONFIDENCE)
        any_ = decided.any(axis=1)
        first = decided.argmax(axis=1)
        right = any_ & (t.lift[np.arange(runs), first] > 0) if lift else any_
        at = n[np.arange(runs), first][any_]
        # the fixed test, once, at n_fixed per arm, on the same users
        k = min(looks - 1, max(0, math.ceil(n_fixed / LOOK) - 1))
        nb, cb, cc = float(n[0, k]), sb[:, k], sc[:, k]
        pooled = (cb + cc) / (2 * nb)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (cc - cb) / nb / np.sqrt(pooled * (1 - pooled) * 2 / nb)
        fixed_hit = (z > 1.96) if lift else (np.abs(z) > 1.96)
        rows.append({
            "lift": lift, "n_fixed": int(nb), "looks": looks,
            "msprt_share": float(right.mean()),
            "msprt_median_n": float(np.median(at)) if at.size else float("nan"),
            "fixed_share": float(np.mean(fixed_hit)),
            "max_n": looks * LOOK,
        })
    return rows


class StandIn:
    """Triton's infer answer, at once."""

    def __init__(self) -> None:
        from aiohttp import web

        self.app = web.Application()
        self.app.router.add_post("/v2/models/{m}/infer", self.infer)

    async def infer(self, request):
        from aiohttp import web

        await request.read()
        return web.json_response({"outputs": [{"name": "LABEL", "shape": [1, 1],
                                               "datatype": "BYTES", "data": ["positive"]}]})


async def door_rates(requests: int, rounds: int, clients: int = 8) -> dict[str, list[float]]:
    import aiohttp
    from aiohttp import web

    from lmo.api import parse
    from lmo.local.controller import Backend, Controller
    from lmo.local.frontdoor import FrontDoor

    runner = web.AppRunner(StandIn().app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    artifact = SimpleNamespace(directory=Path("/nonexistent"), repository=Path("/nonexistent"),
                               spec_key="k",
                               manifest=SimpleNamespace(summary=lambda uri: {"uri": uri}))
    doors = {}
    for mode in ("off", "on"):
        spec = {"task": "text-classification",
                "versions": [{"name": v, "traffic": 50, "checkpoint": {"uri": f"s3://m/{v}/"}}
                             for v in ("v1", "v2")]}
        if mode == "on":
            spec["routing"] = {"sticky": {"header": "x-user-id"}}
        lm = parse({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                    "metadata": {"name": "bench"}, "spec": spec})
        backends = {v: Backend(v, f"http://127.0.0.1:{port}", "", "", artifact)
                    for v in ("v1", "v2")}
        controller = Controller(lm, backends=backends)
        for v in backends:
            controller.set_ready(v, True)
        door = FrontDoor(controller)
        if mode == "off":  # no request ids, no feedback memory
            door.app.on_response_prepare.remove(controller.feedback.stamp)
        doors[mode] = (door, f"http://127.0.0.1:{await door.start()}")
    body = b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]}]}'
    out: dict[str, list[float]] = {"off": [], "on": []}
    try:
        async with aiohttp.ClientSession() as session:
            async def run(url: str, sticky: bool) -> float:
                left = list(range(requests))

                async def caller() -> None:
                    while left:
                        i = left.pop()
                        headers = {"Content-Type": "application/json"}
                        if sticky:
                            headers["x-user-id"] = f"user-{i % 5000}"
                        async with session.post(url + "/v2/models/m/infer", data=body,
                                                headers=headers) as r:
                            await r.read()
                            assert r.status == 200, r.status

                start = time.perf_counter()
                await asyncio.gather(*(caller() for _ in range(clients)))
                return requests / (time.perf_counter() - start)

            await run(doors["off"][1], False)  # warm-up
            await run(doors["on"][1], True)
            for k in range(rounds):  # ABBA order: neither always runs second
                for mode in (("off", "on") if k % 2 == 0 else ("on", "off")):
                    out[mode].append(await run(doors[mode][1], mode == "on"))
            remembered = doors["on"][0].controller.feedback.remembered()
            out["remembered"] = [float(remembered)]
    finally:
        for door, _ in doors.values():
            await door.stop()
        await runner.cleanup()
    return out


def report(rows: list[dict], rates: dict[str, list[float]], args) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SECTION, "",
             f"Measured {when} on {platform.machine()}, {args.cores} cores (shared), with "
             f"`python bench/experiment.py --runs {args.runs} --requests {args.requests} "
             f"--rounds {args.rounds}`.", "",
             f"Samples to a decision: baseline rate 0.10, {args.runs} simulated experiments per "
             f"row, lmo's mSPRT looked at every {LOOK} outcomes per version (minSamples "
             f"{MIN_SAMPLES}, confidence {CONFIDENCE}) vs a fixed-horizon z-test at 5 % sized "
             "for 80 % power, on the same simulated users.", "",
             "| true lift | mSPRT: winner found (lift 0: false winners) | mSPRT: median samples "
             "per version at the decision | fixed test: samples per version | fixed test: "
             "winner found (lift 0: false winners) | median samples mSPRT / fixed |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["msprt_median_n"] / r["n_fixed"] if r["lift"] and r["msprt_share"] else float("nan")
        lines.append(
            f"| {r['lift']:+.2f} | {r['msprt_share']:.1%} (looks up to {r['max_n']:,}) | "
            f"{r['msprt_median_n']:,.0f} | {r['n_fixed']:,} | {r['fixed_share']:.1%} | "
            + ("-" if math.isnan(ratio) else f"{ratio:.2f}x") + " |")
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    lines += ["", f"Front door over an in-process stand-in of Triton (8 clients, "
              f"{args.requests} requests per run, {args.rounds} rounds in ABBA order, median):", "",
              "| front door | req/s |", "|---|---|",
              f"| without request ids and feedback memory | {off:,.0f} |",
              f"| with request ids, feedback memory and a sticky header | {on:,.0f} |",
              f"| ratio with / without | {on / off:.2f}x |", "",
              f"Feedback memory held {rates['remembered'][0]:,.0f} request ids after the runs "
              "(bounded at 100,000).", ""]
    return "\n".join(lines)


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    args.cores = os.cpu_count()
    rows = samples_to_decision(args.runs)
    rates = asyncio.run(door_rates(args.requests, args.rounds))
    text = report(rows, rates, args)
    print(text)
    if args.write:
        results = ROOT / "bench" / "RESULTS.md"
        doc = results.read_text()
        if SECTION in doc:
            start = doc.index(SECTION)
            end = doc.find("\n## ", start + len(SECTION))
            doc = doc[:start] + text + ("" if end < 0 else doc[end + 1:])
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        results.write_text(doc)


if __name__ == "__main__":
    main()
