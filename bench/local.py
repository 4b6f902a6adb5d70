"""Benchmark `lmo up`: time to first answer (cold and warm) and front-door overhead.

    python bench/local.py [-f examples/minilm.yaml] [--clients 16] [--seconds 20] [--write]

1. cold: a fresh work dir (conversion included) until the first answer through the door;
2. warm: the same work dir again (conversion cache hit) until the first answer;
3. requests/s at N concurrent clients (KServe v2 JSON infer, one text each) through the
   front door and straight to the version's Triton server, in alternating rounds (both
   sides see the same background load), with the same client (aiohttp, one process). The
   ratio door/direct is the front door's cost.

`--write` replaces the `## lmo up (bench/local.py)` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## lmo up (bench/local.py)"
TEXTS = [
    "The operator converts the checkpoint and serves it with Triton.",
    "I love this, it is wonderful",
    "Traffic moves to the new version one step at a time.",
    "A short sentence.",
]


def _lmo() -> str:
    return str(Path(sys.executable).parent / "lmo")


def start(file: Path, work: Path) -> tuple[subprocess.Popen, float, str]:
    """Start `lmo up`; return (process, seconds to first answer, front door URL)."""
    t0 = time.monotonic()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [_lmo(), "up", "-f", str(file), "--port", "0", "--work-dir", str(work), "--quiet",
         "--no-watch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    state = work / "up.json"
    deadline = t0 + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lmo up exited with {proc.returncode}")
        if state.exists():
            url = json.loads(state.read_text())["url"]
            task = json.loads(state.read_text())["task"]
            req = urllib.request.Request(
                f"{url}/v1/{task}", data=json.dumps({"text": TEXTS[0]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    if r.status == 200:
                        return proc, time.monotonic() - t0, url
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError("lmo up gave no answer in 900 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def load(url: str, model: str, clients: int, seconds: float) -> tuple[float, int]:
    """(requests/s, errors) of `clients` closed-loop callers for `seconds`."""
    bodies = [
        json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                "data": [t]}]}).encode()
        for t in TEXTS
    ]
    done = errors = 0
    stop_at = 0.0

    async def caller(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal done, errors
        n = i
        while time.monotonic() < stop_at:
            async with session.post(f"{url}/v2/models/{model}/infer", data=bodies[n % 4],
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status == 200:
                    done += 1
                else:
                    errors += 1
            n += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as s:
        stop_at = time.monotonic() + 2  # warm up
        await asyncio.gather(*(caller(s, i) for i in range(clients)))
        done = errors = 0
        t0 = time.monotonic()
        stop_at = t0 + seconds
        await asyncio.gather(*(caller(s, i) for i in range(clients)))
        return done / (time.monotonic() - t0), errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (the front door is the `lmo up` process)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_results(text: str) -> None:
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = f"{SECTION}\n\n{text.strip()}\n\n"
    new = pattern.sub(block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block
    path.write_text(new)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-f", "--file", type=Path, default=ROOT / "examples" / "minilm.yaml")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=20.0, help="per side, all rounds")
    p.add_argument("--rounds", type=int, default=4, help="alternating door/direct rounds")
    p.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = p.parse_args()
    args.file = args.file.resolve()

    from lmo.api import load_file
    from lmo_runtime.manifest import ENTRY_MODEL

    lm = load_file(args.file)[0]
    model = ENTRY_MODEL[lm.spec.task]
    work = Path(tempfile.mkdtemp(prefix="lmo-bench-"))
    try:
        proc, cold, _ = start(args.file, work)
        stop(proc)
        proc, warm, url = start(args.file, work)
        try:
            status = json.loads(urllib.request.urlopen(f"{url}/lmo/status").read())
            first = status["versions"][0]["name"]
            direct = status["local"]["backends"][first]["url"]
            artifact = status["versions"][0]["artifact"]
            # Alternate short rounds so both sides see the same background load.
            rounds = max(1, args.rounds)
            door_runs, direct_runs = [], []
            door_cpu = 0.0
            for _ in range(rounds):
                cpu0 = cpu_seconds(proc.pid)
                door_runs.append(asyncio.run(load(url, model, args.clients,
                                                  args.seconds / rounds)))
                door_cpu += cpu_seconds(proc.pid) - cpu0
                direct_runs.append(asyncio.run(load(direct, model, args.clients,
                                                    args.seconds / rounds)))
            door_rps = sum(r for r, _ in door_runs) / rounds
            direct_rps = sum(r for r, _ in direct_runs) / rounds
            door_err = sum(e for _, e in door_runs)
            door_requests = sum(r for r, _ in door_runs) * args.seconds / rounds
            cpu_ms = 1000 * door_cpu / door_requests if door_requests else 0.0
            direct_err = sum(e for _, e in direct_runs)
        finally:
            stop(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = door_rps / direct_rps if direct_rps else 0.0
    text = f"""Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()},
{os.cpu_count()} cores (shared), with `python bench/local.py -f {args.file.relative_to(ROOT)}
--clients {args.clients} --seconds {args.seconds:g} --rounds {args.rounds}`: {lm.metadata.name} ({lm.spec.task},
precision {artifact.get('precision')}, {artifact.get('sizeBytes', 0) / 1e6:.1f} MB), the
pytriton CPU server (Python backend), KServe v2 JSON, one text per request.

| measure | value |
|---|---|
| cold `lmo up` to first answer (conversion included) | {cold:.1f} s |
| warm `lmo up` to first answer (conversion cache hit) | {warm:.1f} s |
| straight to Triton, {args.clients} clients | {direct_rps:.0f} req/s ({direct_err} errors) |
| through the front door, {args.clients} clients | {door_rps:.0f} req/s ({door_err} errors) |
| front door / direct | {ratio:.2f}x |
| front door CPU per request (the `lmo up` process) | {cpu_ms:.2f} ms |
"""
    print(text)
    if args.write:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
