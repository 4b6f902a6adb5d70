"""optimize.evaluation on the cluster: the API refuses bad values, the conversion Job passes
the data to `lmo convert` (mounting a ConfigMap), and the outcome lands in status."""

from __future__ import annotations

import argparse
import json

import pytest

from lmo.api import SpecError
from lmo.builders.conversion import convert_args
from lmo.observe import conversion_outcome

from .conftest import container, make_lm
from .test_conversion import _flag, _job

CM_EVAL = {"uri": "configmap://zh-eval/eval.jsonl", "field": "sentence", "limit": 200,
           "sha256": "d" * 64}


def _lm(evaluation: dict, precision: str = "int8-static"):
    return make_lm({"versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"},
                                  "optimize": {"precision": precision,
                                               "evaluation": evaluation}}]})


def test_configmap_evaluation_is_mounted_and_passed(settings):
    plan, job = _job(_lm(CM_EVAL), settings)
    c = container(job)
    args = c["args"]
    assert _flag(args, "--evaluation-uri") == "configmap://zh-eval/eval.jsonl"
    assert _flag(args, "--evaluation-field") == "sentence"
    assert _flag(args, "--evaluation-limit") == "200"
    assert _flag(args, "--evaluation-sha256") == "d" * 64
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["evaluation"] == {"name": "evaluation", "configMap": {"name": "zh-eval"}}
    mount = next(m for m in c["volumeMounts"] if m["name"] == "evaluation")
    # where lmo_runtime.evaluation looks for configmap://zh-eval/... by default
    from lmo_runtime.evaluation import DEFAULT_CONFIGMAP_ROOT

    assert mount == {"name": "evaluation", "mountPath": f"{DEFAULT_CONFIGMAP_ROOT}/zh-eval",
                     "readOnly": True}
    # the converter rebuilds the same request (and so the same content key)
    from lmo_runtime.cli import add_arguments, request_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    request = request_from_args(parser.parse_args(args))
    assert request == plan.request and request.key() == plan.key


def test_s3_evaluation_needs_no_volume_and_changes_the_key(settings):
    plan, job = _job(_lm({"uri": "s3://data/eval.jsonl"}), settings)
    assert "evaluation" not in {v["name"] for v in job["spec"]["template"]["spec"]["volumes"]}
    assert _flag(convert_args(plan), "--evaluation-field") == "text"
    assert "--evaluation-sha256" not in convert_args(plan)
    without, _ = _job(make_lm({"versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"},
                                              "optimize": {"precision": "int8-static"}}]}),
                      settings)
    assert "--evaluation-uri" not in convert_args(without) and without.key != plan.key


@pytest.mark.parametrize("evaluation, field", [
    ({"uri": "https://example.com/eval.jsonl"}, "uri"),
    ({"uri": "configmap://cm/k", "limit": 0}, "limit"),
    ({"uri": "configmap://cm/k", "field": ""}, "field"),
    ({"uri": "s3://b/k", "sha256": "xyz"}, "sha256"),
    ({"uri": "s3://b/k", "format": "csv"}, "format"),
])
def test_bad_evaluation_is_refused_naming_the_field(evaluation, field):
    with pytest.raises(SpecError, match=rf"spec\.versions\[0\]\.optimize\.evaluation\.{field}"):
        _lm(evaluation)


def test_the_converters_summary_puts_the_evaluation_into_status():
    record = {"source": "configmap://zh-eval/eval.jsonl", "sha256": "e" * 64, "records": 200,
              "heldout": 136, "calibration": 64}
    summary = {"key": "k" * 64, "accepted": True, "precision": "int8-static", "sha256": "a" * 64,
               "sizeBytes": 10, "score": 0.995, "evaluation": record}
    accepted, _, artifact = conversion_outcome([json.dumps(summary)], "s3://store/k", "k" * 64)
    assert accepted and artifact["evaluation"] == record
    from lmo.api import ArtifactStatus

    status = ArtifactStatus.model_validate(artifact).to_dict()
    assert status["evaluation"] == record and status["score"] == 0.995
    # an older converter's summary (no evaluation) still gives an artifact
    del summary["evaluation"]
    assert "evaluation" not in conversion_outcome([json.dumps(summary)], "s3://x", "k" * 64)[2]


def test_lmo_up_resolves_a_relative_evaluation_file_like_the_checkpoint(tmp_path):
    from lmo.local.versions import ServerFlavour, local_request

    (tmp_path / "ckpt").mkdir()
    lm = make_lm({"versions": [{"name": "v1", "checkpoint": {"uri": "file://ckpt"},
                                "optimize": {"evaluation": {"uri": "file://data/eval.jsonl"}}}]})
    request = local_request(lm.spec, lm.spec.versions[0], tmp_path, ServerFlavour(None, False, False))
    assert request.evaluation.uri == f"file://{tmp_path.resolve()}/data/eval.jsonl"
    assert request.checkpoint_uri == f"file://{tmp_path.resolve()}/ckpt"


def test_pvc_evaluation_claim_is_mounted_read_only(settings):
    _, job = _job(_lm({"uri": "pvc://datasets/zh/eval.jsonl"}), settings)
    pod = job["spec"]["template"]["spec"]
    claims = {v["persistentVolumeClaim"]["claimName"]: v["persistentVolumeClaim"]["readOnly"]
              for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims["datasets"] is True
    mount = next(m for m in container(job)["volumeMounts"] if m["mountPath"] == "/mnt/pvc/datasets")
    assert mount["readOnly"] is True
