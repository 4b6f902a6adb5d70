"""Real MiniLM conversions scored against PyTorch; the accuracy gate; the content cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmo_runtime.convert import convert, file_digests, load_manifest
from lmo_runtime.families import encoder as bert_family
from lmo_runtime.families import heldout_texts
from lmo_runtime.manifest import ConversionRequest
from lmo_runtime.triton.config import validate_config
from tests.fixtures.artifacts import convert_minilm

pytestmark = pytest.mark.slow


def _minilm_embeddings(minilm_path, texts):
    """sentence-transformers' recipe computed independently: mean pooling + L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    v = (h * m).sum(1) / m.sum(1)
    return torch.nn.functional.normalize(v, dim=1).numpy()


def test_fp32_artifact_matches_pytorch(minilm_fp32_artifact, minilm_path):
    m = load_manifest(minilm_fp32_artifact)
    assert m.accepted and m.precision == "fp32" and m.architecture == "BertModel"
    assert m.entry_model == "feature_extraction"
    assert m.score.metric == "cosine" and m.score.value > 0.9999
    assert m.score.details["max_abs_diff_fp32"] < 1e-4
    # the golden answers are the model's real embeddings of the golden inputs
    ref = _minilm_embeddings(minilm_path, m.golden.inputs)
    assert np.allclose(np.array(m.golden.outputs), ref, atol=1e-4)
    # the manifest lists every file of the artifact with its real digest
    assert [f.model_dump() for f in m.files] == [f.model_dump() for f in file_digests(minilm_fp32_artifact)]
    cfg = (minilm_fp32_artifact / "model_repository/feature_extraction/config.pbtxt").read_text()
    parsed = validate_config(cfg)
    assert parsed.backend == "python" and parsed.output[0].name == "EMBEDDING"
    assert list(parsed.output[0].dims) == [384]


def test_int8_artifact_is_small_and_faithful(minilm_int8_artifact, minilm_fp32_artifact, minilm_path):
    q, f = load_manifest(minilm_int8_artifact), load_manifest(minilm_fp32_artifact)
    assert q.accepted and q.precision == "int8"
    assert 0.99 <= q.score.value < 0.9999  # quantized: close, but not identical
    assert q.size_bytes <= 0.3 * f.size_bytes
    # score it independently: ONNX model in the artifact vs PyTorch on held-out texts
    texts = heldout_texts()
    onnx_path = minilm_int8_artifact / "model_repository/feature_extraction/1/model.onnx"
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(minilm_path)(texts, padding=True, return_tensors="np")
    got = bert_family.run_onnx(onnx_path, dict(enc))[0]
    ref = _minilm_embeddings(minilm_path, texts)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.mean() == pytest.approx(q.score.value, abs=1e-3)


def test_int8_static_is_calibrated_and_passes(minilm_path, artifact_cache, tmp_path,
                                              minilm_fp32_artifact):
    m = convert_minilm(minilm_path, tmp_path / "a", artifact_cache, "int8-static",
                       calibration_samples=64)
    assert m.accepted and m.precision == "int8-static"
    assert m.score.value >= 0.99
    model = tmp_path / "a/model_repository/feature_extraction/1/model.onnx"
    import onnx

    graph = onnx.load(str(model)).graph
    ops = {n.op_type for n in graph.node}
    # calibrated activations: fixed scales, no range search per call, int8 kernels kept
    assert "QuantizeLinear" in ops and "DynamicQuantizeLinear" not in ops
    assert {"QAttention", "MatMulIntegerToFloat"} <= ops
    constants = {i.name for i in graph.initializer}
    assert all(n.input[1] in constants for n in graph.node if n.op_type == "QuantizeLinear")
    # fixed activation scales: a text's embedding does not depend on what it is batched with
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    texts = heldout_texts(8)
    batched = bert_family.run_onnx(model, dict(tok(texts, padding=True, return_tensors="np")))[0]
    alone = bert_family.run_onnx(model, dict(tok(texts[:1], return_tensors="np")))[0]
    assert np.abs(batched[0] - alone[0]).max() < 1e-5
    assert m.size_bytes < 0.5 * load_manifest(minilm_fp32_artifact).size_bytes


def test_cache_hit_does_not_convert_again(minilm_int8_artifact, minilm_path, artifact_cache,
                                          tmp_path, monkeypatch):
    def no_export(*a, **k):
        raise AssertionError("export ran on a cache hit")

    def no_hashing(*a, **k):
        raise AssertionError("an unchanged checkpoint was re-hashed on a cache hit")

    monkeypatch.setattr(bert_family.EncoderFamily, "export", no_export)
    monkeypatch.setattr("lmo_runtime.store.checkpoint_digest", no_hashing)
    m = convert_minilm(minilm_path, tmp_path / "again", artifact_cache, "int8")
    assert m.accepted and m.key == load_manifest(minilm_int8_artifact).key
    model = tmp_path / "again/model_repository/feature_extraction/1/model.onnx"
    assert model.stat().st_size == (
        minilm_int8_artifact / "model_repository/feature_extraction/1/model.onnx"
    ).stat().st_size


def test_gate_fallback_records_each_attempt(minilm_path, tmp_path):
    request = ConversionRequest(
        checkpoint_uri=str(minilm_path), task="feature-extraction", precision="int8",
        min_score=0.9995, fallback=True, backend="python",
    )
    m = convert(request, tmp_path / "a", progress=False)
    # int8 (~0.992) is below 0.9995; fp16 is skipped on CPU serving; fp32 passes
    assert m.accepted and m.precision == "fp32"
    assert [a.passed for a in m.attempts] == [False, True]
    assert m.attempts[0].value < 0.9995 <= m.attempts[1].value
    assert json.loads((tmp_path / "a/manifest.json").read_text())["precision"] == "fp32"


def test_changed_local_checkpoint_is_converted_again(tiny_bert_classifier, tmp_path, monkeypatch):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_classifier, ckpt)
    request = ConversionRequest(checkpoint_uri=str(ckpt), task="text-classification")
    first = convert(request, tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    exports = []
    real_export = bert_family.EncoderFamily.export
    monkeypatch.setattr(bert_family.EncoderFamily, "export",
                        lambda self, *a, **k: exports.append(1) or real_export(self, *a, **k))
    assert convert(request, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False) == first
    assert exports == []
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "label2id": {"NEG": 0, "POS": 1}}))
    again = convert(request, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False)
    assert exports == [1] and again.checkpoint_sha256 != first.checkpoint_sha256


def test_feature_extraction_from_a_masked_lm_checkpoint(tiny_bert_mlm, tmp_path):
    """A BertForMaskedLM checkpoint has no pooler; mean pooling doesn't use it, so its
    encoder serves feature-extraction (it was refused as 'weights are incomplete')."""
    request = ConversionRequest(checkpoint_uri=str(tiny_bert_mlm), task="feature-extraction",
                                backend="python")
    m = convert(request, tmp_path / "a", progress=False)
    assert m.accepted and m.architecture == "BertModel" and m.score.value > 0.9999
    assert m.golden.kind == "embedding" and len(m.golden.outputs[0]) == 32
