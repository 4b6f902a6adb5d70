"""The API reference, generated from `lmo.api` (the single source of truth).

    python -m lmo.apidoc > docs/api.md

One table per object (field, type, default, description), walking from `LanguageModel`
down, then the cross-field rules with the exact messages both the cluster (CEL) and
`lmo up` (pydantic) give. A test keeps docs/api.md equal to this output.
"""

from __future__ import annotations

import enum
import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from lmo import api

ROOTS = [api.LanguageModelSpec, api.LanguageModelStatus]


def _inner(annotation: Any) -> list[Any]:
    """Model and enum classes mentioned by an annotation."""
    if isinstance(annotation, type) and issubclass(annotation, (BaseModel, enum.Enum)):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += _inner(arg)
    return out


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " \\| ".join(parts)
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[1])}" if len(args) == 2 else "object"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.to_dict() if hasattr(value, "to_dict") else value.model_dump()
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or value == {} or value == []:
        return "-" if value is None else f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def _models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo: list[Any] = list(ROOTS)
    while todo:
        m = todo.pop(0)
        if not (isinstance(m, type) and issubclass(m, BaseModel)) or m in seen:
            continue
        seen.append(m)
        for f in m.model_fields.values():
            todo += _inner(f.annotation)
    return seen


def _rules() -> list[str]:
    out = []
    for model in _models():
        extra = model.model_config.get("json_schema_extra") or {}
        for rule in extra.get("x-kubernetes-validations", []) if isinstance(extra, dict) else []:
            out.append(f"| {model.__name__} | {rule['message']} |")
    return out


def render() -> str:
    lines = [
        "# LanguageModel API reference (`lmo.dev/v1alpha1`)",
        "",
        "Generated from `lmo.api` by `python -m lmo.apidoc > docs/api.md`; do not edit.",
        "The CRD (`crds/`) is generated from the same models, so `kubectl explain lm.spec`",
        "shows the same descriptions. A resource is `apiVersion: lmo.dev/v1alpha1`,",
        "`kind: LanguageModel`, `metadata.name` (a DNS label, at most 40 characters), `spec`",
        "([LanguageModelSpec](#languagemodelspec)) and `status`",
        "([LanguageModelStatus](#languagemodelstatus), written by the operator or `lmo up`).",
        "",
    ]
    for model in _models():
        doc = (model.__doc__ or "").strip().splitlines()
        lines += [f"## {model.__name__}", ""]
        if doc and not doc[0].startswith(("Base", "A base")) and "BaseModel" not in doc[0]:
            lines += [doc[0], ""]
        lines += ["| field | type | default | description |", "|---|---|---|---|"]
        for name, f in model.model_fields.items():
            key = f.alias or name
            desc = (f.description or "").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
            lines.append(f"| `{key}` | {_type(f.annotation)} | {_default(f)} | {desc} |")
        lines.append("")
    lines += [
        "## Rules across fields",
        "",
        "Checked by the API server (CEL) and by `lmo up` (pydantic), with the same message.",
        "",
        "| object | rule (message) |",
        "|---|---|",
        *_rules(),
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
