"""spec.logging.payloads: validation, the Triton environment both runtimes get, and
`lmo logs` reading Triton pod logs through the kubernetes client (a recorded log).

The refusals of sampleRate and sink on the CRD side are in tests/chart/test_crd.py (INVALID);
the real Triton side (records, redaction, drops) in tests/runtime/test_payloads.py.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from lmo.api import SpecError
from lmo.builders.payloads import payload_env
from lmo.builders.triton import build_deployment
from lmo_runtime.payloads import ENV_PAYLOADS, PayloadConfig

from .conftest import OWNER, container, make_lm, make_plans

PAYLOADS = {"sampleRate": 0.25, "redact": [r"\b\d{11}\b", "sk-[A-Za-z0-9]+"],
            "sink": "s3://audit-bucket/lmo", "secretRef": {"name": "payload-store"}}


def _lm(payloads):
    return make_lm({"logging": {"payloads": payloads}})


def test_deployment_gets_the_payload_environment_and_the_sink_secret(settings):
    lm = _lm(PAYLOADS)
    plan = make_plans(lm, settings)[0]
    c = container(build_deployment(lm, OWNER, settings, plan, 1), "triton")
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["LMO_NAME"] == "chat" and env["LMO_VERSION"] == plan.name
    # what the model reads back is what the spec says
    config = PayloadConfig.from_env(env)
    assert config == PayloadConfig(0.25, tuple(PAYLOADS["redact"]), "s3://audit-bucket/lmo")
    # optional: a missing Secret fails the sink (dropped, counted), never the pods
    assert c["envFrom"] == [{"secretRef": {"name": "payload-store", "optional": True}}]


def test_without_payload_logging_the_pod_template_is_unchanged(settings):
    lm = make_lm()
    c = container(build_deployment(lm, OWNER, settings, make_plans(lm, settings)[0], 1),
                  "triton")
    assert [e["name"] for e in c["env"]] == ["HOME"] and "envFrom" not in c
    assert payload_env(lm.spec, "chat", "v1") == {}


def test_payload_environment_is_the_same_for_lmo_up():
    """lmo up's Fleet starts each tritonserver with payload_env too (one decision)."""
    lm = _lm({"sampleRate": 1, "sink": "stdout"})
    env = payload_env(lm.spec, "chat", "v2")
    assert json.loads(env[ENV_PAYLOADS]) == {"redact": [], "sampleRate": 1.0, "sink": "stdout"}


@pytest.mark.parametrize("payloads,words", [
    ({"sampleRate": -0.1}, "spec.logging.payloads.sampleRate"),
    ({"sampleRate": 2}, "spec.logging.payloads.sampleRate"),
    ({"redact": ["(unclosed"]}, "spec.logging.payloads.redact[0] '(unclosed' is not a valid "
                                "regular expression"),
    ({"redact": ["ok", "[z-a]"]}, "spec.logging.payloads.redact[1]"),
    ({"sink": "stderr"}, "spec.logging.payloads.sink must be stdout or s3://bucket/prefix"),
    ({"sink": "s3://"}, "spec.logging.payloads.sink must be stdout or s3://bucket/prefix"),
    ({"sampleRate": 0.1, "sampleRat": 1}, "spec.logging.payloads.sampleRat"),
])
def test_bad_payload_settings_name_the_field_and_the_fix(payloads, words):
    with pytest.raises(SpecError) as refused:
        _lm(payloads)
    assert words in str(refused.value)


def test_defaults():
    p = _lm({}).spec.logging.payloads
    assert (p.sample_rate, p.redact, p.sink) == (0.05, [], "stdout")


# --------------------------------------------------------------------------- lmo logs

RECORDED = "\n".join([
    'I1204 16:23:10.841565 1 http_server.cc:4713] "Started HTTPService at 0.0.0.0:8000"',
    json.dumps({"lmo_payload": 1, "time": "2026-12-04T16:23:11.011Z", "requestId": "b",
                "model": "chat", "version": "v1", "task": "text-classification",
                "input": "second", "output": {"label": "POSITIVE", "score": 0.9},
                "latencyMs": 0.8, "error": None}),
    json.dumps({"lmo_payload": 1, "time": "2026-12-04T16:23:10.989Z", "requestId": "a",
                "model": "chat", "version": "v1", "task": "text-classification",
                "input": "first", "output": {"label": "NEGATIVE", "score": 0.7},
                "latencyMs": 1.8, "error": None}),
    '{"not": "a payload"}',
    "E1204 16:23:17.521202 1 main.cc:535] failed to stop server",
])


class FakeApiException(Exception):
    def __init__(self, status):
        self.status, self.reason, self.body = status, "Bad Request", ""


class FakeCore:
    """CoreV1Api as the kubernetes client answers: pods by selector, a log per pod."""

    calls: list = []

    def list_namespaced_pod(self, namespace, label_selector):
        self.calls.append(("list", namespace, label_selector))
        pods = ["chat-v1-abc", "chat-v1-def", "chat-v1-new"]
        return SimpleNamespace(items=[SimpleNamespace(metadata=SimpleNamespace(name=n))
                                      for n in pods])

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.calls.append(("log", name, kwargs))
        if name == "chat-v1-new":
            raise FakeApiException(400)  # container not started yet
        return RECORDED if name == "chat-v1-abc" else RECORDED.replace('"b"', '"c"')


def test_lmo_logs_reads_payload_lines_of_the_triton_pods(monkeypatch, capsys):
    from lmo.commands import logs

    client = SimpleNamespace(CoreV1Api=FakeCore, ApiException=FakeApiException)
    monkeypatch.setattr(logs, "_kube", lambda context: client)
    FakeCore.calls = []
    args = logs_args(name="chat", model_version="v1", namespace="ml", tail=None, since="10m")
    assert logs.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    # two pods x two records, oldest first, other lines skipped
    assert [r["requestId"] for r in records] == ["a", "a", "b", "c"]
    assert FakeCore.calls[0] == ("list", "ml", "lmo.dev/model=chat,"
                                 "app.kubernetes.io/component=triton,lmo.dev/version=v1")
    assert FakeCore.calls[1][2] == {"container": "triton", "since_seconds": 600}


def test_lmo_logs_text_output_and_tail(monkeypatch, capsys):
    from lmo.commands import logs

    client = SimpleNamespace(CoreV1Api=FakeCore, ApiException=FakeApiException)
    monkeypatch.setattr(logs, "_kube", lambda context: client)
    assert logs.run(logs_args(name="chat", namespace="ml", tail=1, output="text")) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and "'second'" in out[0] and "POSITIVE" in out[0]


def test_lmo_logs_local_reads_the_logs_lmo_up_keeps(tmp_path, capsys):
    from lmo.commands import logs

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "chat-v1.log").write_text(RECORDED + "\n")
    (tmp_path / "logs" / "other-v1.log").write_text(RECORDED.replace('"chat"', '"other"'))
    assert logs.run(logs_args(name="chat", local=True, work_dir=str(tmp_path))) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["requestId"] for r in records] == ["a", "b"]
    with pytest.raises(Exception, match="no Triton log of chat version v9"):
        logs.run(logs_args(name="chat", local=True, work_dir=str(tmp_path), model_version="v9"))


def logs_args(**kw):
    import argparse

    from lmo.commands import logs

    parser = argparse.ArgumentParser()
    logs.add_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_lmo_logs_is_a_command():
    from lmo.cli import COMMANDS

    assert COMMANDS["logs"][0] == "lmo.commands.logs"


def test_crd_has_the_logging_fields():
    from lmo import crd

    schema = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    payloads = schema["properties"]["spec"]["properties"]["logging"]["properties"]["payloads"]
    assert payloads["properties"]["sampleRate"]["maximum"] == 1
    assert payloads["x-kubernetes-validations"][0]["fieldPath"] == ".sink"
