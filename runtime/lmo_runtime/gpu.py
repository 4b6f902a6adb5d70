"""What lmo serves on GPUs, said once for the operator, `lmo up` and the converter.

A precision is only offered on a GPU where the GPU runs it:

* `int8` is ONNX Runtime dynamic quantization (DynamicQuantizeLinear + MatMulInteger with
  uint8 activations). The CUDA execution provider has no DynamicQuantizeLinear kernel and
  MatMulInteger only for int8 x int8 (onnxruntime docs/OperatorKernels.md), so those nodes
  would run on the pod's CPU with a device<->host copy around each: slower than fp16, and not
  int8 on the GPU. `int8-static` is asymmetric uint8 QDQ: CUDA runs it as fp32 GEMMs plus
  Q/DQ nodes, and TensorRT refuses non-zero zero points. Both are refused with
  `serving.gpus > 0`, naming what to use instead: fp16 (CUDA or TensorRT FP16), or int8 on
  CPU pods. Symmetric int8 QDQ for TensorRT INT8 is not built yet.
* `serving.accelerator: tensorrt` builds TensorRT engines for the ONNX Runtime backend models
  (the encoders' `<entry>_onnx`) with shape profiles from `serving.batching` and the
  tokenizer's max length, and an engine cache on an emptyDir. A text-generation decoder runs
  inside the Python models with its KV cache on the GPU (families.gpt2): its growing cache
  has no fixed TensorRT profile here, so text-generation serves on CUDA.
"""

from __future__ import annotations

ACCELERATORS = ("cuda", "tensorrt")
CPU_ONLY_PRECISIONS = ("int8", "int8-static")
# where Triton's TensorRT execution provider keeps its engines (an emptyDir on the cluster)
TENSORRT_CACHE_DIR = "/tmp/lmo-tensorrt"

INT8_ON_GPU = (
    "precision {precision} cannot serve on GPUs (serving.gpus > 0 or a GPU in "
    "serving.resources): ONNX Runtime's CUDA provider has no kernels for its "
    "{kernels}, so they would run on the pod's CPU; use precision fp16 (served by CUDA, "
    "or TensorRT FP16 with serving.accelerator: tensorrt), or serve {precision} on CPU "
    "(serving.gpus: 0)"
)
KERNELS = {
    "int8": "DynamicQuantizeLinear and uint8 MatMulInteger nodes",
    "int8-static": "asymmetric uint8 QuantizeLinear/DequantizeLinear around fp32 GEMMs "
    "(and TensorRT refuses non-zero zero points)",
}
TENSORRT_TEXT_GENERATION = (
    "serving.accelerator: tensorrt does not apply to text-generation: the decoder runs in "
    "lmo's Python models with its KV cache on the GPU (CUDA); use serving.accelerator: cuda"
)
TENSORRT_NEEDS_GPU = (
    "serving.accelerator: tensorrt needs a GPU (serving.gpus > 0) and serving.backend: "
    "onnxruntime (TensorRT runs in Triton's ONNX Runtime backend)"
)


def precision_problem(precision: str, gpu: bool) -> str | None:
    """Why `precision` cannot be served on a GPU pod (None: it can, or `gpu` is false)."""
    if gpu and precision in CPU_ONLY_PRECISIONS:
        return INT8_ON_GPU.format(precision=precision, kernels=KERNELS[precision])
    return None


def accelerator_problem(task: str, accelerator: str, gpu: bool, backend: str) -> str | None:
    """Why `accelerator` cannot serve this spec (None: it can)."""
    if accelerator != "tensorrt":
        return None
    if not gpu or backend != "onnxruntime":
        return TENSORRT_NEEDS_GPU
    if task == "text-generation":
        return TENSORRT_TEXT_GENERATION
    return None
