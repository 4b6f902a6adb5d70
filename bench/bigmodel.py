"""Big models: a GPT-2 whose ONNX exceeds 2 GiB converts, its peak memory, Triton loads it.

    python bench/bigmodel.py [--shape large] [--precision fp32 int8] [--serve] [--write]

Builds a checkpoint of gpt2-large shapes (36 layers, 1280 wide, 20 heads, vocab 50257,
774M parameters) with random weights, saved locally as safetensors (nothing is downloaded;
the tokenizer is a byte-level BPE trained on the built-in sentences, padded to the vocab),
then runs `lmo convert` on it as a child process per precision and reads the child's peak
resident memory (ru_maxrss of that one child, from os.wait4; the checkpoint is built in
this process before). The aim: peak <= 2.5x the fp32
weights. With `--serve` a real tritonserver (nvidia-pytriton's, Python backend) loads the fp32
repository and generates 8 tokens, compared with PyTorch's greedy continuation.
`--write` replaces the `## Runtime: big models` block of bench/RESULTS.md.

Random weights make the accuracy gate's next-token agreement a property of fp32 rounding
only (fp32) or of quantization noise on near-uniform logits (int8), so the gate runs at
--min-score 0.9 here; this bench is about size and memory, not fidelity.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "large": dict(n_layer=36, n_embd=1280, n_head=20, n_positions=1024, vocab_size=50257),
    "medium": dict(n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50257),
    "small": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257),
}
AIM = 2.5


def make_checkpoint(dest: Path, shape: str) -> Path:
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    if not (dest / "model.safetensors").is_file():
        make_gpt2_checkpoint(dest, steps=0, **SHAPES[shape])
    return dest


def convert(ckpt: Path, out: Path, precision: str) -> dict:
    """Run `lmo convert` as a child; its summary, wall time and that child's peak RSS
    (os.wait4 reports the rusage of the one child it reaps)."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)  # an earlier artifact at --out would be reused
    summary = out.with_suffix(".json")
    log = out.with_suffix(".log")
    start = time.monotonic()
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmo_runtime.cli", str(ckpt), "--task", "text-generation",
             "--precision", precision, "--out", str(out), "--backend", "python", "--no-cache",
             "--min-score", "0.9", "--manifest-out", str(summary), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    data = json.loads(summary.read_text()) if summary.is_file() else {}
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    return {"rc": os.waitstatus_to_exitcode(status), "stderr": log.read_text()[-2000:],
            "summary": data, "manifest": manifest, "wall": wall,
            "peak": usage.ru_maxrss * 1024}  # KiB on Linux


def serve(repo: Path, ckpt: Path) -> tuple[str, str, float]:
    """(served text, PyTorch greedy text, seconds until ready) for one prompt."""
    import numpy as np
    import tritonclient.http as httpclient

    from lmo_runtime.families.gpt2 import FAMILY, greedy_text
    from lmo_runtime.triton.server import TritonServer

    prompt = "The customer asked for"
    start = time.monotonic()
    with TritonServer(repo, models=["text_generation"], start_timeout=900) as server:
        ready = time.monotonic() - start
        client = httpclient.InferenceServerClient(server.http_address, network_timeout=600)
        text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
        tokens = httpclient.InferInput("MAX_TOKENS", [1, 1], "INT32")
        tokens.set_data_from_numpy(np.array([[8]], dtype=np.int32))
        served = client.infer("text_generation", [text, tokens]).as_numpy("TEXT_OUTPUT")
        served_text = served.reshape(-1)[0].decode()
    loaded = FAMILY.load(ckpt, "text-generation")
    return served_text, greedy_text(loaded, prompt, 8), ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="large")
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--work", type=Path, help="keep the checkpoint and artifacts here")
    parser.add_argument("--serve", action="store_true", help="load the fp32 repository in Triton")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()

    from lmo_runtime.families.int8 import cpu_model

    work = args.work or Path(tempfile.mkdtemp(prefix="lmo-bigmodel-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    reused = (work / f"gpt2-{args.shape}" / "model.safetensors").is_file()
    ckpt = make_checkpoint(work / f"gpt2-{args.shape}", args.shape)
    made = "reused from --work" if reused else f"made in {time.monotonic() - start:.0f} s"
    weights = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
    cfg = json.loads((ckpt / "config.json").read_text())
    rows = []
    results = {}
    for precision in args.precision:
        out = work / f"artifact-{precision}"
        r = convert(ckpt, out, precision)
        results[precision] = r
        if r["rc"] != 0:
            print(f"{precision}: lmo convert exited {r['rc']}\n{r['stderr']}", file=sys.stderr)
            rows.append(f"| {precision} | failed (exit {r['rc']}) | | | | | |")
            continue
        files = {f["path"]: f["size_bytes"] for f in r["manifest"]["files"]}
        onnx = {p: s for p, s in files.items() if p.endswith((".onnx", ".data"))}
        graph = sum(s for p, s in onnx.items() if p.endswith(".onnx"))
        data = sum(s for p, s in onnx.items() if p.endswith(".data"))
        t = r["manifest"].get("timings", {})
        peak = f"{r['peak'] / 2**30:.2f} GiB"
        rows.append(
            f"| {precision} | {graph / 2**20:.1f} MiB + {data / 2**30:.2f} GiB | {peak} | "
            f"{r['peak'] / weights:.2f}x | {r['summary'].get('score')} | "
            f"{t.get('export', 0):.0f} / {r['wall']:.0f} s | "
            f"{'met' if r['peak'] <= AIM * weights else 'NOT met'} |"
        )
    load = os.getloadavg()
    lines = [
        f"{date.today().isoformat()}, {platform.node()}; CPU {cpu_model()} ({os.cpu_count()} "
        f"cores, shared), {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} "
        f"GiB RAM; load average {load[0]:.1f} at the end. `python bench/bigmodel.py --shape "
        f"{args.shape}{' --serve' if args.serve else ''}`: GPT-2 {args.shape} shapes "
        f"({cfg['n_layer']} layers, {cfg['n_embd']} wide, vocab {cfg['vocab_size']}), random "
        f"weights, fp32 safetensors {weights / 2**30:.2f} GiB ({made}); each "
        "precision converted by `lmo convert` in a child process (Python backend, no cache).",
        "",
        "| precision | model.onnx + model.onnx.data | peak RSS | peak / fp32 weights | "
        "gate score (min 0.9) | export / total s | peak <= 2.5x |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    if args.serve and results.get("fp32", {}).get("rc") == 0:
        served, reference, ready = serve(work / "artifact-fp32" / "model_repository", ckpt)
        lines.append("")
        lines.append(
            f"Triton (nvidia-pytriton tritonserver, Python backend) loaded the fp32 repository "
            f"in {ready:.0f} s and answered 8 greedy tokens for 'The customer asked for': "
            f"{served!r}, {'equal to' if served == reference else 'DIFFERENT from'} PyTorch's "
            f"{reference!r} (random weights pick token ids beyond the 512-token test "
            "tokenizer, which decode to nothing: the equality is the check)."
        )
    text = "\n".join(lines)
    print(text)
    if args.write:
        _write(text)


def _write(body: str) -> None:
    import re

    results = ROOT / "bench" / "RESULTS.md"
    heading = "## Runtime: big models"
    text = results.read_text()
    block = f"{heading} (bench/bigmodel.py)\n\n{body}\n"
    pattern = re.compile(rf"^{re.escape(heading)}.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    results.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
