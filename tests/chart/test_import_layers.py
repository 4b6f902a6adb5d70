"""The import layering in .importlinter holds, names only modules that exist, and can fail."""

from __future__ import annotations

import configparser
import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache", "--no-logo"],
        capture_output=True, text=True, cwd=REPO,
    )


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
                named |= {m.strip("() ") for m in config[section].get(key, "").split()}
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
