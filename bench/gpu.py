"""The GPU check: what lmo's GPU path does on a real GPU, in one short run (<= 8 minutes on
one H100), results as JSON under $OUT (default ./gpu-out).

    python bench/gpu.py [--out DIR] [--budget 450] [--smoke]

Made for the lent device machine: Python 3.12, no registry, only this working tree. It
therefore makes everything it needs from what the machine has (torch, transformers,
tokenizers, onnx, onnxruntime-gpu, tensorrt, tritonserver are each probed; a missing one
skips the steps that need it and is named in the JSON), and writes results after every step,
so a run cut short still reports what it measured. Steps, each under the time budget:

1. `environment`: Python, GPU (nvidia-smi), package versions, ONNX Runtime providers.
2. `minilm`: a MiniLM-shaped BERT (6 x 384, 12 heads, random weights, WordPiece tokenizer
   trained here) converted by lmo's encoder family at fp32, fp16 and int8 (feature-extraction);
   each run on ONNX Runtime CUDA and TensorRT EPs and PyTorch CUDA (fp32, fp16) at batch 1
   and 32 (sequence 128): median latency, cosine to PyTorch fp32, and which nodes ran on
   which provider (ONNX Runtime's profiler): the int8 row shows why lmo refuses int8 on GPUs.
3. `gpt2`: a GPT-2 124M-shaped decoder (random weights) converted by lmo at fp32 and fp16;
   greedy tokens/s at batch 1 and 8 with textgen's in-process decoder on CUDA, cache kept on
   the GPU by IO binding vs copied through numpy every step, and PyTorch CUDA `generate`;
   node placement of the fp16 graph.
4. `triton`: when `tritonserver` is on PATH, lmo's BERT (backend onnxruntime: BLS to a
   KIND_GPU ONNX model, outputs requested in CPU memory) and GPT-2 (KIND_GPU Python models)
   repositories each answer one request.

`--smoke` runs tiny shapes on whatever is there (CPU included) to check the script itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "operator"), str(ROOT)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PACKAGES = ("numpy", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "pydantic",
            "tritonclient", "tensorrt", "safetensors", "google.protobuf")
RESULTS: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
DEADLINE = 0.0


class OutOfTime(Exception):
    pass


def left() -> float:
    return DEADLINE - time.monotonic()


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(RESULTS, indent=2, default=str))


def step(name: str, out: Path, fn, *args) -> None:
    """Run one step; its result (or error, or skip reason) goes into RESULTS[name]."""
    began = time.monotonic()
    if left() < 20:
        RESULTS[name] = {"skipped": "out of time"}
        write(out)
        return
    try:
        RESULTS[name] = fn(*args)
    except OutOfTime:
        RESULTS.setdefault(name, {})["stopped"] = "out of time"
    except Exception as exc:  # noqa: BLE001 - recorded, the next step still runs
        RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc()[-3000:]}
    if isinstance(RESULTS.get(name), dict):
        RESULTS[name]["seconds"] = round(time.monotonic() - began, 1)
    write(out)


def have(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False


def environment() -> dict:
    env: dict[str, Any] = {"python": sys.version.split()[0], "machine": platform.machine(),
                           "cpus": os.cpu_count()}
    for name in PACKAGES:
        try:
            env[name] = getattr(importlib.import_module(name), "__version__", "present")
        except Exception as exc:  # noqa: BLE001
            env[name] = f"missing ({type(exc).__name__})"
    smi = shutil.which("nvidia-smi")
    if smi:
        env["gpu"] = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    if have("onnxruntime"):
        import onnxruntime as ort

        env["ort_providers"] = ort.get_available_providers()
    if have("torch"):
        import torch

        env["torch_cuda"] = torch.cuda.is_available()
    env["tritonserver"] = shutil.which("tritonserver")
    return env


# --------------------------------------------------------------------------- helpers


def _median_seconds(fn, rounds: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(rounds):
        if left() < 10:
            raise OutOfTime
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _placement(path: Path, providers: list, feed: dict) -> dict[str, int]:
    """Nodes per execution provider in one profiled run (ONNX Runtime's profiler)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / f"profile-{path.stem}")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=providers)
    session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, set[str]] = {}
    for event in trace:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            nodes.setdefault(args["provider"], set()).add(event["name"].rsplit("_kernel_time", 1)[0])
    return {provider: len(names) for provider, names in nodes.items()}


def _providers(kind: str, work: Path) -> list:
    if kind == "cuda":
        return [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    if kind == "tensorrt":
        cache = work / "trt-cache"
        cache.mkdir(parents=True, exist_ok=True)
        return [("TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": True,
                                               "trt_engine_cache_enable": True,
                                               "trt_engine_cache_path": str(cache)}),
                ("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _engines() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    out = []
    if "CUDAExecutionProvider" in available:
        out.append("cuda")
    if "TensorrtExecutionProvider" in available:
        out.append("tensorrt")
    return out or ["cpu"]


def _wordpiece(out: Path) -> None:
    """A WordPiece tokenizer trained on the built-in sentences, saved as BertTokenizerFast."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from lmo_runtime.families import SAMPLE_TEXTS

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(list(SAMPLE_TEXTS) * 4, vocab_size=2000, min_frequency=1,
                           show_progress=False)
    out.mkdir(parents=True, exist_ok=True)
    wp.save_model(str(out))
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True).save_pretrained(
        str(out))


# --------------------------------------------------------------------------- MiniLM


def minilm(work: Path, smoke: bool) -> dict:
    import numpy as np
    import onnxruntime as ort
    import torch
    from transformers import BertConfig, BertModel

    from lmo_runtime.families import heldout_texts
    from lmo_runtime.families.encoder import FAMILY

    ckpt = work / "minilm"
    _wordpiece(ckpt)
    layers, hidden, heads = (2, 64, 4) if smoke else (6, 384, 12)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=2000, hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=4 * hidden,
                         max_position_embeddings=512)).save_pretrained(str(ckpt))
    loaded = FAMILY.load(ckpt, "feature-extraction")
    exported = FAMILY.export(loaded, work / "minilm-export")
    models = {"fp32": exported.path}
    for precision in ("fp16", "int8"):
        models[precision] = FAMILY.optimize(exported, precision, loaded,
                                            work / f"minilm-{precision}", 16)
    tok = loaded.tokenizer
    texts = (heldout_texts() * 4)[:32]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    ref_model = loaded.model.to(device).eval()  # returns what the ONNX graph returns
    result: dict[str, Any] = {"shape": f"{layers}x{hidden}", "rows": []}
    rounds = 3 if smoke else 20
    for batch in (1, 32):
        enc = tok((texts * 2)[:batch], padding="max_length", truncation=True, max_length=128,
                  return_tensors="np")
        names = loaded.extra["inputs"]  # the graph's inputs, in the wrapper's order
        feed = {k: enc[k].astype(np.int64) for k in names}
        tfeed = [torch.from_numpy(feed[k]).to(device) for k in names]
        with torch.inference_mode():
            ref = ref_model(*tfeed).float().cpu().numpy()
        ref_n = ref / np.linalg.norm(ref, axis=-1, keepdims=True)
        for dtype in (["fp32", "fp16"] if cuda else ["fp32"]):
            def run_torch(dtype=dtype):
                with torch.inference_mode(), torch.autocast(
                        device, dtype=torch.float16, enabled=dtype == "fp16"):
                    out = ref_model(*tfeed)
                if cuda:
                    torch.cuda.synchronize()
                return out
            seconds = _median_seconds(run_torch, rounds)
            got = run_torch().float().cpu().numpy()
            cos = (got / np.linalg.norm(got, axis=-1, keepdims=True) * ref_n).sum(-1)
            result["rows"].append({"engine": f"pytorch-{device}", "precision": dtype,
                                   "batch": batch, "ms": seconds * 1e3,
                                   "cosine_min": float(cos.min())})
        for precision, path in models.items():
            for kind in _engines():
                try:
                    options = ort.SessionOptions()
                    options.log_severity_level = 3
                    session = ort.InferenceSession(str(path), options,
                                                   providers=_providers(kind, work))
                    names = {i.name for i in session.get_inputs()}
                    f = {k: v for k, v in feed.items() if k in names}
                    seconds = _median_seconds(lambda s=session, f=f: s.run(None, f), rounds)
                    got = session.run(None, f)[0].astype(np.float32)
                    cos = (got / np.linalg.norm(got, axis=-1, keepdims=True) * ref_n).sum(-1)
                    row = {"engine": f"ort-{kind}", "precision": precision, "batch": batch,
                           "ms": seconds * 1e3, "cosine_min": float(cos.min())}
                    if batch == 1:
                        row["nodes_by_provider"] = _placement(path, _providers(kind, work), f)
                except OutOfTime:
                    raise
                except Exception as exc:  # noqa: BLE001 - a provider refusing a model is data
                    row = {"engine": f"ort-{kind}", "precision": precision, "batch": batch,
                           "error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                result["rows"].append(row)
                RESULTS["minilm"] = result
    return result


# --------------------------------------------------------------------------- GPT-2


def gpt2(work: Path, smoke: bool) -> dict:
    import importlib.util

    import torch

    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    shape = (dict(n_layer=2, n_embd=64, n_head=4, n_positions=128) if smoke else
             dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257))
    ckpt = make_gpt2_checkpoint(work / "gpt2", steps=0, **shape)
    cuda = torch.cuda.is_available()
    result: dict[str, Any] = {"shape": f"{shape['n_layer']}x{shape['n_embd']}", "rows": []}
    new = 8 if smoke else 32
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(str(ckpt)).eval()
    if cuda:
        model = model.cuda()
    for precision in ("fp32", "fp16") if cuda else ("fp32",):
        out = work / f"gpt2-{precision}"
        manifest = convert(ConversionRequest(
            checkpoint_uri=str(ckpt), task="text-generation", precision=precision,
            backend="python", gpus=1 if cuda else 0, min_score=0.0), out, progress=False)
        result[f"score_{precision}"] = manifest.score.model_dump()
        assets = out / "model_repository" / "text_generation" / "1"
        spec = importlib.util.spec_from_file_location(f"textgen_{precision}",
                                                      assets / "textgen.py")
        textgen = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = textgen
        spec.loader.exec_module(textgen)
        device = 0 if cuda else None
        engines = {"device cache (IO binding)": textgen.ort_generator(assets, device_id=device),
                   "cache via numpy": textgen.ort_generator(assets, device_id=device,
                                                            io_binding=False)}
        for batch in (1, 8):
            prompts = [[(7 * i + j) % 1000 + 10 for j in range(16)] for i in range(batch)]
            for name, generator in engines.items():
                generator.stops = frozenset()

                def run(generator=generator):
                    rows = [textgen._Row(list(p), textgen.Params(max_tokens=new), new, None)
                            for p in prompts]
                    for _ in generator._steps(rows):
                        pass
                seconds = _median_seconds(run, 3)
                result["rows"].append({"engine": f"lmo {name}", "precision": precision,
                                       "batch": batch, "tokens_per_s": batch * new / seconds,
                                       "device": generator.decoder.device})
                RESULTS["gpt2"] = result
            ids = torch.tensor(prompts, device="cuda" if cuda else "cpu")
            tmodel = model.half() if precision == "fp16" else model.float()

            def run_torch(tmodel=tmodel, ids=ids):
                with torch.inference_mode():
                    tmodel.generate(ids, attention_mask=torch.ones_like(ids),
                                    max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                    pad_token_id=0, eos_token_id=None)
                if cuda:
                    torch.cuda.synchronize()
            seconds = _median_seconds(run_torch, 3)
            result["rows"].append({"engine": "pytorch generate", "precision": precision,
                                   "batch": batch, "tokens_per_s": batch * new / seconds})
        if cuda:
            import numpy as np

            n_layer = shape["n_layer"]
            heads, dim = shape["n_head"], shape["n_embd"] // shape["n_head"]
            feed = {"input_ids": np.ones((1, 4), np.int64),
                    "attention_mask": np.ones((1, 4), np.int64),
                    "position_ids": np.arange(4, dtype=np.int64)[None]}
            feed.update({n: np.zeros((1, heads, 0, dim), np.float32)
                         for n in textgen.past_names(n_layer)})
            result[f"nodes_by_provider_{precision}"] = _placement(
                assets / "model.onnx", _providers("cuda", work), feed)
    model.cpu()
    return result


# --------------------------------------------------------------------------- Triton


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def triton(work: Path, smoke: bool) -> dict:
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest

    binary = shutil.which("tritonserver")
    if not binary:
        return {"skipped": "no tritonserver on PATH"}
    out: dict[str, Any] = {}
    cases = {
        "bert": ("feature-extraction", work / "minilm", "feature_extraction"),
        "gpt2": ("text-generation", work / "gpt2", "text_generation"),
    }
    for name, (task, ckpt, entry) in cases.items():
        if not (ckpt / "config.json").is_file() or left() < 60:
            out[name] = {"skipped": "no checkpoint or no time"}
            continue
        artifact = work / f"triton-{name}"
        convert(ConversionRequest(checkpoint_uri=str(ckpt), task=task, precision="fp16",
                                  backend="onnxruntime", gpus=1, min_score=0.0),
                artifact, progress=False)
        http = _free_port()
        log = open(work / f"triton-{name}.log", "wb")
        proc = subprocess.Popen(
            [binary, f"--model-repository={artifact / 'model_repository'}",
             f"--http-port={http}", f"--grpc-port={_free_port()}",
             f"--metrics-port={_free_port()}", "--exit-timeout-secs=5"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = False
            deadline = time.monotonic() + min(180, left() - 20)
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(
                            f"http://127.0.0.1:{http}/v2/health/ready", timeout=2) as r:
                        ready = r.status == 200
                except OSError:
                    pass
                if ready:
                    break
                time.sleep(1)
            body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                "data": ["The quick brown fox"]}]}
            answer: Any = None
            if ready:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{http}/v2/models/{entry}/infer",
                    data=json.dumps(body).encode(), headers={"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as r:
                    answer = json.loads(r.read())
                answer = {o["name"]: str(o.get("data"))[:200] for o in answer["outputs"]}
            out[name] = {"ready": ready, "answer": answer}
        except Exception as exc:  # noqa: BLE001
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            out[name]["log_tail"] = (work / f"triton-{name}.log").read_text(
                errors="replace")[-1500:]
    return out


def main() -> None:
    global DEADLINE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-out")))
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all steps")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (checks the script)")
    args = parser.parse_args()
    DEADLINE = time.monotonic() + args.budget
    RESULTS["smoke"] = args.smoke
    step("environment", args.out, environment)
    needs = ("torch", "transformers", "tokenizers", "onnx", "onnxruntime", "pydantic")
    missing = [m for m in needs if not have(m)]
    if missing:
        RESULTS["skipped"] = f"missing packages: {', '.join(missing)}"
        write(args.out)
        print(json.dumps(RESULTS, indent=2, default=str))
        return
    with tempfile.TemporaryDirectory(prefix="lmo-gpu-") as tmp:
        work = Path(tmp)
        step("minilm", args.out, minilm, work, args.smoke)
        step("gpt2", args.out, gpt2, work, args.smoke)
        step("triton", args.out, triton, work, args.smoke)
    RESULTS["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(args.out)
    print(json.dumps({k: v for k, v in RESULTS.items() if k != "environment"}, indent=1,
                     default=str)[:6000])


if __name__ == "__main__":
    main()
