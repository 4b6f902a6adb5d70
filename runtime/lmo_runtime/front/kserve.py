"""KServe v2 pieces the front needs: tensors in, tensors out, and what is wrong with a
request Triton refused (it answers a malformed one with a bare 500).

Pure functions over bytes and JSON (numpy for binary tensors); no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

# request headers Triton needs to read a body; answer headers a client needs to read one
FORWARD_HEADERS = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding",
                   "Accept-Encoding")
RETURN_HEADERS = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding")
HEADER_LENGTH = "Inference-Header-Content-Length"
_NUMPY = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "INT64": "<i8", "INT32": "<i4",
          "INT16": "<i2", "INT8": "i1", "UINT8": "u1", "BOOL": "?"}
EXAMPLE_INFER = ('{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", '
                 '"data": ["hello"]}]}')
EXAMPLE_GENERATE = '{"text_input": "Once upon a time", "max_tokens": 16}'
_COMPRESSED = object()


def text_input(texts: list[str], name: str = "TEXT") -> dict[str, Any]:
    return {"name": name, "shape": [len(texts), 1], "datatype": "BYTES", "data": list(texts)}


def column(name: str, dtype: str, value: Any, rows: int) -> dict[str, Any]:
    """An optional [rows, 1] input holding `value` in every row."""
    return {"name": name, "shape": [rows, 1], "datatype": dtype, "data": [value] * rows}


def outputs(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """name -> array (its full shape) of a KServe v2 answer, JSON or binary outputs."""
    if header_length:
        n = int(header_length)
        head, rest = json.loads(body[:n]), memoryview(body)[n:]
    else:
        head, rest = json.loads(body), memoryview(b"")
    out, at = {}, 0
    for tensor in head.get("outputs", []):
        shape = tensor["shape"]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = rest[at:at + size]
            at += size
            if tensor["datatype"] == "BYTES":
                array = np.array(_bytes_elements(raw), dtype=object)
            else:
                array = np.frombuffer(raw, dtype=_NUMPY[tensor["datatype"]])
        else:
            array = np.array(tensor["data"], dtype=object if tensor["datatype"] == "BYTES"
                             else _NUMPY.get(tensor["datatype"], "<f4"))
        out[tensor["name"]] = array.reshape(shape)
    return out


def _bytes_elements(raw: memoryview) -> list[str]:
    items, at = [], 0
    while at < len(raw):
        n = int.from_bytes(raw[at:at + 4], "little")
        items.append(bytes(raw[at + 4:at + 4 + n]).decode("utf-8", "replace"))
        at += 4 + n
    return items


def error_message(body: bytes) -> str:
    """Triton's error text of a refused request."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:500].decode("utf-8", "replace")
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])
    return json.dumps(data)[:500]


def queue_refusal(body: bytes) -> bool:
    """Whether Triton's 503 is its queue policy's rejection (queue full or timed out)."""
    text = body[:2048].decode("utf-8", "replace").lower()
    return "queue" in text or "timeout expired" in text


def _json_body(body: bytes, headers: Any, example: str) -> tuple[Any, str | None]:
    """(the parsed JSON, None), or (None, why it is not JSON); (_COMPRESSED, None) for a
    compressed body, which Triton decompresses and judges itself. With the binary tensor
    extension only the JSON header (`Inference-Header-Content-Length` bytes) is read."""
    if headers.get("Content-Encoding", "identity") != "identity":
        return _COMPRESSED, None
    length = headers.get(HEADER_LENGTH)
    head = body[: int(length)] if length and length.isdigit() else body
    try:
        return json.loads(head), None
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"body is not JSON ({err}); send a request such as {example}"


def generate_body_problem(body: bytes, headers: Any) -> str | None:
    """What is wrong with a request to Triton's generate extension, or None."""
    payload, problem = _json_body(body, headers, EXAMPLE_GENERATE)
    if problem or payload is _COMPRESSED or isinstance(payload, dict):
        return problem
    return f"body must be a JSON object such as {EXAMPLE_GENERATE}"


def infer_body_problem(body: bytes, headers: Any) -> str | None:
    """What is wrong with a KServe v2 inference request Triton refused (it answers a
    malformed one with a 500), or None (well formed, or compressed)."""
    payload, problem = _json_body(body, headers, EXAMPLE_INFER)
    if problem or payload is _COMPRESSED:
        return problem
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        return f'body must be a JSON object with an "inputs" list, such as {EXAMPLE_INFER}'
    for i, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict):
            return f"inputs[{i}] must be an object with name, shape, datatype and data"
        missing = [k for k in ("name", "shape", "datatype") if k not in tensor]
        if missing:
            return f"inputs[{i}] lacks {', '.join(missing)}"
        shape = tensor["shape"]
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            return f"inputs[{i}].shape must be a list of non-negative integers, got {shape!r}"
        binary = (isinstance(tensor.get("parameters"), dict)
                  and "binary_data_size" in tensor["parameters"])
        if "data" not in tensor and not binary:
            return f"inputs[{i}] ({tensor['name']}) lacks data"
    return None


def typed_problem(key: str, value: Any, dtype: str) -> str | None:
    """Whether an optional text-API field has the type its tensor needs."""
    if dtype in ("INT32", "INT64"):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif dtype == "FP32":
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, want = isinstance(value, str), "a string"
    return None if ok else f'field "{key}" must be {want}, got {json.dumps(value)}'
