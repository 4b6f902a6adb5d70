"""Which int8 kernels this CPU has, the quantizer settings that follow from them, and the
two int8 recipes over an ONNX graph: dynamic (`quantize_dynamic_int8`) and calibrated static
made from it (`calibrate_static`), with the onnxruntime session settings they are served with
(`CPU_SESSION_CONFIG`).

onnxruntime's x86 int8 GEMM multiplies uint8 activations by int8 weights (u8s8). With VNNI
(avx512_vnni, avx_vnni) or AMX (amx_int8) the products are accumulated in int32 directly.
Without them (AVX2 only) it uses vpmaddubsw, which adds two u8*s8 products into an int16
that can saturate; onnxruntime's remedy is `reduce_range` (7-bit weights), at a small
accuracy cost. Other CPUs (Arm's dot-product kernels) do not saturate.

The settings are picked on the machine that converts (recorded in the score details as
`int8_reduce_range`); when conversion Jobs run on other CPUs than the Triton pods,
`LMO_INT8_REDUCE_RANGE=1` (or 0) forces the choice. The accuracy gate measures whatever was
produced, so a wrong guess costs speed or a refusal, never a silently worse model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ENV = "LMO_INT8_REDUCE_RANGE"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The int8-relevant flags of /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    return frozenset(re.findall(r"\b(" + "|".join(REPORTED_FLAGS) + r")\b", cpuinfo))


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return found.group(1).strip() if found else "unknown"


@dataclass(frozen=True)
class Int8Kernel:
    """The quantizer settings for this CPU."""

    isa: str  # "vnni" (VNNI or AMX), "avx2" (x86 without VNNI) or "other"
    reduce_range: bool

    def details(self) -> dict[str, float]:
        return {"int8_reduce_range": float(self.reduce_range),
                "int8_vnni": float(self.isa == "vnni")}


def int8_kernel(env: Mapping[str, str] | None = None, cpuinfo: str | None = None) -> Int8Kernel:
    """u8s8 at full range with VNNI/AMX (or off x86); reduce_range on AVX2 without VNNI."""
    env = os.environ if env is None else env
    flags = cpu_flags(cpuinfo)
    isa = "vnni" if flags & VNNI_FLAGS else "avx2" if "avx2" in flags else "other"
    forced = env.get(ENV, "").strip()
    if forced in ("0", "1"):
        return Int8Kernel(isa, forced == "1")
    return Int8Kernel(isa, isa == "avx2")


# --------------------------------------------------------------------------- recipes
# onnxruntime (1.32) on CPU runs its SkipLayerNormalization kernel 2-5x slower than the
# LayerNormalization kernel plus an Add (measured 0.59 vs 0.27 ms on [32, 17, 384], AMD EPYC,
# 2 threads): the transformer graphs keep Add + LayerNormalization, and lmo's CPU sessions
# tell onnxruntime not to fuse them back at load. Recorded in the artifact's lmo_model.json
# (session_config), so serving applies what scoring measured.
CPU_SESSION_CONFIG = {
    "optimization.disable_specified_optimizers": "SkipLayerNormFusion;BiasSkipLayerNormFusion",
}
MS_DOMAIN = "com.microsoft"


def quantize_dynamic_int8(src: Path, out: Path, kernel: Int8Kernel,
                          op_types: tuple[str, ...] | None) -> None:
    """Dynamic int8 (QOperator): int8 per-channel weights, uint8 activations quantized per
    call, on the `op_types` given (MatMul, fused Attention -> QAttention,
    EmbedLayerNormalization -> QEmbedLayerNormalization, Gather; None: every op type the
    dynamic quantizer knows)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lmo_runtime.families import quiet_root_logger

    with quiet_root_logger():
        quantize_dynamic(
            str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
            reduce_range=kernel.reduce_range,
            op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def calibrate_static(dynamic: Path, out: Path, batches: list[dict[str, Any]]) -> dict[str, float]:
    """int8-static from a dynamic int8 graph: every activation the dynamic graph quantizes per
    call (its DynamicQuantizeLinear nodes) gets a fixed uint8 scale and zero point from the
    min/max it takes on `batches` (real tokens only: padding positions never reach an
    answer), and each MatMulInteger -> Cast -> Mul(scales) [-> Add(bias)] chain becomes one
    MatMulIntegerToFloat. The same int8 kernels as dynamic (QAttention, u8s8 GEMM) without
    the per-call range search, and an answer that no longer depends on what else is in the
    batch. Returns {"calibrated_activations": n, "calibration_batches": m}."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(dynamic))
    graph = model.graph
    dql = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    targets = list(dict.fromkeys(n.input[0] for n in dql))
    probe = onnx.load(str(dynamic))
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in targets
                              if t not in known)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    lo = dict.fromkeys(targets, 0.0)  # the range always holds 0 (exact zero point)
    hi = dict.fromkeys(targets, 0.0)
    for feed in batches:
        feed = {k: np.asarray(v, dtype=np.int64) for k, v in feed.items() if k in names}
        mask = feed["attention_mask"].astype(bool) if "attention_mask" in feed else None
        for name, value in zip(targets, session.run(targets, feed)):
            if mask is not None and value.shape[:2] == mask.shape:
                value = value[mask]
            if value.size:
                lo[name] = min(lo[name], float(value.min()))
                hi[name] = max(hi[name], float(value.max()))

    replaced: dict[int, Any] = {}
    fixed: dict[str, str] = {}  # quantized activation -> its (now constant) scale
    for n in dql:
        x = n.input[0]
        scale = max(hi[x] - lo[x], 1e-8) / 255.0
        zero = int(np.clip(round(-lo[x] / scale), 0, 255))
        graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), n.output[1]))
        graph.initializer.append(numpy_helper.from_array(np.array(zero, np.uint8), n.output[2]))
        replaced[id(n)] = helper.make_node("QuantizeLinear", [x, n.output[1], n.output[2]],
                                           [n.output[0]], name=f"{n.name}_static")
        fixed[n.output[0]] = n.output[1]
    _matmul_integer_to_float(graph, replaced, fixed)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(out))
    return {"calibrated_activations": float(len(targets)), "calibration_batches": float(len(batches))}


def _matmul_integer_to_float(graph: Any, replaced: dict[int, Any], fixed: dict[str, str]) -> None:
    """Rewrite graph.node in place: nodes in `replaced` (by id) swapped, and each
    MatMulInteger(a, b, a_zp, b_zp) -> Cast -> Mul(Mul(a_scale, b_scale)) [-> Add(bias)]
    fused into MatMulIntegerToFloat(a, b, a_scale, b_scale, a_zp, b_zp, bias), the kernel
    onnxruntime itself fuses a dynamic graph into (it does not do so for fixed scales), where
    `a` is an activation with a fixed scale (`fixed`: quantized tensor -> scale)."""
    from onnx import helper

    weights = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dropped: set[int] = set()
    for n in graph.node:
        if n.op_type != "MatMulInteger" or len(n.input) < 4 or n.input[0] not in fixed:
            continue
        cast = consumers.get(n.output[0], [])
        if len(cast) != 1 or cast[0].op_type != "Cast":
            continue
        mul = consumers.get(cast[0].output[0], [])
        if len(mul) != 1 or mul[0].op_type != "Mul":
            continue
        other = [i for i in mul[0].input if i != cast[0].output[0]]
        scales = producer.get(other[0]) if len(other) == 1 else None
        if scales is None or scales.op_type != "Mul" or len(consumers[scales.output[0]]) != 1:
            continue
        a_scale = fixed[n.input[0]]
        if a_scale not in scales.input:
            continue
        b_scale = [s for s in scales.input if s != a_scale][0]
        last, bias = mul[0], ""
        after = consumers.get(mul[0].output[0], [])
        if len(after) == 1 and after[0].op_type == "Add":
            width = list(weights[n.input[1]].dims[-1:]) if n.input[1] in weights else None
            vector = [i for i in after[0].input if i in weights and list(weights[i].dims) == width]
            if len(vector) == 1:
                last, bias = after[0], vector[0]
                dropped.add(id(after[0]))
        dropped.update({id(cast[0]), id(mul[0]), id(scales)})
        replaced[id(n)] = helper.make_node(
            "MatMulIntegerToFloat",
            [n.input[0], n.input[1], a_scale, b_scale, n.input[2], n.input[3], bias],
            [last.output[0]], name=f"{n.name}_to_float", domain=MS_DOMAIN)
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
