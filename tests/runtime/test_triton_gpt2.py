"""GPT-2 served by a real tritonserver: HTTP, gRPC, streaming, sampling, STOP, metrics."""

from __future__ import annotations

import queue
import re
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from lmo_runtime.families.gpt2 import greedy_text

pytestmark = pytest.mark.slow

PROMPTS = ["The customer asked for", "Heavy snow closed"]
DTYPES = {"INT32": np.int32, "FP32": np.float32, "INT64": np.int64, "BYTES": np.object_}
PARAM_TYPES = {"MAX_TOKENS": "INT32", "TEMPERATURE": "FP32", "TOP_K": "INT32", "TOP_P": "FP32",
               "SEED": "INT64", "STOP": "BYTES"}


def _inputs(module, texts: list[str], **params):
    text = module.InferInput("TEXT", [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    out = [text]
    for name, value in params.items():
        dtype = PARAM_TYPES[name]
        value = value.encode() if isinstance(value, str) else value
        tensor = module.InferInput(name, [len(texts), 1], dtype)
        tensor.set_data_from_numpy(np.array([[value]] * len(texts), dtype=DTYPES[dtype]))
        out.append(tensor)
    return out


def _texts(result) -> list[str]:
    return [v.decode() for v in result.as_numpy("TEXT_OUTPUT").reshape(-1)]


@pytest.fixture(scope="module")
def server(triton_servers, gpt2_fp32_artifact):
    return triton_servers(gpt2_fp32_artifact / "model_repository")


@pytest.fixture
def http(server):
    client = httpclient.InferenceServerClient(server.http_address)
    yield client
    client.close()


@pytest.fixture
def grpc(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


def _count(server, model: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    pattern = rf'^nv_inference_count\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_greedy_over_http_and_grpc_equals_pytorch(server, http, grpc, gpt2_loaded):
    expected = [greedy_text(gpt2_loaded, p, 12) for p in PROMPTS]
    before = _count(server, "text_generation")
    assert _texts(http.infer("text_generation", _inputs(httpclient, PROMPTS, MAX_TOKENS=12))) \
        == expected
    assert _texts(grpc.infer("text_generation", _inputs(grpcclient, PROMPTS, MAX_TOKENS=12))) \
        == expected
    for prompt, want in zip(PROMPTS, expected):
        got = http.infer("text_generation", _inputs(httpclient, [prompt], MAX_TOKENS=12))
        assert _texts(got) == [want]
    assert _count(server, "text_generation") == before + 2 * len(PROMPTS) + len(PROMPTS)


def _stream(grpc, prompt: str, **params) -> list[str]:
    """The pieces a text_generation_stream request sends before its final response."""
    responses: queue.Queue = queue.Queue()
    grpc.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        grpc.async_stream_infer("text_generation_stream", _inputs(grpcclient, [prompt], **params),
                                enable_empty_final_response=True)
        pieces = []
        while True:
            result, error = responses.get(timeout=60)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces
            pieces.append(_texts(result)[0])
    finally:
        grpc.stop_stream()


def test_streaming_over_grpc_sends_pieces_then_final(server, grpc):
    whole = _texts(grpc.infer("text_generation", _inputs(grpcclient, PROMPTS[:1], MAX_TOKENS=12)))
    pieces = _stream(grpc, PROMPTS[0], MAX_TOKENS=12)
    assert len(pieces) > 1  # tokens arrive one by one, before the final response
    assert "".join(pieces) == whole[0]


def test_concurrent_streams_each_get_their_own_text(server, gpt2_loaded):
    from concurrent.futures import ThreadPoolExecutor

    def one(prompt):
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            return "".join(_stream(client, prompt, MAX_TOKENS=12))
        finally:
            client.close()

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        got = list(pool.map(one, PROMPTS))
    assert got == [greedy_text(gpt2_loaded, p, 12) for p in PROMPTS]


def test_seeded_sampling_is_reproducible(http):
    hot = {"MAX_TOKENS": 12, "TEMPERATURE": 3.0, "TOP_K": 40, "TOP_P": 0.95}
    first = _texts(http.infer("text_generation", _inputs(httpclient, PROMPTS[:1], SEED=7, **hot)))
    again = _texts(http.infer("text_generation", _inputs(httpclient, PROMPTS[:1], SEED=7, **hot)))
    assert first == again
    others = {_texts(http.infer("text_generation",
                                _inputs(httpclient, PROMPTS[:1], SEED=s, **hot)))[0]
              for s in (1, 2, 3)}
    assert len(others | {first[0]}) > 1


def test_stop_string_ends_generation(http):
    full = _texts(http.infer("text_generation", _inputs(httpclient, PROMPTS[:1], MAX_TOKENS=12)))[0]
    stop = full.split()[2]
    got = _texts(http.infer("text_generation",
                            _inputs(httpclient, PROMPTS[:1], MAX_TOKENS=12, STOP=stop)))[0]
    assert got == full[: full.index(stop)]


def test_bad_parameter_is_a_clear_error(http):
    with pytest.raises(InferenceServerException, match="TOP_P must be in"):
        http.infer("text_generation", _inputs(httpclient, PROMPTS[:1], TOP_P=0.0))


def test_int8_artifact_serves_what_onnxruntime_generates(triton_servers, gpt2_int8_artifact):
    from tests.runtime.test_gpt2 import _textgen

    tg = _textgen()
    engine = tg.ort_generator(gpt2_int8_artifact / "model_repository/text_generation/1", threads=1)
    expected = engine.generate(PROMPTS, [tg.Params(max_tokens=10) for _ in PROMPTS])
    server = triton_servers(gpt2_int8_artifact / "model_repository", ["text_generation"])
    client = httpclient.InferenceServerClient(server.http_address)
    try:
        got = _texts(client.infer("text_generation", _inputs(httpclient, PROMPTS, MAX_TOKENS=10)))
    finally:
        client.close()
    assert got == expected


def test_bls_flavour_calls_the_decoder_model(triton_servers, gpt2_loaded, gpt2_fp32_artifact,
                                             tmp_path):
    """backend "onnxruntime": text_generation calls gpt2_decoder through BLS. Here the decoder
    runs in a Python-backend stand-in (same ONNX, same tensors): the server has no ORT backend."""
    from lmo_runtime.families.gpt2 import FAMILY
    from lmo_runtime.manifest import ConversionRequest
    from tests.fixtures.triton import as_python_onnx_model

    onnx_path = gpt2_fp32_artifact / "model_repository/text_generation/1/model.onnx"
    request = ConversionRequest(checkpoint_uri="file:///x", task="text-generation",
                                backend="onnxruntime")
    repo = tmp_path / "repo"
    FAMILY.write_repository(gpt2_loaded, onnx_path, repo, request)
    assert not (repo / "text_generation/1/model.onnx").exists()
    as_python_onnx_model(repo / "gpt2_decoder")
    server = triton_servers(repo)
    client = httpclient.InferenceServerClient(server.http_address)
    try:
        got = _texts(client.infer("text_generation", _inputs(httpclient, PROMPTS, MAX_TOKENS=10)))
    finally:
        client.close()
    assert got == [greedy_text(gpt2_loaded, p, 10) for p in PROMPTS]
    assert _count(server, "gpt2_decoder") >= 10  # one decoder call per generated token
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        pieces = _stream(grpc, PROMPTS[0], MAX_TOKENS=10)
    finally:
        grpc.close()
    assert "".join(pieces) == got[0] and len(pieces) > 1


def test_unbatched_repository_takes_one_dimensional_text(triton_servers, gpt2_loaded,
                                                         gpt2_fp32_artifact, tmp_path):
    """maxBatchSize 0: no batch axis, TEXT is [1] and TEXT_OUTPUT comes back as [1]."""
    from lmo_runtime.families.gpt2 import FAMILY
    from lmo_runtime.manifest import ConversionRequest

    onnx_path = gpt2_fp32_artifact / "model_repository/text_generation/1/model.onnx"
    request = ConversionRequest(checkpoint_uri="file:///x", task="text-generation",
                                backend="python", max_batch_size=0)
    FAMILY.write_repository(gpt2_loaded, onnx_path, tmp_path / "repo", request)
    server = triton_servers(tmp_path / "repo", ["text_generation"])
    client = httpclient.InferenceServerClient(server.http_address)
    try:
        text = httpclient.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([PROMPTS[0].encode()], dtype=np.object_))
        tokens = httpclient.InferInput("MAX_TOKENS", [1], "INT32")
        tokens.set_data_from_numpy(np.array([6], dtype=np.int32))
        out = client.infer("text_generation", [text, tokens]).as_numpy("TEXT_OUTPUT")
    finally:
        client.close()
    assert out.shape == (1,)
    assert out[0].decode() == greedy_text(gpt2_loaded, PROMPTS[0], 6)
