"""Benchmark payload logging: what logging every request costs, and what a dead sink costs.

    python bench/payloads.py [--clients 8] [--seconds 10] [--rounds 3] [--write]

One tiny BERT classifier artifact (examples/make_checkpoints.py recipe, converted with the
Python backend) is served by three real tritonservers at once, the same repository each:

* off: no spec.logging.payloads;
* stdout: sampleRate 1, a redact rule, sink stdout (every request becomes a JSON line);
* dead s3: sampleRate 1, sink s3:// at an endpoint nobody answers (every batch fails and is
  dropped).

In alternating rounds (all three see the same background load) N clients send KServe v2
JSON requests (one text each) to one server for the given seconds; the requests/s and the
p99 latency per server, their ratios to "off", and the drop counter of the dead sink are
printed. `--write` replaces the `## Payload logging (bench/payloads.py)` section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECTION = "## Payload logging (bench/payloads.py)"
TEXT = "my number is 12345678901 and I love this product"


BODY = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                               "data": [TEXT]}]}).encode()
INFER = "/v2/models/text_classification/infer"


async def load(url: str, body: bytes, clients: int,
               seconds: float) -> tuple[float, float, int]:
    """(requests/s, p99 latency ms, errors) of `clients` callers POSTing `body` to `url`
    for `seconds`."""
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def caller(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < stop:
            began = time.perf_counter()
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(caller(session) for _ in range(clients)))
    elapsed = time.monotonic() - began
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(0.99 * (len(latencies) - 1))], errors


def dropped(metrics_url: str) -> float:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("lmo_payloads_dropped_total"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from examples.make_checkpoints import make_tiny_bert_classifier
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest
    from lmo_runtime.triton.server import TritonServer, free_port

    work = Path(tempfile.mkdtemp(prefix="lmo-bench-payloads-"))
    ckpt = make_tiny_bert_classifier(work / "ckpt", seed=0, steps=40)
    convert(ConversionRequest(checkpoint_uri=str(ckpt), task="text-classification",
                              precision="fp32", backend="python", min_score=0.0),
            work / "artifact", progress=False)
    repo = work / "artifact" / "model_repository"
    base = {"LMO_NAME": "bench", "LMO_VERSION": "v1"}
    configs = {
        "off": {},
        "stdout": {**base, "LMO_PAYLOADS": json.dumps(
            {"sampleRate": 1, "redact": [r"\b\d{11}\b"], "sink": "stdout"})},
        "dead s3": {**base, "LMO_PAYLOADS": json.dumps({"sampleRate": 1, "sink": "s3://bench/x"}),
                    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
                    "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                    "AWS_REGION": "us-east-1"},
    }
    servers = {name: TritonServer(repo, log_path=work / f"{name.replace(' ', '-')}.log",
                                  env=env).start() for name, env in configs.items()}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in configs}
    try:
        for name, s in servers.items():  # warm-up
            asyncio.run(load(s.url + INFER, BODY, args.clients, 2))
        for _ in range(args.rounds):
            for name, s in servers.items():
                results[name].append(asyncio.run(load(s.url + INFER, BODY, args.clients,
                                                      args.seconds)))
        drops = dropped(servers["dead s3"].metrics_url)
        why = re.search(r"lmo payloads: sink \S+ failed \((.*)\); records are dropped",
                        servers["dead s3"].log_path.read_text())
    finally:
        for s in servers.values():
            s.stop()

    def median(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name])

    rows = []
    for name in configs:
        rate, p99 = median(name, 0), median(name, 1)
        rows.append(f"| {name} | {rate:.0f} | {rate / median('off', 0):.2f}x | {p99:.1f} | "
                    f"{p99 / median('off', 1):.2f}x | {sum(r[2] for r in results[name])} |")
    text = "\n".join([
        SECTION, "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()}, {os.cpu_count()} cores (shared), with `python bench/payloads.py "
        f"--clients {args.clients} --seconds {args.seconds:g} --rounds {args.rounds}`: a tiny "
        "BERT classifier, three pytriton CPU servers (Python backend) on one artifact, KServe v2 "
        "JSON, one text per request; medians of the rounds.", "",
        "| payload logging | req/s | vs off | p99 ms | vs off | errors |",
        "|---|---|---|---|---|---|",
        *rows, "",
        f"The dead s3 sink dropped {drops:.0f} records (lmo_payloads_dropped_total) and failed no "
        "request; its writer reported: " + (why.group(1)[:160] if why else "(nothing)") + ".", "",
    ])
    print(text)
    if args.write:
        path = ROOT / "bench" / "RESULTS.md"
        old = path.read_text()
        pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
        new = pattern.sub(text.rstrip("\n") + "\n", old) if SECTION in old \
            else old.rstrip("\n") + "\n\n" + text
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
