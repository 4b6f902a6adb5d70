"""Benchmark spec.protection under `lmo up`: what the checks cost and how exact the limit is.

    python bench/protection.py [--clients 8] [--seconds 5] [--rounds 3] [--write]

Three `lmo up` of the tiny BERT example (examples/tiny-bert.yaml, one shared conversion):
1. plain: no protection; 2. guarded: API keys (2 clients), a rate limit far above what the
machine serves, the circuit breaker (pending limit and ejection) and a timeout, so every
check runs on every request and none refuses; 3. limited: a 20/s rate limit.
Rounds alternate between plain and guarded (both see the same background load); the ratio
guarded/plain is the cost of the checks. On `limited`, clients ask for far more than 20/s for
`--seconds * 2`: admitted vs 20/s x elapsed + the bucket, and how fast a 429 comes back
compared to an answer.

`--write` replaces the `## Protection (bench/protection.py)` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local import TEXTS, stop, write_results as _write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Protection (bench/protection.py)"
KEYS = {"alice": "sk-bench-alice-0001", "bob": "sk-bench-bob-0002"}


def start(file: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """Start `lmo up`; return (process, front door URL) once it is ready (the protected ones
    refuse a request without a key, so readiness is the health probe)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "lmo"), "up", "-f", str(file), "--port", "0",
         "--work-dir", str(work), "--quiet", "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lmo up -f {file} exited with {proc.returncode}")
        state = work / "up.json"
        if state.exists():
            url = json.loads(state.read_text())["url"]
            try:
                with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
                    if r.status == 200:
                        return proc, url
            except OSError:
                pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"lmo up -f {file} not ready in 600 s")


def model(name: str, root: Path, **spec) -> Path:
    doc = yaml.safe_load((ROOT / "examples" / "tiny-bert.yaml").read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["versions"][0]["checkpoint"]["uri"] = \
        f"file://{ROOT / 'examples' / 'checkpoints' / 'tiny-bert-sentiment'}"
    doc["spec"].update(spec)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def drive(url: str, clients: int, seconds: float, keys: list[str | None],
                pause: float = 0.0) -> dict:
    """Closed-loop JSON requests; counts by status and latencies (s) by status."""
    counts: dict[int, int] = {}
    lat: dict[int, list[float]] = {}
    stop_at = time.monotonic() + seconds

    async def caller(s: aiohttp.ClientSession, i: int) -> None:
        key = keys[i % len(keys)]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        n = i
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            async with s.post(f"{url}/v1/text-classification", json={"text": TEXTS[n % 4]},
                              headers=headers) as r:
                await r.read()
            counts[r.status] = counts.get(r.status, 0) + 1
            lat.setdefault(r.status, []).append(time.monotonic() - t0)
            n += 1
            if pause:
                await asyncio.sleep(pause)

    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        await asyncio.gather(*(caller(s, i) for i in range(clients)))
    return {"elapsed": time.monotonic() - t0, "counts": counts, "lat": lat}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lmo-bench-protection-"))
    os.environ["LMO_SECRET_BENCH_KEYS"] = json.dumps(KEYS)  # the Secret, from the environment
    guard = {"timeout": "30s", "auth": {"apiKeys": {"secretRef": {"name": "bench-keys"}}},
             "circuitBreaker": {"maxPendingRequests": 1000, "consecutiveErrors": 5}}
    files = {
        "plain": model("plain", work),
        "guarded": model("guarded", work, routing={"policies": "EnvoyGateway"},
                         protection={**guard, "rateLimit": {"requestsPerSecond": 1_000_000}}),
        "limited": model("limited", work, routing={"policies": "EnvoyGateway"},
                         protection={**guard, "rateLimit": {"requestsPerSecond": 20}}),
    }
    procs, urls = {}, {}
    try:
        for name, f in files.items():
            procs[name], urls[name] = start(f, work / name)
        rates: dict[str, list[float]] = {"plain": [], "guarded": []}
        keys = list(KEYS.values())
        for _ in range(args.rounds):
            for name in ("plain", "guarded"):
                r = asyncio.run(drive(urls[name], args.clients, args.seconds,
                                      keys if name == "guarded" else [None]))
                assert set(r["counts"]) == {200}, r["counts"]
                rates[name].append(r["counts"][200] / r["elapsed"])
        time.sleep(1.5)  # a full bucket
        lim = asyncio.run(drive(urls["limited"], args.clients, args.seconds * 2, keys,
                                pause=0.01))
    finally:
        for p in procs.values():
            stop(p)
    plain, guarded = statistics.median(rates["plain"]), statistics.median(rates["guarded"])
    ok, limited = lim["counts"].get(200, 0), lim["counts"].get(429, 0)
    expected = 20 * lim["elapsed"] + 20
    p50 = {s: statistics.median(v) * 1000 for s, v in lim["lat"].items()}
    load = os.getloadavg()[0]
    text = f"""Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, \
{os.cpu_count()} cores (shared, load average {load:.1f}), with `python bench/protection.py \
--clients {args.clients} --seconds {args.seconds:g} --rounds {args.rounds}`: \
examples/tiny-bert.yaml (fp32) under `lmo up`, JSON `/v1/text-classification`, one text per \
request, median of {args.rounds} alternating rounds.

| measure | value |
|---|---|
| no protection, {args.clients} clients | {plain:.0f} req/s |
| API keys + rate limit (not reached) + circuit breaker + timeout | {guarded:.0f} req/s |
| guarded / plain | {guarded / plain:.2f}x |
| 20/s limit: admitted over {lim['elapsed']:.1f} s (expected 20/s x elapsed + 20) | {ok} of {expected:.0f} expected ({(ok / expected - 1) * 100:+.1f} %) |
| 20/s limit: refused with 429 | {limited} |
| p50 latency of an answer / of a 429 | {p50.get(200, float('nan')):.1f} ms / {p50.get(429, float('nan')):.1f} ms |
"""
    print(text)
    if args.write:
        import local
        local.SECTION = SECTION
        _write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
