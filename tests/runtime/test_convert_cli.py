"""`lmo convert` end to end: exit codes, the refusal path and --manifest-out."""

from __future__ import annotations

import json

import pytest

from lmo_runtime import cli, store

pytestmark = pytest.mark.slow


def test_gate_refusal_writes_no_artifact(minilm_path, tmp_path, capsys):
    out, cache, term = tmp_path / "out", tmp_path / "cache", tmp_path / "termination-log"
    rc = cli.main([
        str(minilm_path), "--task", "feature-extraction", "--precision", "int8",
        "--min-score", "0.9995", "--out", str(out), "--cache-dir", str(cache),
        "--manifest-out", str(term), "--quiet",
    ])
    assert rc == cli.EXIT_REFUSED
    assert not out.exists() and not any(cache.glob("*/manifest.json"))
    err = capsys.readouterr().err
    assert "cosine 0.99" in err and "minScore 0.9995" in err and "--fallback" in err
    summary = json.loads(term.read_text())
    assert summary["accepted"] is False and summary["attempts"][0]["passed"] is False
    assert len(term.read_bytes()) < 4096


def test_convert_tiny_classifier_to_store_uri(tiny_bert_classifier, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMO_PVC_ROOT", str(tmp_path / "pvc"))
    term = tmp_path / "term.json"
    digest = store.checkpoint_digest(tiny_bert_classifier)
    rc = cli.main([
        f"file://{tiny_bert_classifier}", "--task", "text-classification", "--out",
        "pvc://artifacts/store/v1", "--sha256", digest, "--no-cache", "--quiet",
        "--manifest-out", str(term),
    ])
    assert rc == 0
    assert store.exists("pvc://artifacts/store/v1")
    art = tmp_path / "pvc/artifacts/store/v1"
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["accepted"] and manifest["checkpoint_sha256"] == digest
    assert manifest["golden"]["kind"] == "label"
    assert set(manifest["golden"]["outputs"]) <= {"NEGATIVE", "POSITIVE"}
    assert json.loads(term.read_text())["score"] == 1.0
    # the onnxruntime flavour delegates to a sibling ONNX model through BLS
    assert (art / "model_repository/text_classification_onnx/1/model.onnx").is_file()


def test_print_digest_and_bad_input_exit_codes(tiny_bert_classifier, tmp_path, capsys):
    assert cli.main([str(tiny_bert_classifier), "--print-digest"]) == 0
    assert capsys.readouterr().out.strip() == store.checkpoint_digest(tiny_bert_classifier)
    rc = cli.main([str(tiny_bert_classifier), "--task", "text-generation", "--out", str(tmp_path / "o")])
    assert rc == cli.EXIT_BAD_INPUT
    assert "text-generation" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "missing"), "--task", "fill-mask", "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    rc = cli.main([str(tiny_bert_classifier), "--task", "fill-mask", "--min-score", "1.5",
                   "--out", str(tmp_path / "o")])
    assert rc == 2 and "--min-score must be between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fp16_for_gpu_serving(tiny_bert_classifier, tmp_path):
    import onnx

    out = tmp_path / "fp16"
    rc = cli.main([str(tiny_bert_classifier), "--task", "text-classification", "--precision",
                   "fp16", "--gpus", "1", "--out", str(out), "--no-cache", "--quiet"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["score"]["value"] == 1.0
    model = onnx.load(str(out / "model_repository/text_classification_onnx/1/model.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    config = (out / "model_repository/text_classification_onnx/config.pbtxt").read_text()
    assert "KIND_GPU" in config


@pytest.mark.parametrize("fallback,sha", [(False, None), (True, "ab" * 32)])
def test_job_arguments_reproduce_the_operators_content_key(fallback, sha):
    """The conversion Job passes the request as `lmo convert` flags; the converter must
    rebuild exactly the request the operator keyed the artifact URI with."""
    import argparse

    from lmo.builders.base import VersionPlan
    from lmo.builders.conversion import convert_args
    from lmo_runtime.manifest import ConversionRequest

    request = ConversionRequest(
        checkpoint_uri="s3://models/bert/v2/", checkpoint_sha256=sha, task="fill-mask",
        precision="int8-static", min_score=0.97, fallback=fallback, calibration_samples=128,
        backend="python", max_batch_size=32, max_queue_delay_microseconds=250, gpus=1,
    )
    plan = VersionPlan(name="v2", request=request, artifact_uri=f"s3://store/{request.key()}/",
                       convert=True, serve_uri=None, traffic=0)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    rebuilt = cli.request_from_args(parser.parse_args(convert_args(plan)))
    assert rebuilt == request and rebuilt.key() == request.key()


def _convert_to(ckpt, out, *extra):
    return cli.main([str(ckpt), "--task", "text-classification", "--out", str(out),
                     "--no-cache", "--quiet", *extra])


def test_out_that_is_not_an_artifact_is_refused_and_kept(tiny_bert_classifier, tmp_path, capsys):
    """Publishing replaces --out as a whole: a directory lmo did not write is never deleted."""
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_classifier, ckpt)
    digest = store.checkpoint_digest(ckpt)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert _convert_to(ckpt, mine) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"--out {mine} already exists and is not an lmo artifact (it holds notes.txt)" in err
    assert (mine / "notes.txt").read_text() == "keep me"
    # --out at, inside or above the checkpoint would delete or change it
    for out, where in ((ckpt, "is"), (ckpt / "artifact", "is inside"), (tmp_path, "contains")):
        assert _convert_to(ckpt, out) == cli.EXIT_BAD_INPUT
        assert f"{where} the checkpoint directory" in capsys.readouterr().err
    assert store.checkpoint_digest(ckpt) == digest and not (ckpt / "artifact").exists()
    # a file is not replaced either; an empty directory and an earlier artifact are
    (tmp_path / "file").write_text("x")
    assert _convert_to(ckpt, tmp_path / "file") == cli.EXIT_BAD_INPUT
    assert "is not a directory" in capsys.readouterr().err
    empty, old = tmp_path / "empty", tmp_path / "old"
    empty.mkdir()
    (old / "model_repository/stale/1").mkdir(parents=True)
    (old / "manifest.json").write_text("{}")
    assert _convert_to(ckpt, empty) == cli.EXIT_OK
    assert _convert_to(ckpt, old) == cli.EXIT_OK
    assert (old / "model_repository/text_classification").is_dir()
    assert not (old / "model_repository/stale").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_store_put_refuses_a_target_that_is_not_an_artifact(tmp_path, monkeypatch):
    from lmo_runtime.errors import ConversionError

    monkeypatch.setenv("LMO_PVC_ROOT", str(tmp_path / "pvc"))
    src = tmp_path / "artifact"
    (src / "model_repository").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    target = tmp_path / "pvc/claim/data"
    target.mkdir(parents=True)
    (target / "data.csv").write_text("1,2")
    with pytest.raises(ConversionError, match="pvc://claim/data .* is not an lmo artifact"):
        store.put(src, "pvc://claim/data")
    assert (target / "data.csv").is_file()


def _saved_as(dtype_name, src, dest, cls_name):
    """A copy of checkpoint `src` whose weights (and config.json dtype) are `dtype_name`."""
    import shutil

    import torch
    import transformers

    model = getattr(transformers, cls_name).from_pretrained(src, dtype=torch.float32)
    model.to(getattr(torch, dtype_name)).save_pretrained(dest)
    for f in src.iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "vocab.json", "merges.txt"):
            shutil.copy(f, dest / f.name)
    return dest


@pytest.mark.parametrize("dtype_name,model", [("bfloat16", "bert"), ("float16", "gpt2")])
def test_half_precision_checkpoints_convert_from_float32_weights(
    dtype_name, model, request, tmp_path
):
    """An fp16/bf16 checkpoint is loaded as float32: an fp32 artifact is float32, not a
    half-precision graph labelled fp32 (nor a crash in the reference run)."""
    import onnx

    if model == "bert":
        src, cls, task = request.getfixturevalue("tiny_bert_classifier"), \
            "BertForSequenceClassification", "text-classification"
    else:
        src, cls, task = request.getfixturevalue("gpt2_checkpoint"), "GPT2LMHeadModel", \
            "text-generation"
    ckpt = _saved_as(dtype_name, src, tmp_path / "ckpt", cls)
    assert json.loads((ckpt / "config.json").read_text())["dtype"] == dtype_name
    out = tmp_path / "out"
    rc = cli.main([str(ckpt), "--task", task, "--out", str(out), "--backend", "python",
                   "--no-cache", "--quiet"])
    assert rc == cli.EXIT_OK
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["score"]["value"] == 1.0
    graph = onnx.load(str(next(out.glob("model_repository/*/1/model.onnx"))))
    assert {t.data_type for t in graph.graph.initializer if t.dims} <= {
        onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


def test_unexpected_failure_is_one_line_and_writes_nothing(tiny_bert_classifier, tmp_path,
                                                           monkeypatch, capsys):
    from lmo_runtime.families import encoder as bert

    def broken(self, loaded, work_dir):
        raise RuntimeError("exporter broke\nsecond line")

    monkeypatch.setattr(bert.EncoderFamily, "export", broken)
    out, term = tmp_path / "out", tmp_path / "term.json"
    args = [str(tiny_bert_classifier), "--task", "text-classification", "--out", str(out),
            "--no-cache", "--quiet", "--manifest-out", str(term)]
    monkeypatch.delenv("LMO_DEBUG", raising=False)
    assert cli.main(args) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("lmo convert: error:")]
    assert line == ["lmo convert: error: RuntimeError: exporter broke second line "
                    "(rerun with LMO_DEBUG=1 for the traceback)"]
    assert json.loads(term.read_text()) == {"accepted": False,
                                            "reason": "RuntimeError: exporter broke second line"}
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    monkeypatch.setenv("LMO_DEBUG", "1")
    assert cli.main(args) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and "in broken" in err and not out.exists()
