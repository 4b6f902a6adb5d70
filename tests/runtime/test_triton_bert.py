"""MiniLM (real weights, int8) served by a real tritonserver equals direct ORT and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from lmo_runtime.families import heldout_texts
from lmo_runtime.manifest import Manifest
from lmo_runtime.triton.config import validate_config

pytestmark = pytest.mark.slow

TEXTS = heldout_texts(4)


def _text_input(module):
    tensor = module.InferInput("TEXT", [len(TEXTS), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in TEXTS], dtype=np.object_))
    return [tensor]


@pytest.fixture(scope="module")
def minilm_loaded(minilm_path):
    from lmo_runtime.families.encoder import FAMILY

    return FAMILY.load(minilm_path, "feature-extraction")


def test_minilm_int8_over_http_and_grpc(triton_servers, minilm_int8_artifact, minilm_loaded):
    from lmo_runtime.families.encoder import FAMILY

    manifest = Manifest.model_validate_json((minilm_int8_artifact / "manifest.json").read_text())
    repo = minilm_int8_artifact / "model_repository"
    onnx_path = next(repo.glob("feature_extraction/1/*.onnx"))
    direct = FAMILY._onnx_answers(minilm_loaded, onnx_path, TEXTS)[0]
    reference = FAMILY.torch_outputs(minilm_loaded, TEXTS)[0]

    server = triton_servers(repo)
    http = httpclient.InferenceServerClient(server.http_address)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        by_http = http.infer("feature_extraction", _text_input(httpclient)).as_numpy("EMBEDDING")
        by_grpc = grpc.infer("feature_extraction", _text_input(grpcclient)).as_numpy("EMBEDDING")
    finally:
        http.close()
        grpc.close()
    assert by_http.shape == (len(TEXTS), 384)
    np.testing.assert_array_equal(by_http, by_grpc)
    np.testing.assert_allclose(by_http, direct, atol=1e-5)
    cosine = (by_http * reference).sum(1) / (
        np.linalg.norm(by_http, axis=1) * np.linalg.norm(reference, axis=1)
    )
    # the gate's measure: mean cosine to PyTorch over the texts
    assert cosine.mean() >= manifest.request.min_score


def test_every_generated_config_parses(minilm_int8_artifact, gpt2_fp32_artifact):
    configs = [*minilm_int8_artifact.glob("model_repository/*/config.pbtxt"),
               *gpt2_fp32_artifact.glob("model_repository/*/config.pbtxt")]
    assert len(configs) >= 3
    for path in configs:
        assert validate_config(path.read_text()).name == path.parent.name
