"""What makes lmo's int8 encoders fast, checked on the graph of a tiny BERT made here (2 layers,
hidden 32, a WordPiece tokenizer trained by tests/fixtures/encoders.py): the attention is fused
and its Q/K/V weights quantized as one int8 tensor (QAttention), every weight MatMul runs on
int8 per-channel weights, the embedding table is int8, GELU is the tanh approximation, residual
Adds and LayerNormalization stay apart and the session settings the artifact carries keep
onnxruntime from fusing them back into its slower SkipLayerNormalization kernel. int8-static is
the same graph with calibrated, fixed activation scales. (The speed itself is measured by
bench/runtime.py, not asserted here.)
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from lmo_runtime.convert import convert
from lmo_runtime.families import heldout_texts
from lmo_runtime.families.int8 import CPU_SESSION_CONFIG
from lmo_runtime.manifest import REPOSITORY_DIR, ConversionRequest
from tests.fixtures.encoders import make_encoder

LAYERS = 2  # make_encoder's config


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("int8-recipe") / "bert", "bert",
                        "feature-extraction", steps=20)


@pytest.fixture(scope="module")
def artifacts(tiny_bert, tmp_path_factory):
    """{precision: (manifest, model directory)} for int8 and int8-static."""
    root = tmp_path_factory.mktemp("int8-recipe-artifacts")
    out = {}
    for precision in ("int8", "int8-static"):
        request = ConversionRequest(checkpoint_uri=str(tiny_bert), task="feature-extraction",
                                    precision=precision, backend="python")
        manifest = convert(request, root / precision, progress=False)
        out[precision] = (manifest, root / precision / REPOSITORY_DIR / "feature_extraction" / "1")
    return out


def _graph(version_dir):
    graph = onnx.load(str(version_dir / "model.onnx")).graph
    return graph, {i.name: i for i in graph.initializer}, Counter(n.op_type for n in graph.node)


def _optimized_ops(model, tmp_path, config: dict[str, str]) -> Counter:
    """Op types of the graph onnxruntime runs after its own load-time fusions."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def test_int8_quantizes_the_fused_attention_and_keeps_layer_norm_apart(artifacts, tmp_path):
    manifest, version = artifacts["int8"]
    assert manifest.accepted and manifest.precision == "int8"
    graph, weights, ops = _graph(version)
    nodes = {op: [n for n in graph.node if n.op_type == op] for op in ops}

    # one fused attention per layer, Q/K/V as one int8 weight with a scale per column
    assert ops["QAttention"] == LAYERS and ops["Attention"] == 0
    for node in nodes["QAttention"]:
        qkv, scale = weights[node.input[1]], weights[node.input[4]]
        assert qkv.data_type == TensorProto.INT8
        assert list(scale.dims) == [qkv.dims[1]]  # per channel
    # attention output, FFN in and FFN out: int8 per-channel weights, no float MatMul left
    assert ops["MatMulInteger"] == 3 * LAYERS and ops["MatMul"] == 0
    for node in nodes["MatMulInteger"]:
        w, zero = weights[node.input[1]], weights[node.input[3]]
        assert w.data_type == TensorProto.INT8 and list(zero.dims) == [w.dims[1]]
    # the embedding table is quantized too (a 4x smaller artifact)
    (embed,) = nodes["QEmbedLayerNormalization"]
    assert weights[embed.input[2]].data_type in (TensorProto.INT8, TensorProto.UINT8)
    # GELU as FastGelu; residual Add + LayerNormalization, not SkipLayerNormalization
    assert ops["FastGelu"] == LAYERS and ops["BiasGelu"] == ops["Gelu"] == 0
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == 2 * LAYERS

    # the artifact carries the session settings, and they keep the LayerNorms apart where
    # onnxruntime's defaults fuse them back
    meta = json.loads((version / "lmo_model.json").read_text())
    assert meta["session_config"] == CPU_SESSION_CONFIG
    served = _optimized_ops(version / "model.onnx", tmp_path, meta["session_config"])
    assert served["SkipLayerNormalization"] == 0 and served["LayerNormalization"] == 2 * LAYERS
    assert _optimized_ops(version / "model.onnx", tmp_path, {})["SkipLayerNormalization"] > 0


def test_int8_static_is_the_same_graph_with_calibrated_scales(artifacts):
    manifest, version = artifacts["int8-static"]
    assert manifest.accepted and manifest.precision == "int8-static"
    details = manifest.score.details
    graph, weights, ops = _graph(version)
    _, _, dynamic_ops = _graph(artifacts["int8"][1])

    # every activation dynamic int8 quantizes per call has a fixed scale and zero point
    assert ops["DynamicQuantizeLinear"] == 0
    assert ops["QuantizeLinear"] == dynamic_ops["DynamicQuantizeLinear"]
    assert details["calibrated_activations"] == ops["QuantizeLinear"]
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            scale, zero = weights[node.input[1]], weights[node.input[2]]
            assert scale.dims == [] and zero.data_type == TensorProto.UINT8
            assert onnx.numpy_helper.to_array(scale) > 0
    # the same int8 kernels: QAttention fed a constant input scale, the MatMuls as
    # MatMulIntegerToFloat with their bias folded in (FFN in's bias stays FastGelu's)
    assert ops["QAttention"] == LAYERS
    for node in graph.node:
        if node.op_type == "QAttention":
            assert node.input[3] in weights and node.input[6] in weights
    assert ops["MatMulIntegerToFloat"] == 3 * LAYERS and ops["MatMulInteger"] == 0
    biased = [n for n in graph.node if n.op_type == "MatMulIntegerToFloat" and n.input[6:7] != [""]]
    assert len(biased) == 2 * LAYERS and all(n.input[6] in weights for n in biased)
    assert ops["SkipLayerNormalization"] == 0 and ops["QEmbedLayerNormalization"] == 1


def test_int8_static_answers_do_not_depend_on_the_batch(artifacts, tiny_bert):
    """Fixed scales: a text's embedding is the same alone and in a batch (dynamic int8 picks
    its activation ranges from the whole batch, so there it moves)."""
    from transformers import AutoTokenizer

    from lmo_runtime.families.encoder import run_onnx

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    texts = heldout_texts(8)
    batch = dict(tok(texts, padding=True, return_tensors="np"))
    alone = dict(tok(texts[:1], return_tensors="np"))
    static = artifacts["int8-static"][1] / "model.onnx"
    assert np.abs(run_onnx(static, batch)[0][0] - run_onnx(static, alone)[0][0]).max() < 1e-5
    dynamic = artifacts["int8"][1] / "model.onnx"
    assert np.abs(run_onnx(dynamic, batch)[0][0] - run_onnx(dynamic, alone)[0][0]).max() > 1e-5


def test_int8_static_calibrates_graphs_onnxruntime_cannot_fuse(tmp_path):
    """DeBERTa's attention is no fusion's pattern: its plain export is quantized (every op
    type) and calibrated the same way, every quantized MatMul keeping fixed scales."""
    ckpt = make_encoder(tmp_path / "deberta", "deberta-v2", "text-classification", steps=20)
    request = ConversionRequest(checkpoint_uri=str(ckpt), task="text-classification",
                                precision="int8-static", backend="python")
    manifest = convert(request, tmp_path / "static", progress=False)
    assert manifest.accepted and manifest.precision == "int8-static"
    _, _, ops = _graph(tmp_path / "static" / REPOSITORY_DIR / "text_classification" / "1")
    assert ops["QAttention"] == 0 and ops["DynamicQuantizeLinear"] == 0
    assert ops["MatMulIntegerToFloat"] > 0 and ops["MatMulInteger"] == 0
    assert ops["QuantizeLinear"] == manifest.score.details["calibrated_activations"]
