"""The GPU Triton image (runtime/Dockerfile.triton, NGC base, built by users' CI with Docker)
also runs every pod's front container, `python3 -m lmo_runtime.front`. Docker is not on these
machines, so what the front needs from that image is checked here: lmo's wheel is installed
there, the front imports nothing but the standard library, lmo_runtime and the packages the
Dockerfile pip-installs, and the modules it loads hold to that image's python3 (3.10: NGC
24.10 is Ubuntu 22.04)."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

from tests.fixtures.distributions import closure, modules_outside, run_hiding

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime"
FRONT = RUNTIME / "lmo_runtime" / "front"
DOCKERFILE = (RUNTIME / "Dockerfile.triton").read_text()
IMAGE_PYTHON = (3, 10)
# what 3.11 added that 3.10 lacks, in the forms the front could use it
NEW_IN_311_MODULES = {"tomllib", "wsgiref.types"}
NEW_IN_311_NAMES = {"TaskGroup", "StrEnum", "Self", "LiteralString", "Never", "ExceptionGroup",
                    "reveal_type", "assert_never", "UTC", "timeout", "add_note", "Runner"}
MODULE_OF = {"pyyaml": "yaml"}  # pip name -> import name where they differ


def _image_pins() -> set[str]:
    """The distributions Dockerfile.triton pip-installs, by their pip names."""
    return {m.group(1).lower() for m in re.finditer(r'"([A-Za-z0-9_.-]+)==', DOCKERFILE)}


def _image_packages() -> set[str]:
    return {MODULE_OF.get(p, p).replace("-", "_") for p in _image_pins()}


def _allowed(top: str) -> bool:
    return top in sys.stdlib_module_names or top in {"lmo_runtime", "__future__"} \
        or top in _image_packages()


def test_the_image_installs_lmos_wheel_for_the_front():
    assert re.search(r"^COPY runtime ", DOCKERFILE, re.M) \
        and re.search(r"^COPY operator ", DOCKERFILE, re.M) \
        and re.search(r"^COPY pyproject.toml", DOCKERFILE, re.M), \
        "Dockerfile.triton must install lmo's wheel: the front container runs lmo_runtime.front"
    assert "--no-deps" in DOCKERFILE and 'import lmo_runtime.front.app' in DOCKERFILE
    assert {"aiohttp", "numpy", "tokenizers", "jinja2"} <= _image_packages()


def test_the_front_loads_with_only_what_the_image_has():
    """Import the front as the pod does, with every module the image would not have hidden."""
    hidden = modules_outside(closure(_image_pins()))
    done = run_hiding(hidden, """
import importlib, json
for m in ("lmo_runtime.front.__main__", "lmo_runtime.front.app", "lmo_runtime.front.chat",
          "lmo_runtime.front.kserve", "lmo_runtime.front.openai_api"):
    importlib.import_module(m)
print(json.dumps(sorted(n for n in sys.modules if n.split(".")[0] == "lmo_runtime")))
""", timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "lmo_runtime.feedback" in loaded
    for name in loaded:
        _holds_to_python_310(name)


def test_imports_inside_the_fronts_functions_are_in_the_image_too():
    """Lazy imports (jinja2 for a checkpoint's chat template) run in the pod as well."""
    for file in sorted(FRONT.glob("*.py")):
        tree = ast.parse(file.read_text(), str(file))
        optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                    and any(_catches_import_error(h) for h in t.handlers)
                    for n in ast.walk(t)}
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            for mod in _imported(node):
                assert _allowed(mod.split(".")[0]), f"{file.name} imports {mod}: not in the image"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(n, ast.Name) and n.id in {"ImportError", "ModuleNotFoundError"}
               for n in names)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        return [node.module]
    return []


def _holds_to_python_310(name: str) -> None:
    base = RUNTIME / Path(*name.split("."))
    source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    text = source.read_text()
    tree = ast.parse(text, str(source), feature_version=IMAGE_PYTHON)  # 3.10's grammar
    for node in ast.walk(tree):
        for mod in _imported(node):
            assert mod not in NEW_IN_311_MODULES, f"{name} imports {mod} (Python 3.11+)"
        if isinstance(node, ast.Attribute) and node.attr in NEW_IN_311_NAMES:
            raise AssertionError(f"{name}:{node.lineno} uses .{node.attr} (Python 3.11+)")
        if isinstance(node, ast.alias) and node.name in NEW_IN_311_NAMES:
            raise AssertionError(f"{name} imports {node.name} (Python 3.11+)")
