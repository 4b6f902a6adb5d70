"""Render and validate Triton `config.pbtxt` files.

A model's configuration is described by the small typed `ModelConfig` below and rendered by
building the real `inference.ModelConfig` protobuf message (from `tritonclient`) and printing
it with `google.protobuf.text_format`: a field name or enum value Triton does not know fails
here, at conversion time, not when a pod starts. `validate_config(text)` parses any
config.pbtxt the same way Triton does (tests run it on every generated repository).

Choices worth knowing:

* `backend="onnxruntime"` sets `platform: "onnxruntime_onnx"` as well (what Triton itself
  normalises to). On GPUs the ONNX Runtime backend runs the CUDA execution provider, which is
  its default for `KIND_GPU` instances. TensorRT is opt-in (`gpu_accelerator="tensorrt"`,
  from `serving.accelerator`; `accelerate_repository` applies it to a written repository):
  it builds engines at model load, so the rendered accelerator carries the precision, an
  engine cache directory (an emptyDir on the cluster: a restarted container reuses the
  engines) and shape profiles for the dynamic batch/sequence axes (min 1 x 1, opt and max
  at max_batch_size x the tokenizer's max length), without which every new shape would
  build a new engine.
* `backend="python"` is what a CPU-only tritonserver (the nvidia-pytriton wheel, see
  TRITON-CPU.md) can run: the model's `model.py` runs onnxruntime itself.
* `backend="ensemble"` renders `platform: "ensemble"` with `ensemble_scheduling` steps.
* `gpus > 0` renders `instance_group { kind: KIND_GPU, count, gpus: [0..gpus-1] }`, else
  `KIND_CPU`.
* `decoupled=True` renders `model_transaction_policy { decoupled: true }` (streaming models
  sending any number of responses per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

CONFIG_FILE = "config.pbtxt"

Backend = Literal["onnxruntime", "python", "ensemble"]

# Short names accepted for data types ("FP32" == "TYPE_FP32").
DATA_TYPES: tuple[str, ...] = tuple(
    name.removeprefix("TYPE_") for name in pb.DataType.keys() if name != "TYPE_INVALID"
)


class ConfigError(ValueError):
    """A model configuration Triton would refuse; the message names the field and the fix."""


@dataclass(frozen=True)
class Tensor:
    """One input or output. `dims` excludes the batch dimension when max_batch_size > 0."""

    name: str
    data_type: str  # FP32 | INT64 | STRING | ... (with or without the TYPE_ prefix)
    dims: tuple[int, ...]
    optional: bool = False  # inputs only: the request may omit it

    def type_enum(self) -> int:
        name = self.data_type.upper()
        name = name if name.startswith("TYPE_") else f"TYPE_{name}"
        if name not in pb.DataType.keys() or name == "TYPE_INVALID":
            raise ConfigError(
                f"tensor {self.name!r}: data_type {self.data_type!r} is not a Triton type; "
                f"use one of {', '.join(DATA_TYPES)}"
            )
        return pb.DataType.Value(name)


@dataclass(frozen=True)
class DynamicBatching:
    """Server-side batching: wait up to `max_queue_delay_microseconds` to form a batch."""

    max_queue_delay_microseconds: int = 500
    preferred_batch_size: tuple[int, ...] = ()
    # default_queue_policy: beyond max_queue_size waiting requests, or after
    # queue_timeout_microseconds in the queue, a request is rejected (None: no bound)
    max_queue_size: int | None = None
    queue_timeout_microseconds: int | None = None


@dataclass(frozen=True)
class TensorRT:
    """The TensorRT execution accelerator of an ONNX Runtime backend model on GPUs."""

    precision: Literal["FP32", "FP16", "INT8"] = "FP16"
    engine_cache_path: str | None = None
    # ONNX input name -> full shape (batch included) of the one optimisation profile
    min_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opt_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    max_workspace_size_bytes: int = 1 << 30

    def parameters(self) -> dict[str, str]:
        """The accelerator's parameters as Triton's ONNX Runtime backend reads them."""
        out = {"precision_mode": self.precision,
               "max_workspace_size_bytes": str(self.max_workspace_size_bytes)}
        if self.engine_cache_path:
            out.update(trt_engine_cache_enable="1", trt_engine_cache_path=self.engine_cache_path)
        for key, shapes in (("trt_profile_min_shapes", self.min_shapes),
                            ("trt_profile_opt_shapes", self.opt_shapes),
                            ("trt_profile_max_shapes", self.max_shapes)):
            if shapes:
                out[key] = ",".join(f"{name}:{'x'.join(str(d) for d in dims)}"
                                    for name, dims in sorted(shapes.items()))
        return out


@dataclass(frozen=True)
class EnsembleStep:
    """One step of an ensemble. Maps: the step model's tensor name -> ensemble tensor name."""

    model_name: str
    input_map: dict[str, str]
    output_map: dict[str, str]
    model_version: int = -1  # -1: latest


@dataclass(frozen=True)
class ModelConfig:
    """What a Triton model's config.pbtxt says, in the terms lmo needs."""

    name: str
    backend: Backend
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    max_batch_size: int = 0  # 0: the model does not batch (dims are full shapes)
    dynamic_batching: DynamicBatching | None = None
    gpus: int = 0  # 0: KIND_CPU; n > 0: KIND_GPU on GPUs 0..n-1
    instance_count: int = 1  # instances per device (per GPU with KIND_GPU)
    decoupled: bool = False
    ensemble_steps: tuple[EnsembleStep, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    default_model_filename: str | None = None  # e.g. "model.onnx"
    gpu_accelerator: Literal["cuda", "tensorrt"] = "cuda"  # onnxruntime backend only
    tensorrt: TensorRT | None = None  # its settings (gpu_accelerator "tensorrt")

    def check(self) -> None:
        """Refuse combinations Triton would refuse at load time, naming the field."""
        if not self.name or "/" in self.name:
            raise ConfigError(f"name {self.name!r}: must be a non-empty directory name")
        if self.max_batch_size < 0:
            raise ConfigError(f"{self.name}: max_batch_size must be >= 0")
        if self.dynamic_batching is not None and self.max_batch_size == 0:
            raise ConfigError(
                f"{self.name}: dynamic_batching needs max_batch_size > 0; "
                "set max_batch_size or drop dynamic_batching"
            )
        if self.dynamic_batching is not None:
            too_big = [s for s in self.dynamic_batching.preferred_batch_size
                       if s <= 0 or s > self.max_batch_size]
            if too_big:
                raise ConfigError(
                    f"{self.name}: dynamic_batching.preferred_batch_size {too_big} must be in "
                    f"1..max_batch_size ({self.max_batch_size})"
                )
        if self.backend == "ensemble":
            if not self.ensemble_steps:
                raise ConfigError(f"{self.name}: an ensemble needs at least one ensemble step")
            if self.dynamic_batching is not None:
                raise ConfigError(f"{self.name}: an ensemble cannot set dynamic_batching")
        elif self.ensemble_steps:
            raise ConfigError(f"{self.name}: ensemble_steps need backend 'ensemble'")
        if self.gpus < 0 or self.instance_count < 1:
            raise ConfigError(f"{self.name}: gpus must be >= 0 and instance_count >= 1")
        if self.gpu_accelerator != "cuda" and self.backend != "onnxruntime":
            raise ConfigError(
                f"{self.name}: gpu_accelerator {self.gpu_accelerator!r} applies to the "
                "onnxruntime backend only"
            )
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            names = [t.name for t in tensors]
            if len(set(names)) != len(names):
                raise ConfigError(f"{self.name}: duplicate {kind} names in {names}")
            for t in tensors:
                t.type_enum()
                if not t.dims or any(d == 0 or d < -1 for d in t.dims):
                    raise ConfigError(
                        f"{self.name}: {kind} {t.name!r} dims {t.dims} must be non-empty, "
                        "each > 0 or -1 (variable)"
                    )
                if kind == "output" and t.optional:
                    raise ConfigError(f"{self.name}: output {t.name!r} cannot be optional")

    def to_proto(self) -> pb.ModelConfig:
        """The `inference.ModelConfig` message Triton reads."""
        self.check()
        msg = pb.ModelConfig(name=self.name, max_batch_size=self.max_batch_size)
        if self.backend == "onnxruntime":
            msg.platform = "onnxruntime_onnx"
            msg.backend = "onnxruntime"
        elif self.backend == "python":
            msg.backend = "python"
        else:
            msg.platform = "ensemble"
        for t in self.inputs:
            msg.input.add(name=t.name, data_type=t.type_enum(), dims=list(t.dims),
                          optional=t.optional)
        for t in self.outputs:
            msg.output.add(name=t.name, data_type=t.type_enum(), dims=list(t.dims))
        if self.dynamic_batching is not None:
            msg.dynamic_batching.max_queue_delay_microseconds = (
                self.dynamic_batching.max_queue_delay_microseconds
            )
            msg.dynamic_batching.preferred_batch_size.extend(
                self.dynamic_batching.preferred_batch_size
            )
            db = self.dynamic_batching
            if db.max_queue_size is not None or db.queue_timeout_microseconds is not None:
                policy = msg.dynamic_batching.default_queue_policy
                policy.timeout_action = pb.ModelQueuePolicy.TimeoutAction.REJECT
                if db.max_queue_size is not None:
                    policy.max_queue_size = db.max_queue_size
                if db.queue_timeout_microseconds is not None:
                    policy.default_timeout_microseconds = db.queue_timeout_microseconds
        if self.backend != "ensemble":
            group = msg.instance_group.add(count=self.instance_count)
            if self.gpus > 0:
                group.kind = pb.ModelInstanceGroup.KIND_GPU
                group.gpus.extend(range(self.gpus))
            else:
                group.kind = pb.ModelInstanceGroup.KIND_CPU
        if self.gpus > 0 and self.gpu_accelerator == "tensorrt":
            accel = msg.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accel.name = "tensorrt"
            accel.parameters.update((self.tensorrt or TensorRT()).parameters())
        if self.decoupled:
            msg.model_transaction_policy.decoupled = True
        for step in self.ensemble_steps:
            s = msg.ensemble_scheduling.step.add(
                model_name=step.model_name, model_version=step.model_version
            )
            s.input_map.update(step.input_map)
            s.output_map.update(step.output_map)
        for key, value in sorted(self.parameters.items()):
            msg.parameters[key].string_value = value
        if self.default_model_filename:
            msg.default_model_filename = self.default_model_filename
        return msg


def render_config(config: ModelConfig) -> str:
    """The config.pbtxt text of `config` (protobuf text format, deterministic)."""
    return text_format.MessageToString(config.to_proto())


def validate_config(text: str) -> pb.ModelConfig:
    """Parse config.pbtxt text as Triton does; raise ConfigError naming the problem."""
    try:
        msg = text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as exc:
        raise ConfigError(f"config.pbtxt does not parse as inference.ModelConfig: {exc}") from exc
    if not msg.name:
        raise ConfigError("config.pbtxt has no `name`; set it to the model directory name")
    if not (msg.backend or msg.platform):
        raise ConfigError(f"{msg.name}: config.pbtxt sets neither `backend` nor `platform`")
    return msg


def write_config(model_dir: Path, config: ModelConfig) -> Path:
    """Write `<model_dir>/config.pbtxt` for `config` (validated) and return its path.

    The directory name must equal the model name: Triton loads models by directory.
    """
    model_dir = Path(model_dir)
    if model_dir.name != config.name:
        raise ConfigError(
            f"model directory {model_dir.name!r} must be named like the model {config.name!r}"
        )
    text = render_config(config)
    validate_config(text)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG_FILE
    path.write_text(text)
    return path


TENSORRT_PRECISION = {"fp32": "FP32", "fp16": "FP16"}


def tensorrt_for(config: pb.ModelConfig, precision: str, max_length: int,
                 cache_dir: str) -> TensorRT:
    """TensorRT settings of an ONNX Runtime backend model: one profile over every input
    whose dims are variable, batch 1..max_batch_size (1 without Triton batching) and
    sequence 1..max_length, optimised for full batches of max_length."""
    batch = max(1, config.max_batch_size)
    mins: dict[str, tuple[int, ...]] = {}
    opts: dict[str, tuple[int, ...]] = {}
    maxs: dict[str, tuple[int, ...]] = {}
    for tensor in config.input:
        dims = list(tensor.dims)
        if config.max_batch_size > 0:
            dims = [-1, *dims]
        if -1 not in dims:
            continue
        shape_min, shape_max = [], []
        for i, d in enumerate(dims):
            if d != -1:
                shape_min.append(d)
                shape_max.append(d)
            elif i == 0:
                shape_min.append(1)
                shape_max.append(batch)
            else:
                shape_min.append(1)
                shape_max.append(max_length)
        mins[tensor.name] = tuple(shape_min)
        opts[tensor.name] = tuple(shape_max)
        maxs[tensor.name] = tuple(shape_max)
    if precision not in TENSORRT_PRECISION:
        raise ConfigError(
            f"{config.name}: precision {precision} has no TensorRT mode here; use fp16 or fp32"
        )
    return TensorRT(precision=TENSORRT_PRECISION[precision], engine_cache_path=cache_dir,
                    min_shapes=mins, opt_shapes=opts, max_shapes=maxs)


def accelerate_repository(repo_dir: Path, request: Any, max_length: int | None) -> list[str]:
    """Put the TensorRT accelerator (request.accelerator "tensorrt", gpus > 0) on every ONNX
    Runtime backend model of a written repository; return the models changed.

    Families write their configs for CUDA; the accelerator is a serving choice applied here
    once for all of them. `max_length` is the tokenizer's (None: the model has no fixed one,
    and TensorRT is refused)."""
    from lmo_runtime.gpu import TENSORRT_CACHE_DIR

    if request.gpus <= 0 or request.accelerator != "tensorrt":
        return []
    changed = []
    for path in sorted(Path(repo_dir).glob(f"*/{CONFIG_FILE}")):
        config = validate_config(path.read_text())
        if config.platform != "onnxruntime_onnx":
            continue
        if not max_length:
            raise ConfigError(
                f"{config.name}: TensorRT needs a maximum sequence length for its shape "
                "profile and this model has none; use serving.accelerator: cuda"
            )
        trt = tensorrt_for(config, request.precision, int(max_length), TENSORRT_CACHE_DIR)
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator
        del accel[:]
        added = accel.add()
        added.name = "tensorrt"
        added.parameters.update(trt.parameters())
        text = text_format.MessageToString(config)
        validate_config(text)
        path.write_text(text)
        changed.append(config.name)
    return changed

