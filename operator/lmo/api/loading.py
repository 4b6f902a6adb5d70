"""Reading LanguageModels from dicts and files, and errors that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel
import yaml

from lmo.api.base import KIND
from lmo.api.resource import LanguageModel


class SpecError(ValueError):
    """A LanguageModel that cannot be accepted; `str()` names each field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + (to_camel(part) if "_" in str(part) else str(part))
    return out


def explain(err: ValidationError, prefix: str = "") -> list[str]:
    """Readable one-line problems, each naming the field (spec.versions[0].traffic: ...)."""
    problems = []
    for e in err.errors():
        where = _loc(tuple(e["loc"]))
        msg = e["msg"].removeprefix("Value error, ")
        path = ".".join(p for p in (prefix, where) if p)
        # cross-field messages already start with the path they are about
        problems.append(msg if msg.startswith("spec.") or not path else f"{path}: {msg}")
    return problems


def parse(obj: dict[str, Any]) -> LanguageModel:
    """Validate a LanguageModel object; raise SpecError with field-named messages."""
    try:
        return LanguageModel.model_validate(obj)
    except ValidationError as err:
        raise SpecError(explain(err)) from None


def load_file(path: str | Path) -> list[LanguageModel]:
    """Every LanguageModel document in a YAML file (other kinds are ignored).

    The YAML is read from the open file, so a syntax error names the file, line and column
    (from a string PyYAML would say `in "<unicode string>"`).
    """
    try:
        with open(path, "rb") as stream:
            docs = [d for d in yaml.safe_load_all(stream) if d]
    except OSError as err:
        raise SpecError([f"{path}: cannot read the file ({err.strerror})"]) from None
    except yaml.YAMLError as err:
        raise SpecError([f"{path}: not valid YAML: {err}"]) from None
    models = [parse(d) for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if not models:
        raise SpecError([f"{path}: no document with kind: {KIND}"])
    return models
