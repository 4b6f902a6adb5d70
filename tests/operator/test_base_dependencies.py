"""`lmo operator` runs on the base dependencies alone: the operator image installs lmo without
extras (no torch, no protobuf), so every package the operator imports at start must come with
the base install. Found when the operator image first ran as a real pod (tests/realnode):
`ModuleNotFoundError: No module named 'google'`, lmo.builders -> lmo_runtime.feedback ->
lmo_runtime.triton.config -> protobuf (an extra: tritonclient[grpc])."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Import the operator with every installed package that `pip install lmo` would not bring
# hidden, as in the operator image (optional imports, `try: import x`, stay optional).
IMPORTS = """
import importlib.abc, json, sys
hidden = set(json.loads(sys.argv[1]))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import lmo.cli, lmo.operator_main, lmo.handlers
"""


def base_closure(dist: str = "lmo") -> set[str]:
    """Distributions `pip install lmo` (no extras) brings in."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
                # an extra named on a base requirement (tritonclient[http]) brings its own
                for extra in req.extras:
                    for sub in metadata.requires(req.name) or []:
                        r = Requirement(sub)
                        if r.marker is not None and r.marker.evaluate({"extra": extra}):
                            todo.append(r.name)
    return seen


def test_the_operator_starts_with_base_dependencies_only():
    allowed = base_closure()
    hidden = sorted(
        module for module, dists in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in dists} & allowed
        and module not in sys.stdlib_module_names and module not in ("lmo", "lmo_runtime")
    )
    # the split this test is about: base packages stay importable, the extras' are hidden
    # (torch where the runtime extra is installed; the operator-only venv has none of it)
    assert "kopf" not in hidden and "google" in hidden
    if importlib.util.find_spec("torch") is not None:
        assert "torch" in hidden
    proc = subprocess.run([sys.executable, "-c", IMPORTS, json.dumps(hidden)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
