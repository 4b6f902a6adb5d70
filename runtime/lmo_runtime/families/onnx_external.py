"""ONNX models larger than protobuf's 2 GiB: weights in one external data file.

A model proto cannot exceed 2 GiB, so a bigger export keeps its tensors outside the graph
(ONNX external data). torch's TorchScript exporter then writes one file per tensor beside
the graph; `consolidate()` streams them into a single `<model file>.data` (each tensor
aligned to 4 KiB, one tensor in memory at a time) and deletes the loose files, so that an
artifact is two files that onnxruntime, Triton's ONNX Runtime backend and `onnx.load`
open from the same directory. The same layout is produced for smaller models when
`LMO_ONNX_EXTERNAL_DATA_BYTES` is set below their size (how the tests reach this path
without a multi-GB model).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# protobuf's 2 GiB, less room for the graph itself
SINGLE_FILE_LIMIT = 2**31 - 2**26
ENV = "LMO_ONNX_EXTERNAL_DATA_BYTES"
DATA_SUFFIX = ".data"
ALIGN = 4096


def threshold(env: Mapping[str, str] | None = None) -> int:
    """Weights above this many bytes are written as external data."""
    env = os.environ if env is None else env
    value = env.get(ENV, "").strip()
    return min(int(value), SINGLE_FILE_LIMIT) if value.isdigit() else SINGLE_FILE_LIMIT


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers and tensor attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for g in attr.graphs:
                yield from _tensors(g)


def _external(tensor: Any) -> dict[str, str] | None:
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    return {e.key: e.value for e in tensor.external_data}


def data_files(path: Path) -> list[str]:
    """The external data files `path` refers to (relative names), sorted."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sorted({info["location"] for t in _tensors(model.graph)
                   if (info := _external(t)) is not None})


def consolidate(path: Path) -> Path:
    """Move every external tensor of the model at `path` into one `<name>.data` beside it
    (streamed: one tensor in memory at a time); returns the data file."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    target = path.with_name(path.name + DATA_SUFFIX)
    partial = target.with_name(target.name + ".partial")
    sources: set[Path] = set()
    offset = 0
    with open(partial, "wb") as out:
        for tensor in _tensors(model.graph):
            info = _external(tensor)
            if info is None:
                continue
            source = path.parent / info["location"]
            sources.add(source)
            with open(source, "rb") as f:
                f.seek(int(info.get("offset") or 0))
                length = int(info["length"]) if info.get("length") else -1
                data = f.read(length)
            pad = -offset % ALIGN
            out.write(b"\0" * pad)
            offset += pad
            out.write(data)
            del tensor.external_data[:]
            for key, value in (("location", target.name), ("offset", str(offset)),
                               ("length", str(len(data)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(data)
    partial.replace(target)
    for source in sources - {target}:
        source.unlink(missing_ok=True)
    onnx.save(model, str(path))
    return target


def externalize(path: Path) -> Path:
    """Store the tensors of the (single-file) model at `path` externally, one file per
    tensor as the exporter does for > 2 GiB, then consolidate; returns the data file."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    path = Path(path)
    model = onnx.load(str(path))
    convert_model_to_external_data(model, all_tensors_to_one_file=False, size_threshold=1024)
    onnx.save(model, str(path))
    return consolidate(path)


def copy_model(src: Path, dest: Path) -> None:
    """Copy an ONNX model and its external data file `<src name>.data`, which keeps its
    name (the model refers to it by name); the data file is hard-linked where possible, so
    that a multi-GB weight file is not duplicated on the same filesystem."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pairs = [(src, dest)]
    data = src.with_name(src.name + DATA_SUFFIX)
    if data.is_file():
        pairs.append((data, dest.parent / data.name))
    for a, b in pairs:
        b.unlink(missing_ok=True)
        try:
            if a is src:  # the graph is small, and a linked graph rewritten in place
                raise OSError  # (onnx.save) would change the source too
            os.link(a, b)  # the data file is only ever replaced whole, never rewritten
        except OSError:
            shutil.copy(a, b)


def save(model: Any, path: Path, size: int, env: Mapping[str, str] | None = None) -> None:
    """Save an in-memory model: external data (one file) when `size` bytes of weights are
    over `threshold()`."""
    import onnx

    if size <= threshold(env):
        onnx.save(model, str(path))
        return
    path = Path(path)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + DATA_SUFFIX, size_threshold=1024)


def _read(tensor: Any, base: Path) -> Any:
    """A tensor's values, read from its external file (one tensor in memory)."""
    import numpy as np
    from onnx import helper, numpy_helper

    info = _external(tensor)
    if info is None:
        return numpy_helper.to_array(tensor)
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    values = np.fromfile(base / info["location"], dtype=dtype, count=count,
                         offset=int(info.get("offset") or 0))
    return values.reshape(tuple(tensor.dims))


def _header(name: str, data_type: int, shape: tuple[int, ...]) -> Any:
    """A TensorProto without data (put() points it at the external file)."""
    from onnx import TensorProto

    tensor = TensorProto()
    tensor.name, tensor.data_type = name, data_type
    tensor.dims.extend(int(d) for d in shape)
    return tensor


class _DataWriter:
    """Appends tensors to one external data file, 4 KiB aligned."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.partial = target.with_name(target.name + ".partial")
        self.file = open(self.partial, "wb")
        self.offset = 0

    def put(self, tensor: Any, raw: bytes) -> Any:
        from onnx import TensorProto

        pad = -self.offset % ALIGN
        self.file.write(b"\0" * pad)
        self.offset += pad
        self.file.write(raw)
        del tensor.external_data[:]
        for key, value in (("location", self.target.name), ("offset", str(self.offset)),
                           ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL
        self.offset += len(raw)
        return tensor

    def close(self) -> None:
        self.file.close()
        self.partial.replace(self.target)


def quantize_dynamic_streaming(src: Path, out: Path, reduce_range: bool) -> None:
    """Dynamic int8 of every MatMul with a 2-D float weight, for models with external data,
    one weight in memory at a time.

    onnxruntime's quantize_dynamic loads the whole model (and a shape-inferred copy): ~3.4x
    the fp32 weights at peak for gpt2-large. This writes the same graph it writes
    (DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul by the two scales, which
    onnxruntime fuses into DynamicQuantizeMatMul at load) with the same weights: symmetric
    per-output-channel int8, scale = max|w| / 127 (/ 64 with reduce_range), round half to
    even. The result is `out` + `<out name>.data`.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src, out = Path(src), Path(out)
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    qmax = 64.0 if reduce_range else 127.0
    writer = _DataWriter(out.with_name(out.name + DATA_SUFFIX))
    new_inits: list[Any] = []
    nodes: list[Any] = []
    dq: dict[str, tuple[str, str, str]] = {}  # activation -> its DynamicQuantizeLinear outputs
    replaced: set[str] = set()
    try:
        for node in graph.node:
            weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
            if weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
                nodes.append(node)
                continue
            w = _read(weight, src.parent).astype(np.float32, copy=False)
            absmax = np.abs(w).max(axis=0)
            scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)
            q = np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int8)
            del w
            base = weight.name
            new_inits.append(writer.put(_header(base + "_quantized", TensorProto.INT8, q.shape),
                                        q.tobytes()))
            new_inits.append(numpy_helper.from_array(scale, base + "_scale"))
            new_inits.append(numpy_helper.from_array(np.zeros(scale.shape, np.int8),
                                                     base + "_zero_point"))
            del q
            x = node.input[0]
            if x not in dq:
                dq[x] = (f"{x}_quantized", f"{x}_scale", f"{x}_zero_point")
                nodes.append(helper.make_node("DynamicQuantizeLinear", [x], list(dq[x]),
                                              name=f"{x}_QuantizeLinear"))
            xq, xs, xz = dq[x]
            name = node.name or node.output[0]
            y = node.output[0]
            nodes += [
                helper.make_node("MatMulInteger", [xq, base + "_quantized", xz,
                                                   base + "_zero_point"],
                                 [f"{y}_output_quantized"], name=f"{name}_quant"),
                helper.make_node("Cast", [f"{y}_output_quantized"],
                                 [f"{y}_output_quantized_cast_output"], to=TensorProto.FLOAT,
                                 name=f"{name}_quant_output_cast"),
                helper.make_node("Mul", [xs, base + "_scale"], [f"{y}_scales_mul"],
                                 name=f"{name}_quant_scales_mul"),
                helper.make_node("Mul", [f"{y}_output_quantized_cast_output",
                                         f"{y}_scales_mul"], [y],
                                 name=f"{name}_quant_output_scale_mul"),
            ]
            uses[weight.name] -= 1
            if uses[weight.name] == 0:
                replaced.add(weight.name)
        for tensor in graph.initializer:  # the rest: copied over, still one at a time
            if tensor.name in replaced:
                continue
            if _external(tensor) is None:
                new_inits.append(tensor)
                continue
            values = _read(tensor, src.parent)
            new_inits.append(writer.put(_header(tensor.name, tensor.data_type, values.shape),
                                        np.ascontiguousarray(values).tobytes()))
            del values
    finally:
        writer.close()
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(out))
