"""`lmo operator` runs on the base dependencies alone: the operator image installs lmo without
extras (no torch, no protobuf), so every package the operator imports at start must come with
the base install. Found when the operator image first ran as a real pod (tests/realnode):
`ModuleNotFoundError: No module named 'google'`, lmo.builders -> lmo_runtime.feedback ->
lmo_runtime.triton.config -> protobuf (an extra: tritonclient[grpc])."""

from __future__ import annotations

import importlib.util

from tests.fixtures.distributions import closure, modules_outside, run_hiding


def test_the_operator_starts_with_base_dependencies_only():
    # import the operator with every installed package that `pip install lmo` would not bring
    # hidden, as in the operator image (optional imports, `try: import x`, stay optional)
    hidden = modules_outside(closure(["lmo"]))
    # the split this test is about: base packages stay importable, the extras' are hidden
    # (torch where the runtime extra is installed; the operator-only venv has none of it)
    assert "kopf" not in hidden and "google" in hidden
    if importlib.util.find_spec("torch") is not None:
        assert "torch" in hidden
    proc = run_hiding(hidden, "import lmo.cli, lmo.operator_main, lmo.handlers")
    assert proc.returncode == 0, proc.stderr[-2000:]
