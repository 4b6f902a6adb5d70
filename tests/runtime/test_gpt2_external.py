"""GPT-2 models whose ONNX exceeds protobuf's 2 GiB: weights in one external data file.

A real > 2 GiB model (gpt2-large shapes) is converted by `bench/bigmodel.py`, which also
measures peak memory; here LMO_ONNX_EXTERNAL_DATA_BYTES forces the same path on the tiny
checkpoint: the export written a file per tensor and consolidated into `model.onnx.data`,
int8 and both repository flavours carrying the pair, and a real Triton server loading it.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmo_runtime.convert import convert
from lmo_runtime.families import onnx_external
from lmo_runtime.families.gpt2 import greedy_text
from lmo_runtime.manifest import REPOSITORY_DIR, ConversionRequest

pytestmark = pytest.mark.slow


@pytest.fixture
def external(monkeypatch):
    monkeypatch.setenv(onnx_external.ENV, "1000")


def _request(ckpt, precision, backend="python"):
    return ConversionRequest(checkpoint_uri=str(ckpt), task="text-generation",
                             precision=precision, backend=backend)


@pytest.mark.parametrize("precision, backend, model_dir", [
    ("fp32", "python", "text_generation"),
    ("int8", "onnxruntime", "gpt2_decoder"),
])
def test_external_data_conversion(gpt2_checkpoint, tmp_path, external, precision, backend,
                                  model_dir):
    manifest = convert(_request(gpt2_checkpoint, precision, backend), tmp_path / "a",
                       progress=False)
    assert manifest.accepted and manifest.score.passed
    files = {f.path: f.size_bytes for f in manifest.files}
    model = f"{REPOSITORY_DIR}/{model_dir}/1/model.onnx"
    # the graph alone, its weights in one data file beside it (no loose per-tensor files)
    assert files[model] < 100_000 and files[model + ".data"] > 3 * files[model]
    assert [p for p in files if p.startswith(f"{REPOSITORY_DIR}/{model_dir}/1/")
            and p.endswith((".onnx", ".data"))] == [model, model + ".data"]
    assert onnx_external.data_files(tmp_path / "a" / model) == ["model.onnx.data"]
    # the size reported to status counts the weights
    assert manifest.size_bytes >= files[model] + files[model + ".data"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "a" / model), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].name == "logits"


def test_small_models_stay_one_file(gpt2_fp32_artifact):
    assert not list((gpt2_fp32_artifact / REPOSITORY_DIR).rglob("*.data"))


def test_consolidate_streams_loose_tensor_files_into_one(gpt2_checkpoint, tmp_path, external):
    """The layout torch's exporter writes over 2 GiB (a file per tensor) becomes model.onnx +
    model.onnx.data with the same values."""
    import onnx
    from onnx import numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    convert(_request(gpt2_checkpoint, "fp32"), tmp_path / "a", progress=False)
    src = tmp_path / "a" / REPOSITORY_DIR / "text_generation/1/model.onnx"
    want = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    loose = tmp_path / "loose" / "model.onnx"
    loose.parent.mkdir()
    model = onnx.load(str(src))
    convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=0)
    onnx.save(model, str(loose))
    assert len(list(loose.parent.iterdir())) > 10
    onnx_external.consolidate(loose)
    assert sorted(p.name for p in loose.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(loose)).graph.initializer}
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_triton_serves_an_external_data_model(gpt2_checkpoint, gpt2_loaded, tmp_path, external,
                                             triton_server_factory):
    import tritonclient.http as httpclient

    convert(_request(gpt2_checkpoint, "fp32"), tmp_path / "a", progress=False)
    server = triton_server_factory(tmp_path / "a" / REPOSITORY_DIR)
    server.wait_ready(180)
    client = httpclient.InferenceServerClient(server.http_address)
    prompt = "The customer asked for"
    text = httpclient.InferInput("TEXT", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    tokens = httpclient.InferInput("MAX_TOKENS", [1, 1], "INT32")
    tokens.set_data_from_numpy(np.array([[8]], dtype=np.int32))
    out = client.infer("text_generation", [text, tokens]).as_numpy("TEXT_OUTPUT").reshape(-1)
    assert out[0].decode() == greedy_text(gpt2_loaded, prompt, 8)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_streaming_int8_equals_onnxruntimes_quantizer(gpt2_checkpoint, tmp_path, external,
                                                      reduce_range):
    """Big models are quantized one weight at a time (onnxruntime's quantize_dynamic holds
    the model ~3.4 times over); the result computes what onnxruntime's quantizer writes."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lmo_runtime.families.gpt2 import FAMILY, _run_decoder, spec_of

    manifest = convert(_request(gpt2_checkpoint, "fp32"), tmp_path / "a", progress=False)
    big = tmp_path / "a" / REPOSITORY_DIR / "text_generation/1/model.onnx"
    plain = tmp_path / "plain.onnx"
    onnx.save(onnx.load(str(big)), str(plain))  # the same model, one file
    theirs, ours = tmp_path / "ort/model.onnx", tmp_path / "ours/model.onnx"
    theirs.parent.mkdir()
    ours.parent.mkdir()
    quantize_dynamic(str(plain), str(theirs), per_channel=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], reduce_range=reduce_range,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    onnx_external.quantize_dynamic_streaming(big, ours, reduce_range)
    assert sorted(p.name for p in ours.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    ops = {n.op_type for n in onnx.load(str(ours), load_external_data=False).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    loaded = FAMILY.load(gpt2_checkpoint, "text-generation")
    ids = [[5, 6, 7, 8, 9, 10, 11]]
    a, _ = _run_decoder(ort.InferenceSession(str(theirs)), spec_of(loaded), ids)
    b, _ = _run_decoder(ort.InferenceSession(str(ours)), spec_of(loaded), ids)
    assert np.abs(a - b).max() < 1e-4
    assert manifest.size_bytes > 0
