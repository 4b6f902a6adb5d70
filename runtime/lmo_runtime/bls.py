"""BLS calls from lmo's Python models that work wherever the called model runs.

Shipped as `lmo_bls.py` beside every lmo Python model (`lmo_runtime.payloads.ship`), so it
imports nothing but numpy: Triton's containers do not have lmo_runtime.

Why it exists: a model served by Triton's ONNX Runtime backend on `KIND_GPU` hands its
outputs back in GPU memory, and the Python backend raises "Tensor is stored in GPU" on
`.as_numpy()` of such an output (triton-inference-server/server#3944). Every BLS call of an
lmo model therefore says where its outputs must be:

* `host=True` (what a model that post-processes with numpy needs): the request carries
  `preferred_memory=PreferredMemory(TRITONSERVER_MEMORY_CPU, 0)`, the backend writes the
  outputs into CPU memory and they come back as numpy arrays;
* `host=False`: the outputs stay where the called model put them (GPU memory on a GPU) and
  come back as `pb_utils.Tensor`s, to be fed to the next call without a copy: an input given
  as a `pb_utils.Tensor` is renamed through DLPack (`Tensor.from_dlpack`), never through numpy.

The preference applies to all outputs of one request (the Python backend's response
allocator has one memory type per request), so a caller that needs some outputs on the host
and others on the device makes that choice per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cpu_memory(pb_utils: Any) -> Any:
    """`PreferredMemory(TRITONSERVER_MEMORY_CPU, 0)` (None on a Python backend without it,
    before Triton 23.xx, where BLS outputs of GPU models cannot be read as numpy at all)."""
    preferred = getattr(pb_utils, "PreferredMemory", None)
    if preferred is None:
        return None
    return preferred(pb_utils.TRITONSERVER_MEMORY_CPU, 0)


def as_input(pb_utils: Any, name: str, value: Any) -> Any:
    """The input tensor `name`: a numpy array is wrapped; a `pb_utils.Tensor` (an earlier
    output, possibly in GPU memory) is renamed through DLPack, without a copy."""
    if isinstance(value, np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(value))
    if value.name() == name:
        return value
    return pb_utils.Tensor.from_dlpack(name, value)


def to_numpy(tensor: Any) -> np.ndarray:
    """A BLS output as numpy; an output in GPU memory is a bug of the caller, named as such."""
    if not tensor.is_cpu():
        raise RuntimeError(
            f"BLS output {tensor.name()!r} is in GPU memory; request it with host=True "
            "(preferred CPU memory) or keep it as a Tensor and pass it on through DLPack"
        )
    return tensor.as_numpy()


def call(pb_utils: Any, model: str, inputs: dict[str, Any], outputs: list[str],
         host: bool = True, keep: frozenset[str] | set[str] = frozenset()) -> list[Any]:
    """Run `model` on `inputs` (name -> numpy array or pb_utils.Tensor) and return `outputs`
    in that order: numpy arrays in CPU memory (`host`), else pb_utils.Tensors left where the
    model produced them. Outputs named in `keep` come back as pb_utils.Tensors either way
    (to be passed to the next call through DLPack, e.g. a KV cache). Raises
    TritonModelException with the called model's error."""
    kwargs = {}
    memory = cpu_memory(pb_utils) if host else None
    if memory is not None:
        kwargs["preferred_memory"] = memory
    request = pb_utils.InferenceRequest(
        model_name=model, requested_output_names=list(outputs),
        inputs=[as_input(pb_utils, name, value) for name, value in inputs.items()], **kwargs,
    )
    response = request.exec()
    if response.has_error():
        raise pb_utils.TritonModelException(response.error().message())
    tensors = [pb_utils.get_output_tensor_by_name(response, name) for name in outputs]
    if not host:
        return tensors
    return [t if name in keep else to_numpy(t) for name, t in zip(outputs, tensors)]
