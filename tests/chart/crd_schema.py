"""What a real API server does with a LanguageModel before storing it, minus the server.

`CrdValidator` applies the committed CRD's openAPIV3Schema the way kube-apiserver does:
1. server-side defaults (a missing property gets its `default` when its parent exists),
2. strict field validation (`kubectl apply` refuses unknown fields; `fieldValidation=Strict`),
3. the OpenAPI 3.0 schema (jsonschema's Draft 4 validator: same `exclusiveMinimum: true`
   form; the `x-kubernetes-*` keywords are ignored by it and handled here),
4. list-map keys unique (`x-kubernetes-list-type: map`),
5. every CEL rule (`x-kubernetes-validations`) with cel-python, the Kubernetes list
   extensions it lacks (`isSorted`, `sum`) registered as functions.

A rule that raises instead of returning a bool is reported as an error of its own: a real
API server refuses the object then too (with a less helpful message), so a valid sample must
never hit one. cel-python is laxer than cel-go in one respect: `has(a.b.c)` with `a.b` absent
is false here and an error there, so rules guard each level (`has(a.b) && has(a.b.c)`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "crds" / "languagemodels.lmo.dev.yaml"


def _is_sorted(items: Any) -> celtypes.BoolType:
    values = list(items)
    return celtypes.BoolType(all(a <= b for a, b in zip(values, values[1:])))


def _sum(items: Any) -> Any:
    total: Any = celtypes.IntType(0)
    for x in items:
        total = total + x
    return total


K8S_CEL_FUNCTIONS = {"isSorted": _is_sorted, "sum": _sum}


@dataclass
class Verdict:
    """Every problem the API server would report; empty means accepted."""

    schema: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    cel: list[str] = field(default_factory=list)  # messages of rules that returned false
    cel_errors: list[str] = field(default_factory=list)  # rules that could not evaluate

    @property
    def ok(self) -> bool:
        return not (self.schema or self.unknown or self.cel or self.cel_errors)

    def all(self) -> list[str]:
        return self.schema + self.unknown + self.cel + self.cel_errors


def load_crd(path: Path = CRD_PATH) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def walk(schema: dict[str, Any], path: str = ""):
    """Yield (path, node) for every schema node."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """kube-apiserver structural defaulting, applied in place and returned."""
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(obj[name], sub)
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for value in obj.values():
                apply_defaults(value, addl)
    elif isinstance(obj, list) and "items" in schema:
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not declare (what strict field validation refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                out += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(addl, dict):
                out += unknown_fields(value, addl, f"{path}.{key}")
            elif path == ".metadata":
                continue  # ObjectMeta is validated by the server's own schema
            else:
                out.append(f'{path}.{key}: unknown field "{key}"')
    elif isinstance(obj, list) and "items" in schema:
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def duplicate_map_keys(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    out = []
    if isinstance(obj, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in obj:
                out += duplicate_map_keys(obj[key], sub, f"{path}.{key}")
    elif isinstance(obj, list) and "items" in schema:
        if schema.get("x-kubernetes-list-type") == "map":
            keys = [tuple(i.get(k) for k in schema["x-kubernetes-list-map-keys"]) for i in obj]
            out += [f"{path}: Duplicate value: {k}" for k in {k for k in keys if keys.count(k) > 1}]
        for i, item in enumerate(obj):
            out += duplicate_map_keys(item, schema["items"], f"{path}[{i}]")
    return out


class CrdValidator:
    """Validate objects against one CRD version's schema, as the API server would."""

    def __init__(self, crd: dict[str, Any] | None = None):
        crd = crd or load_crd()
        self.schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self._env = celpy.Environment()
        self._programs: dict[str, Any] = {}

    def program(self, rule: str):
        if rule not in self._programs:
            self._programs[rule] = self._env.program(
                self._env.compile(rule), functions=K8S_CEL_FUNCTIONS
            )
        return self._programs[rule]

    def _cel(self, obj: Any, schema: dict[str, Any], path: str, verdict: Verdict) -> None:
        for rule in schema.get("x-kubernetes-validations", []):
            try:
                result = self.program(rule["rule"]).evaluate({"self": celpy.json_to_cel(obj)})
            except Exception as err:  # cel-python raises assorted types on evaluation errors
                verdict.cel_errors.append(f"{path}: rule {rule['rule']!r} failed: {err}")
                continue
            if isinstance(result, celpy.CELEvalError):
                verdict.cel_errors.append(f"{path}: rule {rule['rule']!r} failed: {result}")
            elif not result:
                verdict.cel.append(rule["message"])
        if isinstance(obj, dict):
            for key, sub in schema.get("properties", {}).items():
                if key in obj:
                    self._cel(obj[key], sub, f"{path}.{key}", verdict)
        elif isinstance(obj, list) and "items" in schema:
            for i, item in enumerate(obj):
                self._cel(item, schema["items"], f"{path}[{i}]", verdict)

    def validate(self, obj: dict[str, Any]) -> Verdict:
        """Default, then validate a copy of `obj`; CEL runs only on a schema-valid object."""
        obj = apply_defaults(copy.deepcopy(obj), self.schema)
        verdict = Verdict()
        verdict.unknown = unknown_fields(obj, self.schema)
        validator = jsonschema.Draft4Validator(self.schema)
        verdict.schema = [
            f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        if not verdict.schema:
            self._cel(obj, self.schema, "", verdict)
        # reported next to the CEL messages, as the API server does
        verdict.schema += duplicate_map_keys(obj, self.schema)
        return verdict
