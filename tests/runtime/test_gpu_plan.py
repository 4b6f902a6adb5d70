"""The GPU precision plan on the converter's side (lmo_runtime.gpu): what is refused, what
falls back, and the TensorRT settings a GPU repository carries. Runs on CPU: the configs
are what Triton would read on a GPU node (validated with Triton's own protobuf schema)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmo_runtime.convert import convert, precisions_to_try
from lmo_runtime.errors import ConversionError
from lmo_runtime.gpu import TENSORRT_CACHE_DIR
from lmo_runtime.manifest import ConversionRequest
from lmo_runtime.triton.config import (
    DynamicBatching,
    ModelConfig,
    Tensor,
    accelerate_repository,
    validate_config,
    write_config,
)


def _request(**kw) -> ConversionRequest:
    return ConversionRequest(**{"checkpoint_uri": "/nonexistent/checkpoint",
                                "task": "feature-extraction", **kw})


@pytest.mark.parametrize("precision", ["int8", "int8-static"])
def test_int8_on_a_gpu_is_refused_before_any_work_naming_what_to_use(precision, tmp_path):
    # the checkpoint does not exist: the refusal comes before the fetch would fail
    with pytest.raises(ConversionError, match=rf"precision {precision} cannot serve on GPUs"
                                              r".*use precision fp16"):
        convert(_request(precision=precision, gpus=1), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_with_fallback_a_gpu_skips_int8_for_fp16():
    assert precisions_to_try(_request(precision="int8", gpus=1, fallback=True)) == [
        "fp16", "fp32"]
    assert precisions_to_try(_request(precision="int8-static", gpus=2, fallback=True)) == [
        "fp16", "fp32"]
    # on CPUs int8 stays (and fp16 is skipped, as before)
    assert precisions_to_try(_request(precision="int8", fallback=True)) == ["int8", "fp32"]


@pytest.mark.parametrize("kw, words", [
    ({"accelerator": "tensorrt"}, "tensorrt needs a GPU"),
    ({"accelerator": "tensorrt", "gpus": 1, "backend": "python"}, "backend: onnxruntime"),
    ({"accelerator": "tensorrt", "gpus": 1, "task": "text-generation"},
     "does not apply to text-generation"),
])
def test_tensorrt_is_refused_where_it_would_not_run(kw, words, tmp_path):
    with pytest.raises(ConversionError, match=words):
        convert(_request(precision="fp16", **kw), tmp_path / "out", progress=False)


def _onnx_model(repo: Path, batch: int) -> None:
    write_config(repo / "feature_extraction_onnx", ModelConfig(
        name="feature_extraction_onnx", backend="onnxruntime",
        inputs=tuple(Tensor(n, "INT64", (-1,) if batch else (-1, -1))
                     for n in ("input_ids", "attention_mask", "token_type_ids")),
        outputs=(Tensor("embedding", "FP32", (384,) if batch else (-1, 384)),),
        max_batch_size=batch, gpus=1,
        dynamic_batching=DynamicBatching() if batch else None,
        default_model_filename="model.onnx",
    ))
    write_config(repo / "feature_extraction", ModelConfig(
        name="feature_extraction", backend="python",
        inputs=(Tensor("TEXT", "STRING", (1,)),), outputs=(Tensor("EMBEDDING", "FP32", (384,)),),
        max_batch_size=batch,
    ))


def _params(repo: Path, name: str) -> dict[str, str]:
    config = validate_config((repo / name / "config.pbtxt").read_text())
    (accel,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accel.name == "tensorrt"
    return dict(accel.parameters)


def test_tensorrt_config_has_precision_engine_cache_and_shape_profiles(tmp_path):
    _onnx_model(tmp_path, batch=16)
    request = _request(precision="fp16", gpus=1, accelerator="tensorrt")
    assert accelerate_repository(tmp_path, request, 128) == ["feature_extraction_onnx"]
    params = _params(tmp_path, "feature_extraction_onnx")
    assert params["precision_mode"] == "FP16"
    assert params["trt_engine_cache_enable"] == "1"
    assert params["trt_engine_cache_path"] == TENSORRT_CACHE_DIR
    names = ("attention_mask", "input_ids", "token_type_ids")
    assert params["trt_profile_min_shapes"] == ",".join(f"{n}:1x1" for n in names)
    assert params["trt_profile_max_shapes"] == ",".join(f"{n}:16x128" for n in names)
    assert params["trt_profile_opt_shapes"] == params["trt_profile_max_shapes"]
    # the Python entry model is left alone
    entry = validate_config((tmp_path / "feature_extraction/config.pbtxt").read_text())
    assert not entry.optimization.execution_accelerators.gpu_execution_accelerator


def test_tensorrt_profiles_without_triton_batching_take_batch_1(tmp_path):
    _onnx_model(tmp_path, batch=0)
    accelerate_repository(tmp_path, _request(precision="fp32", gpus=1, accelerator="tensorrt"),
                          64)
    params = _params(tmp_path, "feature_extraction_onnx")
    assert params["precision_mode"] == "FP32"
    assert "input_ids:1x64" in params["trt_profile_max_shapes"]


def test_cuda_or_cpu_leaves_the_configs_alone(tmp_path):
    _onnx_model(tmp_path, batch=16)
    before = (tmp_path / "feature_extraction_onnx/config.pbtxt").read_text()
    assert accelerate_repository(tmp_path, _request(gpus=1), 128) == []
    assert accelerate_repository(tmp_path, _request(accelerator="tensorrt"), 128) == []
    assert (tmp_path / "feature_extraction_onnx/config.pbtxt").read_text() == before


def test_a_bert_conversion_for_tensorrt_writes_a_kind_gpu_tensorrt_repository(
        tiny_bert_classifier, tmp_path):
    """A real conversion (CPU here) for a GPU pod with serving.accelerator: tensorrt: the
    ONNX model is KIND_GPU with TensorRT FP16 and the tokenizer's max length in its
    profiles; the Python entry model calls it through lmo_bls (outputs in CPU memory)."""
    request = ConversionRequest(checkpoint_uri=str(tiny_bert_classifier),
                                task="text-classification", precision="fp16", gpus=1,
                                accelerator="tensorrt", backend="onnxruntime", min_score=0.9)
    manifest = convert(request, tmp_path / "a", progress=False)
    repo = tmp_path / "a/model_repository"
    onnx = validate_config((repo / "text_classification_onnx/config.pbtxt").read_text())
    assert onnx.instance_group[0].kind == onnx.instance_group[0].KIND_GPU
    params = _params(repo, "text_classification_onnx")
    max_length = json.loads((repo / "text_classification/1/lmo_model.json").read_text())[
        "max_length"]
    assert params["precision_mode"] == "FP16"
    assert f"input_ids:16x{max_length}" in params["trt_profile_max_shapes"]
    assert (repo / "text_classification/1/lmo_bls.py").is_file()
    assert manifest.precision == "fp16" and manifest.request.accelerator == "tensorrt"
