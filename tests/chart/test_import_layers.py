"""The import layering in .importlinter holds, names only modules that exist, places every
module of operator/lmo, and fails on a circle."""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
SIBLINGS = {"|", ":"}  # independent / non-independent siblings on one layers line


def run(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache", "--no-logo"],
        capture_output=True, text=True, cwd=REPO, env=env,
    )


def layered_modules() -> set[str]:
    """Every module a layers contract places."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    out = set()
    for section in config.sections():
        if config[section].get("type") == "layers":
            out |= {m.strip("() ") for m in config[section]["layers"].split()} - SIBLINGS
    return out


def test_contracts_are_kept():
    result = run(REPO / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_contracts_name_existing_modules():
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    named = set()
    for section in config.sections():
        if section.startswith("importlinter:contract:"):
            for key in ("layers", "source_modules"):
                named |= {m.strip("() ") for m in config[section].get(key, "").split()} - SIBLINGS
    assert {"lmo.handlers", "lmo.reconcile", "lmo.builders", "lmo.api", "lmo_runtime"} <= named
    missing = sorted(m for m in named if importlib.util.find_spec(m) is None)
    assert not missing, f".importlinter names modules that do not exist: {missing}"


def test_a_broken_layer_is_reported(tmp_path):
    """Same setup, one contract the code breaks on purpose (lmo.api imports pydantic)."""
    text = (REPO / ".importlinter").read_text()
    text += (
        "\n[importlinter:contract:probe]\nname = probe\ntype = forbidden\n"
        "source_modules =\n    lmo.api\nforbidden_modules =\n    pydantic\n"
    )
    config = tmp_path / "importlinter.ini"
    config.write_text(text)
    result = run(config)
    assert result.returncode == 1, result.stdout
    assert "probe BROKEN" in result.stdout


def test_every_module_of_lmo_is_in_a_layer():
    """A module left out of the layers could close a circle unseen: each module of
    operator/lmo (or a package above it) is placed, and each package's own modules are too."""
    layered = layered_modules()
    root = REPO / "operator" / "lmo"
    modules = []
    for path in root.rglob("*.py"):
        parts = ("lmo", *path.relative_to(root).with_suffix("").parts)
        if parts[-1] in ("__init__", "__main__"):
            parts = parts[:-1]
        if len(parts) > 1:
            modules.append(".".join(parts))
    unplaced = sorted(m for m in modules if m not in layered)
    assert not unplaced, f"modules no layers contract of .importlinter places: {unplaced}"


@pytest.mark.parametrize(
    "module, line, contract",
    [
        # a strategy reaching back into the dispatcher that imports it
        ("decide/canary.py", "import lmo.rollout", "Every module of lmo in one direction"),
        # the vocabulary importing a strategy (the old analysis <-> experiment knot)
        ("decide/vocabulary.py", "import lmo.decide.experiment", "The decision core"),
        # inside a function, where it used to hide
        ("api/base.py", "def _late():\n    import lmo.api.resource", "The API package"),
    ],
)
def test_a_circle_fails(tmp_path, module, line, contract):
    """A copy of operator/lmo with one import that closes a circle breaks its contract."""
    copy = tmp_path / "lmo"
    shutil.copytree(REPO / "operator" / "lmo", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / module, "a") as f:
        f.write(f"\n{line}  # a circle\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = run(REPO / ".importlinter", env)
    assert result.returncode == 1, result.stdout + result.stderr
    report = " ".join(result.stdout.split())  # lint-imports wraps long contract names
    verdicts = report.split("Contracts:")[0]  # one "<name> KEPT|BROKEN" per contract
    broken = [part.rsplit(" KEPT", 1)[-1] for part in verdicts.split(" BROKEN")[:-1]]
    assert any(contract in name for name in broken), result.stdout
