"""Readable answers from the entry models' KServe v2 outputs, for every client lmo ships.

The entry model answers in tensors (lmo_runtime/triton_models/bert/model.py): per text,
text-classification LABEL and SCORE of shape [labels] (best first, `top_k` of them), fill-mask
TOKEN, SCORE and SEQUENCE of shape [masks, top_k] (rows with fewer masks padded with "").
The front door's `POST /v1/<task>` (under `lmo up` and in the cluster's per-version front
component) and `lmo infer` turn them into the same JSON through `per_item` and `text_answer`:

* text-classification: `{"label", "score", "labels": [{"label", "score"}, ...]}`;
* fill-mask: `{"token", "score", "sequence", "masks": [[{"token", "score", "sequence"}, ...],
  ...]}` (the top-level fields are the best candidate of the first mask);
* feature-extraction: `{"embedding": [...]}`; other outputs by their lower-case names.
"""

from __future__ import annotations

from math import prod
from typing import Any

# the KServe v2 request parameter both tasks read (an integer >= 1)
TOP_K_TASKS = ("text-classification", "fill-mask")


def _nest(flat: list[Any], shape: list[int]) -> Any:
    if len(shape) <= 1:
        return list(flat)
    step = prod(shape[1:])
    return [_nest(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def per_item(outputs: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Split a KServe v2 JSON answer's outputs into one {NAME: value} per input text, each
    value nested by the output's per-text shape (a scalar when that shape holds one value)."""
    items: list[dict[str, Any]] = [{} for _ in range(n)]
    for out in outputs:
        data = out.get("data", [])
        shape = list(out.get("shape") or [len(data)])
        inner = shape[1:] if shape and shape[0] == n else [len(data) // max(n, 1)]
        size = prod(inner) if inner else 1
        for i in range(n):
            chunk = data[i * size:(i + 1) * size]
            items[i][out["name"]] = chunk[0] if size == 1 and len(inner) <= 1 else _nest(chunk, inner)
    return items


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def text_answer(task: str, item: dict[str, Any]) -> dict[str, Any]:
    """One text's answer as the JSON fields of `POST /v1/<task>`."""
    if task == "text-classification" and "LABEL" in item:
        labels = [{"label": label, "score": score}
                  for label, score in zip(_listed(item["LABEL"]), _listed(item.get("SCORE", [])))]
        return {**labels[0], "labels": labels} if labels else {"labels": []}
    if task == "fill-mask" and "TOKEN" in item:
        masks = []
        for tokens, scores, sequences in zip(_rows(item["TOKEN"]), _rows(item.get("SCORE")),
                                             _rows(item.get("SEQUENCE"))):
            found = [{"token": t, "score": s, "sequence": q}
                     for t, s, q in zip(tokens, scores, sequences) if q != ""]
            if found:
                masks.append(found)
        return {**(masks[0][0] if masks else {}), "masks": masks}
    return {name.lower(): value for name, value in item.items()}


def _rows(value: Any) -> list[list[Any]]:
    """[masks][k] whatever the nesting a reader got (a scalar for one mask and k 1)."""
    if not isinstance(value, list):
        return [[value]]
    if value and not isinstance(value[0], list):
        return [value]
    return value


def describe(task: str, item: dict[str, Any]) -> str:
    """One readable line per answer (`lmo infer`)."""
    answer = text_answer(task, item)
    if "embedding" in answer and isinstance(answer["embedding"], list):
        vec = answer["embedding"]
        head = ", ".join(f"{float(x):.4f}" for x in vec[:6])
        return f"embedding[{len(vec)}] = [{head}, ...]"
    if "labels" in answer and answer["labels"]:
        best, rest = answer["labels"][0], answer["labels"][1:]
        line = f"{best['label']} (score {float(best['score']):.4f})"
        if rest:
            line += "; then " + ", ".join(f"{r['label']} {float(r['score']):.4f}" for r in rest)
        return line
    if "masks" in answer and answer["masks"]:
        parts = []
        for i, candidates in enumerate(answer["masks"]):
            best, rest = candidates[0], candidates[1:]
            part = (f"{best['sequence']}  (mask {i + 1}: token {best['token']!r}, score "
                    f"{float(best['score']):.4f}")
            if rest:
                part += "; then " + ", ".join(f"{r['token']!r} {float(r['score']):.4f}" for r in rest)
            parts.append(part + ")")
        return "\n".join(parts)
    if "text_output" in answer:
        return str(answer["text_output"])
    import json

    return json.dumps(item)
