"""GPT-2 generation on the CPU: lmo's decoding loop vs PyTorch eager `generate`.

    python bench/textgen.py [--rounds 3] [--new 32] [--write] [--work DIR]

One GPT-2 124M-shaped checkpoint (12 layers, 768 wide, vocab 50257, random weights: speed
only) is converted by `lmo_runtime.convert` (fp32, Python backend: the model.onnx and
textgen.py the Triton models run) and decoded greedily at batch 1 and batch 8 (prompts of
the same token length, so every engine sees the same shapes), the same number of new tokens
for every engine (end-of-text disabled), side by side in one process with interleaved rounds:

* `torch`: transformers' `model.generate(do_sample=False)`, eager, its own KV cache;
* `lmo`: textgen.Generator with the in-process decoder as the Triton models run it: the
  graph returns the last position's logits only and the presents stay OrtValues bound by IO
  binding (what this round built);
* `lmo, cache via numpy`: the same graph with the cache copied out to numpy and back in
  every step (what IO binding removes);
* `lmo, cache via numpy, spinning threads`: also with onnxruntime's worker threads
  busy-waiting between runs (LMO_ORT_SPIN=1; the decoder's default before this round).

The graph of every lmo row returns the last position's logits only (the 1.65 GB-per-prefill
logits of before are not reproduced here).

Tokens/s counts new tokens of all rows over the whole call (prefill included). The runs must
produce the same tokens as PyTorch (printed as agreement; random weights can make near-ties
flip, which is reported, not hidden). `--write` replaces the section in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## Text generation: lmo decoding vs PyTorch generate"
THREADS = int(os.environ.get("LMO_BENCH_THREADS", "2"))
SHAPE = dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257)
PROMPT_TOKENS = 16


def _machine() -> str:
    sys.path.insert(0, str(ROOT / "runtime"))
    from lmo_runtime.families.int8 import cpu_flags, cpu_model

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu_model()} ({os.cpu_count()} cores, flags: "
            f"{', '.join(sorted(cpu_flags())) or 'none'}), load average {load:.1f}")


def _prompts(tokenizer, n: int) -> list[list[int]]:
    """`n` prompts of exactly PROMPT_TOKENS tokens, from the built-in sentences."""
    from lmo_runtime.families import SAMPLE_TEXTS

    out = []
    for i in range(len(SAMPLE_TEXTS)):
        text = " ".join(SAMPLE_TEXTS[i:i + 3])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= PROMPT_TOKENS:
            out.append(ids[:PROMPT_TOKENS])
        if len(out) == n:
            return out
    raise RuntimeError("not enough long prompts")


def run(rounds: int, new: int, work: Path) -> str:
    import importlib.util

    import onnxruntime as ort
    import torch

    sys.path.insert(0, str(ROOT))
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    torch.set_num_threads(THREADS)
    ckpt = work / "ckpt"
    if not (ckpt / "model.safetensors").is_file():
        make_gpt2_checkpoint(ckpt, steps=0, **SHAPE)
    artifact = work / "artifact"
    if not (artifact / "manifest.json").is_file():
        convert(ConversionRequest(checkpoint_uri=str(ckpt), task="text-generation",
                                  precision="fp32", backend="python", min_score=0.0),
                artifact, progress=False)
    assets = artifact / "model_repository" / "text_generation" / "1"
    # the textgen.py of this tree (what a conversion ships now), on the artifact's model
    source = ROOT / "runtime" / "lmo_runtime" / "triton_models" / "text_generation"
    spec = importlib.util.spec_from_file_location("lmo_bench_textgen", source / "textgen.py")
    textgen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = textgen
    spec.loader.exec_module(textgen)

    from transformers import GPT2LMHeadModel, GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(str(ckpt))
    model = GPT2LMHeadModel.from_pretrained(str(ckpt), dtype=torch.float32).eval()
    engines = {
        "lmo": textgen.ort_generator(assets, threads=THREADS),
        "lmo, cache via numpy": textgen.ort_generator(assets, threads=THREADS,
                                                      io_binding=False),
    }
    os.environ["LMO_ORT_SPIN"] = "1"  # read when the session is made
    engines["lmo, cache via numpy, spinning threads"] = textgen.ort_generator(
        assets, threads=THREADS, io_binding=False)
    del os.environ["LMO_ORT_SPIN"]

    def lmo_runner(generator, rows):
        """Generator._steps on these exact token ids (the served loop after tokenization:
        sampling, stop checks and detokenization of every step included)."""
        generator.stops = frozenset()  # the same number of tokens as torch: no early stop

        def call():
            batch = [textgen._Row(list(r), textgen.Params(max_tokens=new), new, None)
                     for r in rows]
            for _ in generator._steps(batch):
                pass
            return [r.generated for r in batch]
        return call

    def torch_runner(rows):
        ids = torch.tensor(rows)

        def call():
            with torch.inference_mode():
                out = model.generate(ids, attention_mask=torch.ones_like(ids),
                                     max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                     pad_token_id=0, eos_token_id=None)
            return out[:, ids.shape[1]:].tolist()
        return call

    lines = [
        f"{date.today().isoformat()}, {platform.node()}: {_machine()}; torch "
        f"{torch.__version__}, onnxruntime {ort.__version__}, {THREADS} threads each; GPT-2 "
        f"124M shapes (12x768, vocab 50257, random weights), fp32; greedy, {PROMPT_TOKENS}-token "
        f"prompts, {new} new tokens per row; median of {rounds} interleaved rounds after 1 "
        "warm-up.",
        "",
        "| batch | engine | tokens/s | vs PyTorch | same tokens as PyTorch |",
        "|---|---|---|---|---|",
    ]
    for batch in (1, 8):
        rows = _prompts(tokenizer, batch)
        runners = {"PyTorch eager generate": torch_runner(rows)}
        runners.update({name: lmo_runner(g, rows) for name, g in engines.items()})
        results = {name: r() for name, r in runners.items()}  # warm-up, and the tokens
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, r in runners.items():
                start = time.perf_counter()
                r()
                times[name].append(time.perf_counter() - start)
        ref = results["PyTorch eager generate"]
        base = statistics.median(times["PyTorch eager generate"])
        for name in runners:
            t = statistics.median(times[name])
            agree = sum(a == b for x, y in zip(results[name], ref) for a, b in zip(x, y))
            total = sum(len(x) for x in ref)
            lines.append(f"| {batch} | {name} | {batch * new / t:.1f} | {base / t:.2f}x | "
                         f"{agree}/{total} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the checkpoint and artifact here (default: a temp dir)")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        body = run(args.rounds, args.new, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="lmo-bench-") as tmp:
            body = run(args.rounds, args.new, Path(tmp))
    if args.write:
        sys.path.insert(0, str(ROOT / "bench"))
        from runtime import write_section  # bench/runtime.py

        write_section(HEADING, body, "bench/textgen.py")


if __name__ == "__main__":
    main()
