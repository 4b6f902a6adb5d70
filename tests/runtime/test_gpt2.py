"""GPT-2 family: KV-cache export, int8, accuracy gate, repository, and the generation engine."""

from __future__ import annotations

import importlib.util
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest

from lmo_runtime.errors import ConversionError
from lmo_runtime.families import heldout_texts
from lmo_runtime.families.gpt2 import FAMILY, greedy_text
from lmo_runtime.manifest import Manifest
from lmo_runtime.triton.config import validate_config

pytestmark = pytest.mark.slow

PROMPTS = ["The customer asked for", "Scientists discovered a", "It", "Rain is expected tomorrow"]


def _textgen():
    """The generation engine shipped in the Triton models (imported from its file)."""
    if "lmo_textgen_under_test" in sys.modules:
        return sys.modules["lmo_textgen_under_test"]
    path = resources.files("lmo_runtime") / "triton_models" / "text_generation" / "textgen.py"
    spec = importlib.util.spec_from_file_location("lmo_textgen_under_test", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _manifest(artifact: Path) -> Manifest:
    return Manifest.model_validate_json((artifact / "manifest.json").read_text())


def test_fp32_artifact_matches_pytorch(gpt2_fp32_artifact):
    m = _manifest(gpt2_fp32_artifact)
    assert m.accepted and m.precision == "fp32" and m.architecture == "GPT2LMHeadModel"
    assert m.entry_model == "text_generation"
    assert m.score.metric == "next_token_top1" and m.score.value == 1.0
    assert m.score.details["max_abs_diff_fp32"] < 1e-4
    assert m.score.details["kl"] < 1e-6
    assert m.golden.kind == "tokens" and len(m.golden.inputs) == 8
    assert all(isinstance(o, str) and o for o in m.golden.outputs)


def test_int8_quantizes_matmuls_only_and_passes_the_gate(gpt2_int8_artifact, gpt2_fp32_artifact):
    m = _manifest(gpt2_int8_artifact)
    assert m.accepted and m.precision == "int8"
    print(f"\nint8 next-token top-1 {m.score.value:.4f}, KL {m.score.details['kl']:.5f}, "
          f"size {m.size_bytes} vs fp32 {_manifest(gpt2_fp32_artifact).size_bytes}")
    assert m.score.value >= 0.99 and m.score.details["kl"] < 0.05
    assert m.size_bytes < 0.7 * _manifest(gpt2_fp32_artifact).size_bytes
    graph = onnx.load(str(gpt2_int8_artifact / "model_repository/text_generation/1/model.onnx"))
    ops = {n.op_type for n in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    # the embedding lookup stays float (a quantized Gather decodes ~2x slower)
    gathers = [n for n in graph.graph.node if n.op_type == "Gather"]
    inits = {i.name: i for i in graph.graph.initializer}
    embedding = [inits[n.input[0]] for n in gathers if n.input[0] in inits]
    assert embedding and all(t.data_type == onnx.TensorProto.FLOAT for t in embedding)


def test_one_graph_serves_prefill_and_decode(gpt2_loaded, tmp_path):
    exported = FAMILY.export(gpt2_loaded, tmp_path)
    assert exported.details["max_abs_diff_prefill"] < 1e-4
    assert exported.details["max_abs_diff_decode"] < 1e-4
    names = [i.name for i in onnx.load(str(exported.path)).graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:5] == ["past_key_values.0.key", "past_key_values.0.value"]


def test_engine_greedy_equals_pytorch_generate_batched(gpt2_loaded, gpt2_fp32_artifact):
    tg = _textgen()
    generator = tg.ort_generator(gpt2_fp32_artifact / "model_repository/text_generation/1",
                                 threads=1)
    params = [tg.Params(max_tokens=10) for _ in PROMPTS]
    expected = [greedy_text(gpt2_loaded, p, 10) for p in PROMPTS]
    # all prompts in one left-padded batch, and one at a time
    assert generator.generate(PROMPTS, params) == expected
    assert [generator.generate([p], [q])[0] for p, q in zip(PROMPTS, params)] == expected


def test_engine_sampling_stop_and_stream(gpt2_fp32_artifact):
    tg = _textgen()
    generator = tg.ort_generator(gpt2_fp32_artifact / "model_repository/text_generation/1",
                                 threads=1)
    hot = dict(max_tokens=12, temperature=3.0, top_k=50, top_p=0.95)
    runs = {seed: generator.generate([PROMPTS[0]], [tg.Params(seed=seed, **hot)])[0]
            for seed in (1, 2, 3, 1)}
    assert generator.generate([PROMPTS[0]], [tg.Params(seed=1, **hot)])[0] == runs[1]
    assert len(set(runs.values())) > 1  # a hot temperature samples, different seeds differ
    # a seeded row gives the same text whatever it is batched with
    batched = generator.generate([PROMPTS[1], PROMPTS[0]],
                                 [tg.Params(max_tokens=12), tg.Params(seed=1, **hot)])
    assert batched[1] == runs[1]

    full = generator.generate([PROMPTS[0]], [tg.Params(max_tokens=12)])[0]
    word = full.split()[2]
    stopped = generator.generate([PROMPTS[0]], [tg.Params(max_tokens=12, stop=(word,))])[0]
    assert stopped == full[: full.index(word)]
    pieces = list(generator.stream(PROMPTS[0], tg.Params(max_tokens=12, stop=(word,))))
    assert "".join(pieces) == stopped and len(pieces) > 1
    with pytest.raises(ValueError, match="TOP_P"):
        tg.Params(top_p=0).check()


def test_stop_hold_back():
    tg = _textgen()
    assert tg._stop_hold("hello wor", ("world",)) == 6
    assert tg._stop_hold("hello", ("world",)) == 5
    assert tg._stop_hold("ab\ufffd", ()) == 2


def test_repository_configs_parse_for_both_backends(gpt2_loaded, gpt2_fp32_artifact, tmp_path):
    """CPU + backend onnxruntime: the decoder is its own ONNX Runtime model, called through
    BLS, returning the last position's logits only. On GPUs the decoder runs inside the
    KIND_GPU Python models (IO binding keeps the cache on the GPU): no decoder model."""
    from lmo_runtime.manifest import ConversionRequest

    onnx_path = gpt2_fp32_artifact / "model_repository/text_generation/1/model.onnx"
    request = ConversionRequest(checkpoint_uri="file:///x", task="text-generation",
                                backend="onnxruntime")
    FAMILY.write_repository(gpt2_loaded, onnx_path, tmp_path / "cpu", request)
    configs = {p.parent.name: validate_config(p.read_text())
               for p in (tmp_path / "cpu").glob("*/config.pbtxt")}
    assert set(configs) == {"text_generation", "text_generation_stream", "gpt2_decoder"}
    decoder = configs["gpt2_decoder"]
    assert decoder.platform == "onnxruntime_onnx"
    assert decoder.instance_group[0].kind == decoder.instance_group[0].KIND_CPU
    logits = next(o for o in decoder.output if o.name == "logits")
    assert list(logits.dims) == [-1, gpt2_loaded.extra["spec"]["vocab_size"]]
    assert configs["text_generation"].parameters["ENGINE"].string_value == "bls"
    assert configs["text_generation_stream"].model_transaction_policy.decoupled
    assert (tmp_path / "cpu/gpt2_decoder/1/model.onnx").is_file()
    assert (tmp_path / "cpu/text_generation/1/lmo_bls.py").is_file()
    # the cache goes through /dev/shm in and out of every BLS call: the pod's /dev/shm is
    # sized to it (16 rows of the entry model + 4 streams, full context, float32)
    spec = gpt2_loaded.extra["spec"]
    cache = 2 * spec["n_layer"] * 20 * spec["n_head"] * spec["n_positions"] * spec["head_dim"] * 4
    assert gpt2_loaded.extra["shared_memory_bytes"] == 2 * cache + 20 * spec["vocab_size"] * 4

    gpu = ConversionRequest(checkpoint_uri="file:///x", task="text-generation",
                            backend="onnxruntime", gpus=1)
    FAMILY.write_repository(gpt2_loaded, onnx_path, tmp_path / "gpu", gpu)
    configs = {p.parent.name: validate_config(p.read_text())
               for p in (tmp_path / "gpu").glob("*/config.pbtxt")}
    assert set(configs) == {"text_generation", "text_generation_stream"}
    assert gpt2_loaded.extra["shared_memory_bytes"] is None
    for config in configs.values():
        assert config.instance_group[0].kind == config.instance_group[0].KIND_GPU
        assert config.instance_group[0].gpus == [0]
        assert config.parameters["ENGINE"].string_value == "onnxruntime"
    assert (tmp_path / "gpu/text_generation/1/model.onnx").is_file()

    for path in gpt2_fp32_artifact.glob("model_repository/*/config.pbtxt"):
        assert validate_config(path.read_text()).backend == "python"
    spec = json.loads((gpt2_fp32_artifact /
                       "model_repository/text_generation/1/generation.json").read_text())
    assert spec["n_layer"] == 2 and spec["eos_token_id"] is not None
    assert spec["eos_token_ids"] == [spec["eos_token_id"]] and not spec["add_bos"]


def test_fp16_keeps_float32_io_and_int8_static_is_refused(gpt2_loaded, gpt2_checkpoint,
                                                            tmp_path):
    exported = FAMILY.export(gpt2_loaded, tmp_path / "e")
    fp16 = FAMILY.optimize(exported, "fp16", gpt2_loaded, tmp_path / "fp16", 8)
    graph = onnx.load(str(fp16))
    assert {i.type.tensor_type.elem_type for i in graph.graph.input[3:]} == {
        onnx.TensorProto.FLOAT}  # clients and the cache stay float32
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    # mixed precision: MatMuls in fp16, LayerNorm and softmax in fp32
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.graph.value_info, *graph.graph.input, *graph.graph.output]}
    kept = [n for n in graph.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert kept and all(types.get(n.input[0]) == onnx.TensorProto.FLOAT for n in kept)
    assert any(types.get(n.input[0]) == onnx.TensorProto.FLOAT16
               for n in graph.graph.node if n.op_type == "MatMul")
    score = FAMILY.score(gpt2_loaded, fp16, heldout_texts(8), 0.99)
    assert score.passed and score.details["kl"] < 1e-3
    with pytest.raises(ConversionError, match="int8-static is not supported for GPT-2"):
        FAMILY.optimize(exported, "int8-static", gpt2_loaded, tmp_path / "o", 8)
    with pytest.raises(ConversionError, match="text-generation"):
        FAMILY.load(gpt2_checkpoint, "fill-mask")


def test_golden_replays_greedy_continuations(gpt2_loaded):
    golden = FAMILY.golden(gpt2_loaded, heldout_texts(2))
    assert golden.outputs == [greedy_text(gpt2_loaded, p, 8) for p in golden.inputs]


def test_engine_keeps_within_the_context_window(gpt2_fp32_artifact):
    tg = _textgen()
    generator = tg.ort_generator(gpt2_fp32_artifact / "model_repository/text_generation/1",
                                 threads=1)
    long_prompt = " ".join(heldout_texts(32))  # far more than n_positions (128) tokens
    row = generator._row(long_prompt, tg.Params(max_tokens=500))
    assert len(row.prompt_ids) + row.limit <= generator.n_positions
    # a long and a short prompt in one batch: positions stay per row, both generate
    out = generator.generate([long_prompt, "It"], [tg.Params(max_tokens=8)] * 2)
    assert all(isinstance(o, str) for o in out)
    assert out[1] == generator.generate(["It"], [tg.Params(max_tokens=8)])[0]


def test_engine_batches_a_finished_long_row_with_a_long_running_short_one(gpt2_fp32_artifact):
    """A long prompt with few MAX_TOKENS finishes first; the short prompt with many keeps
    decoding: the finished row's positions must stay inside the context (they went past
    n_positions and failed the whole batch in the position-embedding Gather)."""
    tg = _textgen()
    generator = tg.ort_generator(gpt2_fp32_artifact / "model_repository/text_generation/1",
                                 threads=1)
    long_prompt = " ".join(heldout_texts(32))  # truncated to n_positions - 4 tokens
    params = [tg.Params(max_tokens=4), tg.Params(max_tokens=100)]
    out = generator.generate([long_prompt, "It"], params)
    assert out == [generator.generate([long_prompt], [params[0]])[0],
                   generator.generate(["It"], [params[1]])[0]]
    # the short row decoded past the step where the long one reached the context's end
    assert len(generator.tokenizer.encode(out[1]).ids) > 8


def test_int8_static_falls_back_to_int8_or_is_refused_before_export(gpt2_checkpoint, tmp_path,
                                                                     monkeypatch):
    """GPT-2 cannot produce int8-static: with fallback it is skipped (int8 is tried next),
    without it the request is refused before the checkpoint is loaded and exported."""
    from lmo_runtime.families.gpt2 import Gpt2Family
    from tests.fixtures.gpt2 import convert_gpt2

    m = convert_gpt2(gpt2_checkpoint, tmp_path / "a", None, "int8-static", fallback=True)
    assert m.accepted and m.precision == "int8" and len(m.attempts) == 1
    assert m.request.precision == "int8-static"

    def no_export(self, *args, **kwargs):
        raise AssertionError("exported a request that is refused")

    monkeypatch.setattr(Gpt2Family, "export", no_export)
    with pytest.raises(ConversionError, match=r"precision int8-static is not supported for gpt2 "
                                              r"checkpoints \(it supports fp32, fp16, int8\).*"
                                              r"--fallback"):
        convert_gpt2(gpt2_checkpoint, tmp_path / "b", None, "int8-static")
    assert not (tmp_path / "b").exists()


def test_tiny_context_converts_and_golden_matches_serving(tmp_path):
    """n_positions 8 is shorter than golden prompt + continuation: the golden run keeps
    within the context exactly as the served generator does (it crashed in the embedding)."""
    from tests.fixtures.checkpoints import make_gpt2_checkpoint
    from tests.fixtures.gpt2 import convert_gpt2

    ckpt = make_gpt2_checkpoint(tmp_path / "ckpt", steps=20, n_positions=8)
    m = convert_gpt2(ckpt, tmp_path / "a", None, "fp32")
    assert m.accepted and m.golden.kind == "tokens"
    tg = _textgen()
    generator = tg.ort_generator(tmp_path / "a/model_repository/text_generation/1", threads=1)
    params = [tg.Params(max_tokens=8) for _ in m.golden.inputs]
    assert generator.generate(m.golden.inputs, params) == m.golden.outputs
