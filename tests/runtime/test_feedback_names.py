"""The feedback model runs inside Triton's Python backend, which cannot import lmo_runtime, so
it spells its counter names itself: they must be the names lmo reads (`lmo_runtime.feedback`,
which the experiment's PromQL and the `lmo up` front door use)."""

from __future__ import annotations

import ast
from importlib import resources

from lmo_runtime import feedback


def test_the_model_counts_under_the_names_lmo_reads():
    source = resources.files("lmo_runtime").joinpath("triton_models/feedback/model.py").read_text()
    assigned = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
    }
    assert assigned["SAMPLES"] == feedback.SAMPLES
    assert assigned["SUCCESSES"] == feedback.SUCCESSES
