"""`lmo render` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from lmo.cli import main

from .test_children import GOLDEN, OWNER_UID

INPUT = GOLDEN / "inputs" / "gpt2-canary.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Operator settings come from LMO_* variables: start from none, restore argv after."""
    for name in list(os.environ):
        if name.startswith("LMO_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", list(sys.argv))


def _lmo(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["render", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_render_matches_golden(capsys):
    code, out, _ = _lmo(capsys, "-f", str(INPUT), "--owner-uid", OWNER_UID)
    assert code == 0
    assert out == (GOLDEN / "gpt2-canary.yaml").read_text()


def test_pending_renders_jobs_instead_of_pods(capsys):
    code, out, _ = _lmo(capsys, "-f", str(INPUT), "--pending", "--owner-uid", OWNER_UID)
    assert code == 0
    assert out == (GOLDEN / "gpt2-canary-pending.yaml").read_text()
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["Job", "Job", "HTTPRoute", "NetworkPolicy"]


def test_without_owner_uid_no_owner_references(capsys):
    code, out, _ = _lmo(capsys, "-f", str(INPUT))
    assert code == 0
    docs = list(yaml.safe_load_all(out))
    assert docs and all("ownerReferences" not in d["metadata"] for d in docs)


def test_settings_from_flags_and_env(capsys, monkeypatch):
    monkeypatch.setenv("LMO_CONVERTER_IMAGE", "registry.local/conv:9")
    code, out, _ = _lmo(
        capsys,
        "-f",
        str(GOLDEN / "inputs" / "tiny-bert.yaml"),
        "--pending",
        "--settings",
        "artifact_store=s3://bucket/lmo",
        "--settings",
        "job_ttl_seconds=60",
        "-n",
        "team-a",
    )
    assert code == 0
    jobs = [d for d in yaml.safe_load_all(out) if d["kind"] == "Job"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["metadata"]["namespace"] == "team-a"
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == "registry.local/conv:9"
        assert c["args"][c["args"].index("--out") + 1].startswith("s3://bucket/lmo/")
        assert job["spec"]["ttlSecondsAfterFinished"] == 60


def test_json_output_and_crd(capsys):
    code, out, _ = _lmo(capsys, "-f", str(INPUT), "-o", "json", "--include-crd")
    assert code == 0
    doc = json.loads(out)
    assert doc["kind"] == "List"
    first = doc["items"][0]
    assert first["kind"] == "CustomResourceDefinition"
    assert first["metadata"]["name"] == "languagemodels.lmo.dev"
    assert [i["kind"] for i in doc["items"][1:]].count("Deployment") == 2


def test_bad_file_names_the_field(capsys, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    text = INPUT.read_text().replace("traffic: 10", "traffic: 20")
    bad.write_text(text)
    code, out, err = _lmo(capsys, "-f", str(bad))
    assert code == 2
    assert out == ""
    assert "spec.versions[].traffic must sum to 100" in err and "sums to 110" in err


def test_bad_field_value_names_its_path(capsys, tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(INPUT.read_text().replace("precision: fp16\n      accuracyGate: {minScore: 0.97",
                                          "precision: int4\n      accuracyGate: {minScore: 0.97"))
    code, _, err = _lmo(capsys, "-f", str(bad))
    assert code == 2
    assert "spec.versions[1].optimize.precision" in err


def test_bad_settings_key(capsys):
    code, _, err = _lmo(capsys, "-f", str(INPUT), "--settings", "nope=1")
    assert code == 2
    assert "--settings 'nope=1'" in err


def test_render_needs_no_torch_kopf_or_kubernetes():
    """`lmo render` runs anywhere (CI, a laptop without the runtime extras): light imports."""
    import subprocess

    code = (
        "import sys, lmo.render, lmo.builders; "
        "print(sorted(m for m in ('torch', 'onnx', 'kopf', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
