"""config.pbtxt rendering: every generated config parses as Triton's ModelConfig."""

from __future__ import annotations

import pytest
from tritonclient.grpc import model_config_pb2 as pb

from lmo_runtime.triton.config import (
    ConfigError,
    DynamicBatching,
    EnsembleStep,
    ModelConfig,
    Tensor,
    render_config,
    validate_config,
    write_config,
)

TEXT = Tensor("TEXT", "STRING", (1,))
EMB = Tensor("EMBEDDING", "FP32", (384,))


def test_onnxruntime_gpu_config_round_trips():
    cfg = ModelConfig(
        name="encoder",
        backend="onnxruntime",
        inputs=(Tensor("input_ids", "INT64", (-1,)), Tensor("mask", "TYPE_INT64", (-1,), True)),
        outputs=(Tensor("last_hidden_state", "FP32", (-1, 384)),),
        max_batch_size=16,
        dynamic_batching=DynamicBatching(500, (8, 16)),
        gpus=2,
        default_model_filename="model.onnx",
    )
    msg = validate_config(render_config(cfg))
    assert msg.platform == "onnxruntime_onnx" and msg.backend == "onnxruntime"
    assert msg.max_batch_size == 16
    assert list(msg.input[0].dims) == [-1] and msg.input[1].optional
    assert msg.output[0].data_type == pb.TYPE_FP32
    assert msg.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(msg.dynamic_batching.preferred_batch_size) == [8, 16]
    group = msg.instance_group[0]
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU and list(group.gpus) == [0, 1]
    # CUDA EP by default: no TensorRT accelerator unless asked for.
    assert not msg.optimization.execution_accelerators.gpu_execution_accelerator
    assert msg.default_model_filename == "model.onnx"


def test_tensorrt_is_opt_in_on_gpu():
    cfg = ModelConfig(name="m", backend="onnxruntime", inputs=(EMB,), outputs=(EMB,),
                      gpus=1, gpu_accelerator="tensorrt")
    msg = validate_config(render_config(cfg))
    assert msg.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"


def test_python_decoupled_cpu_config():
    cfg = ModelConfig(
        name="text_generation_stream",
        backend="python",
        inputs=(TEXT, Tensor("MAX_TOKENS", "INT32", (1,), optional=True)),
        outputs=(Tensor("TEXT_OUTPUT", "STRING", (1,)),),
        decoupled=True,
        parameters={"ORT_THREADS": "1"},
    )
    msg = validate_config(render_config(cfg))
    assert msg.backend == "python" and not msg.platform
    assert msg.model_transaction_policy.decoupled
    assert msg.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU
    assert msg.parameters["ORT_THREADS"].string_value == "1"


def test_ensemble_steps():
    cfg = ModelConfig(
        name="feature_extraction",
        backend="ensemble",
        inputs=(TEXT,),
        outputs=(EMB,),
        max_batch_size=8,
        ensemble_steps=(
            EnsembleStep("tokenizer", {"TEXT": "TEXT"}, {"input_ids": "ids"}),
            EnsembleStep("encoder", {"input_ids": "ids"}, {"EMBEDDING": "EMBEDDING"}),
        ),
    )
    msg = validate_config(render_config(cfg))
    assert msg.platform == "ensemble" and not msg.instance_group
    steps = msg.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tokenizer", "encoder"]
    assert steps[1].input_map["input_ids"] == "ids"


def test_render_is_deterministic():
    cfg = ModelConfig(name="m", backend="python", inputs=(TEXT,), outputs=(EMB,),
                      parameters={"b": "2", "a": "1"})
    assert render_config(cfg) == render_config(cfg)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dynamic_batching": DynamicBatching()}, "needs max_batch_size > 0"),
        ({"max_batch_size": 4, "dynamic_batching": DynamicBatching(preferred_batch_size=(8,))},
         "preferred_batch_size"),
        ({"inputs": (Tensor("X", "FLOAT99", (1,)),)}, "not a Triton type"),
        ({"inputs": (Tensor("X", "FP32", (0,)),)}, "dims"),
        ({"inputs": (TEXT, TEXT)}, "duplicate input"),
        ({"ensemble_steps": (EnsembleStep("a", {}, {}),)}, "need backend 'ensemble'"),
        ({"gpu_accelerator": "tensorrt"}, "onnxruntime backend only"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(kwargs, message):
    base = {"name": "m", "backend": "python", "inputs": (TEXT,), "outputs": (EMB,)}
    with pytest.raises(ConfigError, match=message):
        render_config(ModelConfig(**{**base, **kwargs}))


def test_validate_rejects_unknown_fields_and_values():
    with pytest.raises(ConfigError, match="does not parse"):
        validate_config('name: "m"\nbackend: "python"\nmax_batch_sise: 4\n')
    with pytest.raises(ConfigError, match="does not parse"):
        validate_config('name: "m"\nbackend: "python"\ninput { data_type: TYPE_FLOAT }\n')
    with pytest.raises(ConfigError, match="neither"):
        validate_config('name: "m"\n')


def test_write_config_needs_matching_directory(tmp_path):
    cfg = ModelConfig(name="m", backend="python", inputs=(TEXT,), outputs=(EMB,))
    path = write_config(tmp_path / "m", cfg)
    assert validate_config(path.read_text()).name == "m"
    with pytest.raises(ConfigError, match="must be named like the model"):
        write_config(tmp_path / "other", cfg)
