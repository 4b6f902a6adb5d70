"""Pure parts of lmo up and the commands: routing rules, patches, metrics, docs, examples."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmo.api import LanguageModelSpec, load_file, SpecError
from lmo.api import parse as parse_lm
from lmo.builders import endpoint
from lmo.cli import main
from lmo.commands import status as status_command
from lmo.commands import traffic as traffic_command
from lmo.commands import status as status_command
from lmo.commands import traffic as traffic_command
from lmo.commands.infer import base_url
from lmo.commands.traffic import rollback_version, traffic_patch
from lmo.decide.triton import parse, Snapshot
from lmo.decide.vocabulary import AnalysisResult
from lmo.errors import UserError
from lmo.local.routing import parse_assignments, Router
from lmo.local.versions import resolve_checkpoint
from lmo.rollout import decide, desired_key, VersionObservation
from lmo.settings import OperatorSettings
from tests.local.conftest import serving_app

ROOT = Path(__file__).resolve().parents[2]


def lmo(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """`lmo ARGV...` in this process: exit code, stdout, stderr (sys.argv restored after)."""
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def picks(router: Router, n: int, header: str | None = None) -> Counter:
    return Counter(router.choose(header).version for _ in range(n))


def test_weights_split_exactly_every_hundred_requests():
    router = Router({"v1": 90, "v2": 10})
    assert picks(router, 100) == Counter({"v1": 90, "v2": 10})
    router.set_weights({"v1": 33, "v2": 33, "v3": 34})
    router.available = {"v1", "v2", "v3"}
    assert picks(router, 300) == Counter({"v1": 99, "v2": 99, "v3": 102})
    # smooth: the 10% version is spread out, not sent as one burst
    router = Router({"v1": 90, "v2": 10})
    seq = [router.choose().version for _ in range(20)]
    assert seq.count("v2") == 2 and seq.index("v2") < 10


def test_a_version_that_is_not_ready_gets_nothing():
    router = Router({"v1": 50, "v2": 50}, available={"v1"})
    assert picks(router, 50) == Counter({"v1": 50})
    router.available = set()
    with pytest.raises(LookupError):
        router.choose()


def test_a_version_at_zero_never_stands_in_for_a_stable_that_is_down():
    """After a rollback v2 is ready at 0%; with v1 down the cluster's HTTPRoute sends v2
    nothing (the gateway answers 503), and so does the router. A header still reaches it."""
    router = Router({"v1": 100, "v2": 0}, available={"v2"}, header="x-lmo-version")
    with pytest.raises(LookupError, match=r"no version with traffic is ready .*v1=100,v2=0"):
        router.choose()
    with pytest.raises(LookupError, match="ready: v2"):
        router.choose("v9")
    assert router.choose("v2").version == "v2"
    router.available = {"v1", "v2"}
    assert picks(router, 10) == Counter({"v1": 10})


async def test_front_door_answers_503_rather_than_route_to_a_version_at_zero():
    import aiohttp

    from lmo.local.controller import Controller
    from lmo.local.frontdoor import FrontDoor

    lm = parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                   "metadata": {"name": "sentiment"},
                   "spec": {"task": "text-classification", "versions": [
                       {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
                       {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 0}]}})
    door = FrontDoor(Controller(lm, backends={}))
    port = await door.start()
    door.controller.router.available = {"v2"}  # v1 down, the rolled-back v2 ready
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{port}/v2/models/text_classification/infer",
                              json={"inputs": []}) as r:
                assert r.status == 503
                assert "no version with traffic is ready" in (await r.json())["error"]
    finally:
        await door.stop()


def test_header_is_exact_and_unknown_values_fall_through():
    router = Router({"v1": 100, "v2": 0}, header="x-lmo-version")
    assert picks(router, 10, "v2") == Counter({"v2": 10})
    assert picks(router, 10, "V2") == Counter({"v1": 10})
    assert picks(router, 10, "v9") == Counter({"v1": 10})
    assert router.choose("v2").by_header


def test_mirror_copies_the_given_share_of_other_versions_requests():
    router = Router({"v1": 80, "v2": 20})
    router.set_mirror("v2", 25)
    choices = [router.choose() for _ in range(1000)]
    to_v1 = sum(c.version == "v1" for c in choices)
    assert sum(c.mirror == "v2" for c in choices) == to_v1 * 25 // 100
    assert all(c.mirror is None for c in choices if c.version == "v2")


def test_parse_assignments_names_each_mistake():
    assert parse_assignments(["v1=90", "v2=10"], ["v1", "v2", "v3"]) == {
        "v1": 90, "v2": 10, "v3": 0}
    for bad, words in ((["v1"], "VERSION=PERCENT"), (["v1=x"], "VERSION=PERCENT"),
                       (["v1=50", "v1=50"], "given twice"), (["v1=90"], "sum to 100"),
                       (["v4=100"], "unknown version")):
        with pytest.raises(UserError, match=words):
            parse_assignments(bad, ["v1", "v2", "v3"])


def test_traffic_patch_replaces_the_list_and_takes_over_a_rollout():
    obj = {"metadata": {"name": "chat", "resourceVersion": "42"},
           "spec": {"versions": [{"name": "v1", "checkpoint": {"uri": "s3://a/"}, "traffic": 90},
                                 {"name": "v2", "checkpoint": {"uri": "s3://b/"}, "traffic": 10}],
                    "rollout": {"strategy": "Canary"}}}
    patch = traffic_patch(obj, {"v1": 0, "v2": 100})
    assert patch["metadata"] == {"resourceVersion": "42"}
    assert [v["traffic"] for v in patch["spec"]["versions"]] == [0, 100]
    assert patch["spec"]["versions"][1]["checkpoint"] == {"uri": "s3://b/"}
    assert patch["spec"]["rollout"] == {"strategy": "Manual"}
    assert obj["spec"]["versions"][0]["traffic"] == 90  # the object read is not modified
    with pytest.raises(UserError):
        traffic_patch(obj, {"v1": 50, "v2": 40})
    assert rollback_version(["v1", "v2"], {"rollout": {"stable": "v2"}}) == "v2"
    assert rollback_version(["v1", "v2"], {}) == "v1"


def test_rollback_after_a_succeeded_rollout_goes_to_the_version_it_replaced():
    done = {"phase": "Succeeded", "stable": "v2", "candidate": "",
            "message": "v2 serves all traffic (previous: v1)"}
    assert rollback_version(["v1", "v2"], {"rollout": done}) == "v1"
    assert rollback_version(["v1", "v2"], {"rollout": {**done, "phase": "RolledBack"}}) == "v2"
    with pytest.raises(UserError, match=r"does not record.*lmo promote VERSION"):
        rollback_version(["v1", "v2"], {"rollout": {**done, "message": ""}})
    with pytest.raises(UserError, match=r"v1, is no longer in spec.versions.*lmo promote"):
        rollback_version(["v2", "v3"], {"rollout": done})
    # status.rollout.previous, as the state machine records it now, wins over the message
    recorded = {**done, "previous": "v0", "message": "v2 serves all traffic"}
    assert rollback_version(["v0", "v1", "v2"], {"rollout": recorded}) == "v0"



@pytest.mark.parametrize(
    "routing,settings,base",
    [
        ({"hostnames": ["*.example.com", "chat.example.com"]}, {}, "http://chat.example.com/ml/chat"),
        ({}, {"gateway_address": "gw.example.com:8080"}, "http://gw.example.com:8080/ml/chat"),
        ({}, {"gateway_name": "edge", "gateway_namespace": "infra"}, "http://edge.infra/ml/chat"),
        ({"parentRef": {"name": "gw"}}, {}, "http://gw.ml/ml/chat"),
        ({"provider": "Service"}, {}, "http://chat.ml.svc:8000"),
    ],
)
def test_infer_builds_its_urls_on_every_form_of_status_endpoint(routing, settings, base):
    """status.endpoint as the operator writes it (GatewayAPI: the model's prefix on the
    gateway; Service: the server's) is the URL /v1/... and /v2/... are appended to."""
    lm = parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                   "metadata": {"name": "chat", "namespace": "ml"},
                   "spec": {"task": "text-generation", "routing": routing,
                            "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}}]}})
    status_endpoint = endpoint(lm, OperatorSettings(**settings))
    assert base_url(status_endpoint) == base
    assert base_url(status_endpoint + "/") == base


def test_base_url_keeps_a_bare_server_url_and_a_path_prefix():
    assert base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert base_url("http://h/v2") == "http://h"
    assert base_url("http://h/v2/models/fill_mask/infer") == "http://h"
    assert base_url("https://h/ml/v2/models/fill_mask") == "https://h/ml"
    assert base_url("https://h/ml") == "https://h/ml"
    assert base_url("https://h/ml/chat/v1") == "https://h/ml/chat"  # an OpenAI base URL


METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="text_classification",version="1"} 40
nv_inference_request_success{model="tokenizer",version="1"} 999
# HELP nv_inference_request_failure Number of failed inference requests
# TYPE nv_inference_request_failure counter
nv_inference_request_failure{model="text_classification",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="text_classification",reason="OTHER",version="1"} 0
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="text_classification",version="1"} 210000
# TYPE nv_inference_queue_duration_us counter
nv_inference_queue_duration_us{model="text_classification",version="1"} 4200
"""


def test_triton_metrics_give_step_numbers_for_the_entry_model():
    snap = parse(METRICS, "text_classification")
    assert snap == Snapshot(success=40, failure=2, duration_us=210000, queue_us=4200)
    step = snap - Snapshot(success=10, failure=0, duration_us=60000, queue_us=1200)
    assert step.requests == 32
    assert step.error_ratio == pytest.approx(2 / 32)
    assert step.latency_mean_ms == pytest.approx(150000 / 32 / 1000)
    assert Snapshot().latency_mean_ms is None


def test_relative_file_uris_resolve_against_the_yaml_folder(tmp_path):
    (tmp_path / "ckpt").mkdir()
    assert resolve_checkpoint("file://ckpt", tmp_path) == f"file://{tmp_path / 'ckpt'}"
    assert resolve_checkpoint("s3://b/p/", tmp_path) == "s3://b/p/"
    with pytest.raises(UserError, match="make_checkpoints.py"):
        resolve_checkpoint("file://missing", tmp_path)


def test_every_example_parses_and_its_checkpoints_are_made_by_the_maker():
    from examples.make_checkpoints import MAKERS

    files = sorted((ROOT / "examples").glob("*.yaml"))
    assert {f.name for f in files} >= {"minilm.yaml", "gpt2.yaml", "canary.yaml",
                                       "ab-test.yaml", "tiny-bert.yaml"}
    for f in files:
        for lm in load_file(f):
            for v in lm.spec.versions:
                m = re.fullmatch(r"file://checkpoints/([\w.-]+)", v.checkpoint.uri)
                assert m and m.group(1) in MAKERS, (f.name, v.checkpoint.uri)


def test_docs_api_md_is_generated_from_the_api():
    out = subprocess.run([sys.executable, "-m", "lmo.apidoc"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    assert (ROOT / "docs" / "api.md").read_text() == out, (
        "docs/api.md is stale: run `python -m lmo.apidoc > docs/api.md`")
    for field in ("accuracyGate", "stepDuration", "abTest", "maxOutputDrift"):
        assert f"`{field}`" in out


def test_cluster_examples_parse_and_render_without_local_paths():
    files = sorted((ROOT / "examples" / "cluster").glob("*.yaml"))
    assert files
    for f in files:
        assert "file://" not in f.read_text(), f.name
        assert load_file(f)
        out = subprocess.run([sys.executable, "-m", "lmo.cli", "render", "-f", str(f)],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "kind: Deployment" in out.stdout and "kind: HTTPRoute" in out.stdout


class SlowServer:
    """Stands in for TritonServer in Fleet.start: v1 takes seconds to get ready (or is
    ready at once), v2 is interrupted (Ctrl-C) once v1's process runs."""

    instances: dict[str, SlowServer] = {}
    ready_at_once = False

    def __init__(self, repository, models=None, log_path=None, env=None, extra_args=None):
        self.name = Path(repository).name
        self.process = None
        self.stops = 0
        self.spawned = threading.Event()
        self.returned = threading.Event()
        SlowServer.instances[self.name] = self

    def start(self):
        from lmo_runtime.triton.server import TritonError

        if self.name == "v2":
            v1 = SlowServer.instances["v1"]
            v1.spawned.wait(5)
            if self.ready_at_once:
                v1.returned.wait(5)
            raise KeyboardInterrupt
        self.process = "running"
        self.spawned.set()
        deadline = time.monotonic() + (0 if self.ready_at_once else 5)
        while self.process is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.returned.set()
        if self.process is None:
            raise TritonError("exited before it was ready")
        return self

    def stop(self):
        self.process = None
        self.stops += 1


@pytest.mark.parametrize("ready_at_once", [False, True])
def test_ctrl_c_while_servers_start_stops_every_server(tmp_path, monkeypatch, ready_at_once):
    """`lmo up` interrupted while its Triton servers start leaves none running (they run in
    their own sessions, so nothing else would stop them), whether a server was still
    starting or already ready."""
    import lmo_runtime.triton.server as triton_server
    from lmo.local.up import Fleet

    SlowServer.instances = {}
    monkeypatch.setattr(SlowServer, "ready_at_once", ready_at_once)
    monkeypatch.setattr(triton_server, "TritonServer", SlowServer)
    fleet = Fleet("chat", tmp_path, tmp_path, flavour=None, progress=False, cache_dir=tmp_path)
    artifacts = {n: SimpleNamespace(repository=tmp_path / n, manifest=SimpleNamespace(key=n))
                 for n in ("v1", "v2")}
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        fleet.start(artifacts)
    v1 = SlowServer.instances["v1"]
    assert v1.process is None and v1.stops >= 1
    assert v1.returned.is_set()  # its start() had returned before start() gave up
    assert time.monotonic() - t0 < 4  # stopped, not waited for until ready
    fleet.stop()


def test_set_traffic_and_rollback_errors_name_the_command_once(monkeypatch, capsys):
    status = {"name": "chat", "versions": [{"name": "v1"}, {"name": "v2"}],
              "rollout": {"phase": "Succeeded", "stable": "v2", "message": "v2 serves all"}}
    monkeypatch.setattr(traffic_command, "local_get", lambda url, path: status)
    url = ["--url", "http://127.0.0.1:9"]
    rc, _, err = lmo(monkeypatch, capsys, "set-traffic", "chat")
    assert rc == 2 and err == "lmo set-traffic: error: give the weights, e.g. v1=90 v2=10\n"
    for weights, words in ((["v1=x"], "expected VERSION=PERCENT such as v1=90, got 'v1=x'"),
                           (["v1=50", "v1=50"], "version 'v1' given twice")):
        rc, _, err = lmo(monkeypatch, capsys, "set-traffic", *weights, *url)
        assert rc == 2 and err == f"lmo set-traffic: error: {words}\n"
    rc, _, err = lmo(monkeypatch, capsys, "rollback", *url)
    assert rc == 2 and err.startswith("lmo rollback: error: the rollout to v2 succeeded")


def test_status_prints_brackets_in_messages_as_text(monkeypatch, capsys):
    """Rich reads `[...]` as markup: a message must print as it is, tags and all."""
    status = {
        "name": "fill", "task": "fill-mask", "endpoint": "http://127.0.0.1:8080",
        "conditions": [{"type": "Ready", "status": "False"}],
        "versions": [{"name": "v1", "phase": "Failed", "traffic": 100,
                      "message": "cannot tokenize [mask] in [bold]input[/bold]"}],
        "rollout": {"phase": "RolledBack", "step": 0, "candidate": "v2", "stable": "v1",
                    "message": "rolled back to v1: drift [red]0.31[/red]",
                    "lastAnalysis": {"verdict": "fail", "step": 0, "time": "t",
                                     "reasons": ["golden output [v2] differs"]}},
        "local": {"events": [{"time": "t", "type": "Warning", "reason": "InvalidSpec",
                              "message": "chat.yaml not applied: [/tmp/x] is not a URI"}]},
    }
    monkeypatch.setattr(status_command, "local_get", lambda url, path: status)
    monkeypatch.setenv("COLUMNS", "300")
    rc, out, err = lmo(monkeypatch, capsys, "status", "--url", "http://127.0.0.1:9")
    assert rc == 0, err
    for text in ("cannot tokenize [mask] in [bold]input[/bold]", "drift [red]0.31[/red]",
                 "- golden output [v2] differs", "not applied: [/tmp/x] is not a URI"):
        assert text in out, (text, out)


def test_conversion_progress_prints_brackets_in_paths_as_text():
    import io

    from rich.console import Console

    from lmo_runtime.progress import Steps

    out = io.StringIO()
    steps = Steps(console=Console(file=out, width=300, color_system=None))
    with steps.step("fetch", "file:///data/[bold]ckpt[/bold]"):
        pass
    steps.note("cache hit: /cache/[/tmp]")
    assert "fetch file:///data/[bold]ckpt[/bold]" in out.getvalue()
    assert "cache hit: /cache/[/tmp]" in out.getvalue()


def test_status_numbers_rollout_steps_from_one_like_the_rollout_messages(
        monkeypatch, capsys, tmp_path):
    spec = {"task": "text-classification",
            "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
                         {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 0}],
            "rollout": {"strategy": "Canary", "steps": [10, 50, 100],
                        "analysis": {"prometheusUrl": "http://prometheus:9090"}}}
    s = LanguageModelSpec.model_validate(spec)
    seen = [VersionObservation(v.name, True, desired_key(s, v.name)) for v in s.versions]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    d = decide(s, None, seen, t0)
    d = decide(s, d.rollout, seen, t0 + timedelta(minutes=10),
               AnalysisResult("pass", {"requests": 120.0}, ["ok"]))
    assert d.rollout.step == 1  # the stored field: the 0-based index into steps
    obj = {"metadata": {"name": "chat"}, "spec": spec, "status": {"rollout": d.rollout.to_dict()}}
    monkeypatch.setattr(status_command, "get_lm", lambda target: obj)
    monkeypatch.setenv("COLUMNS", "300")
    rc, out, err = lmo(monkeypatch, capsys, "status", "chat", "--work-dir", str(tmp_path))
    assert rc == 0, err
    assert "Progressing  step 2/3  candidate v2" in out and "step 2/3: v2 at 50%" in out
    assert "last analysis: pass (step 1/3," in out  # it judged the first step

    # lmo up: the spec's steps come with /lmo/status
    from lmo.local.controller import Controller

    controller = Controller(parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                                      "metadata": {"name": "chat"}, "spec": spec}), backends={})
    controller.decide(t0)  # v2 has no server: Waiting at the first step
    monkeypatch.setattr(status_command, "local_get", lambda url, path: controller.status())
    rc, out, err = lmo(monkeypatch, capsys, "status", "--url", "http://127.0.0.1:9")
    assert rc == 0, err
    assert "Waiting  step 1/3  candidate v2" in out


def test_up_banner_names_the_lmo_to_run_next(tmp_path, monkeypatch):
    from lmo.local.up import banner

    bin_dir = tmp_path / "my venv" / "bin"
    bin_dir.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    # no lmo next to this Python (run as `python -m lmo.cli`): this Python, quoted
    text = banner("http://127.0.0.1:8080", "fill-mask")
    assert f"  '{bin_dir / 'python'}' -m lmo.cli status --local" in text
    (bin_dir / "lmo").write_text("#!/bin/sh\n")
    text = banner("http://127.0.0.1:8080", "fill-mask")
    assert f"  '{bin_dir / 'lmo'}' status --local    |    Ctrl-C to stop" in text
    assert "  OpenAI-compatible (base_url): http://127.0.0.1:8080/v1\n" in text


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, monkeypatch, capsys):
    path = tmp_path / "chat.yaml"
    path.write_text("apiVersion: lmo.dev/v1alpha1\nkind: LanguageModel\nmetadata:\n"
                    "  name: chat\n spec: [\n")
    with pytest.raises(SpecError) as err:
        load_file(path)
    assert f'in "{path}", line 5, column 2' in str(err.value)
    assert "<unicode string>" not in str(err.value)
    rc, _, out = lmo(monkeypatch, capsys, "render", "-f", str(path))
    assert rc == 2 and out.startswith(f"lmo render: error: {path}: not valid YAML")
    assert f'in "{path}", line 5, column 2' in out
    rc, _, out = lmo(monkeypatch, capsys, "render", "-f", str(tmp_path / "missing.yaml"))
    assert rc == 2 and "missing.yaml: cannot read the file" in out and "Traceback" not in out


def test_local_status_has_the_cluster_status_shape_with_conditions(tmp_path):
    """`lmo status --local -o json` reads the same shape (and conditions) as a cluster's
    status: the controller computes it with the operator's `stages.status_from`."""
    from lmo.api import LanguageModelStatus
    from lmo.local.controller import Backend, Controller

    lm = parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "chat"},
                   "spec": {"task": "text-classification", "versions": [
                       {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 90},
                       {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 10}]}})
    manifest = SimpleNamespace(summary=lambda uri: {"uri": uri, "key": "k1", "precision": "fp32"})
    artifact = SimpleNamespace(directory=tmp_path / "v1", spec_key="k1", manifest=manifest)
    v1 = Backend("v1", "http://127.0.0.1:1", "127.0.0.1:2", "http://127.0.0.1:3/metrics", artifact)
    controller = Controller(lm, backends={"v1": v1})
    controller.converting = {"v2"}
    controller.set_ready("v1", True)
    controller.decide(datetime(2026, 1, 1, tzinfo=timezone.utc))
    status = controller.status()
    local = {k: status.pop(k) for k in ("name", "task", "local")}
    LanguageModelStatus.model_validate(status)  # nothing but the API's own fields
    conds = {c["type"]: c for c in status["conditions"]}
    assert list(conds) == ["Converted", "Deployed", "Routed", "Ready"]
    assert (conds["Converted"]["status"], conds["Converted"]["reason"]) == ("False", "Converting")
    assert conds["Converted"]["message"] == "converting v2"
    assert conds["Ready"]["status"] == "False"
    assert status["trafficSummary"] == "v1=100,v2=0"  # v2 has no server yet: all of it to v1
    v1s, v2s = status["versions"]
    assert (v1s["phase"], v1s["readyReplicas"], v1s["artifact"]["key"]) == ("Ready", 1, "k1")
    assert (v2s["phase"], v2s["message"]) == ("Converting", "converting the new checkpoint")
    assert local["name"] == "chat" and "v1" in local["local"]["backends"]


def test_one_rule_for_the_traffic_sum_and_for_handing_traffic_back_to_a_person():
    from lmo.api import traffic_sum_problem
    from lmo.local.routing import check_weights
    from lmo.rollout import hands_over

    assert traffic_sum_problem({"v1": 90, "v2": 10}) is None
    assert traffic_sum_problem({"v1": 90, "v2": 20}) == "it sums to 110"
    with pytest.raises(SpecError, match="it sums to 110"):
        parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "x"},
                  "spec": {"task": "fill-mask", "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://m/1/"}, "traffic": 90},
            {"name": "v2", "checkpoint": {"uri": "s3://m/2/"}, "traffic": 20}]}})
    with pytest.raises(UserError, match="it sums to 110"):
        check_weights({"v1": 90, "v2": 20}, ["v1", "v2"])
    assert [hands_over(s) for s in (None, "Manual", "Canary", "BlueGreen")] == [False, False, True, True]


async def test_front_door_answers_malformed_bodies_with_400_saying_what_is_wrong():
    import aiohttp
    from aiohttp import web

    from lmo.local.controller import Backend, Controller
    from lmo.local.frontdoor import FrontDoor, infer_body_problem

    async def refuse(request):  # what Triton answers a malformed body: a bare 500
        return web.json_response({"error": "failed to parse the request JSON buffer"}, status=500)

    triton = web.Application()
    triton.router.add_post("/{tail:.*}", refuse)
    artifact = SimpleNamespace(directory=Path("/nonexistent"), repository=Path("/nonexistent"),
                               spec_key="k",
                               manifest=SimpleNamespace(summary=lambda uri: {"uri": uri}))

    def door_for(task: str, port: int) -> FrontDoor:
        controller = Controller(parse_lm({
            "apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "m"},
            "spec": {"task": task, "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}}]}}),
            backends={"v1": Backend("v1", f"http://127.0.0.1:{port}", "", "", artifact)})
        controller.set_ready("v1", True)
        return FrontDoor(controller)

    cases = [
        ("text-classification", "/v2/models/text_classification/infer", b"{not json", "body is not JSON"),
        ("text-classification", "/v2/models/text_classification/infer", b"[1, 2]", '"inputs" list'),
        ("text-classification", "/v2/models/text_classification/infer",
         b'{"inputs": [{"name": "TEXT", "data": ["x"]}]}', "inputs[0] lacks shape, datatype"),
        ("text-classification", "/v2/models/text_classification/infer",
         b'{"inputs": [{"name": "TEXT", "shape": [1, -1], "datatype": "BYTES", "data": ["x"]}]}',
         "non-negative integers"),
        ("text-generation", "/v1/text-generation", b'{"text": "hi", "max_tokens": "lots"}',
         'field "max_tokens" must be an integer, got "lots"'),
        ("text-generation", "/v1/text-generation", b'{"text": "hi", "temperature": true}',
         'field "temperature" must be a number'),
        ("text-generation", "/v2/models/text_generation/generate", b"garbage", "body is not JSON"),
    ]
    async with serving_app(triton) as triton_port:
        for task, path, body, words in cases:
            door = door_for(task, triton_port)
            port = await door.start()
            try:
                async with aiohttp.ClientSession() as s:
                    async with s.post(f"http://127.0.0.1:{port}{path}", data=body,
                                      headers={"Content-Type": "application/json"}) as r:
                        assert r.status == 400, (path, body, r.status)
                        assert words in (await r.json())["error"], (path, body)
            finally:
                await door.stop()
    # well formed, binary tensors (only the JSON header is read) and compressed bodies pass
    good = b'{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]}'
    assert infer_body_problem(good, {}) is None
    head = b'{"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 5}}]}'
    assert infer_body_problem(head + b"\x01\x00\x00\x00x", {"Inference-Header-Content-Length": str(len(head))}) is None
    assert infer_body_problem(b"\x1f\x8b...", {"Content-Encoding": "gzip"}) is None


async def test_front_door_answers_504_past_protection_timeout():
    import aiohttp
    from aiohttp import web

    from lmo.local.controller import Backend, Controller
    from lmo.local.frontdoor import FrontDoor

    async def slow(request):  # a Triton that takes 2 s to answer
        await asyncio.sleep(2)
        return web.json_response({"outputs": []})

    app = web.Application()
    app.router.add_post("/v2/models/{m}/infer", slow)
    lm = parse_lm({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "m"},
                   "spec": {"task": "text-classification", "protection": {"timeout": "300ms"},
                            "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}}]}})
    artifact = SimpleNamespace(directory=Path("/nonexistent"), repository=Path("/nonexistent"),
                               spec_key="k",
                               manifest=SimpleNamespace(summary=lambda uri: {"uri": uri}))
    async with serving_app(app) as port:
        backend = Backend("v1", f"http://127.0.0.1:{port}", "", "", artifact)
        controller = Controller(lm, backends={"v1": backend})
        controller.set_ready("v1", True)
        door = FrontDoor(controller)
        door_port = await door.start()
        try:
            async with aiohttp.ClientSession() as s:
                good = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]}
                async with s.post(f"http://127.0.0.1:{door_port}/v2/models/text_classification/infer",
                                  json=good) as r:
                    assert r.status == 504
                    assert "within 300ms (spec.protection.timeout)" in (await r.json())["error"]
                    assert r.headers["x-lmo-version"] == "v1"
        finally:
            await door.stop()
