"""`lmo status` and the traffic commands against an API server (the KMock emulator).

The commands use the official kubernetes client with a kubeconfig, as a user would; they
are synchronous, so they run in a thread beside the emulator's event loop.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from aiohttp import web

from lmo.api import LanguageModelSpec, parse
from lmo.builders import endpoint
from lmo.cli import main
from lmo.decide.vocabulary import AnalysisResult
from lmo.rollout import decide, desired_key, VersionObservation
from lmo.settings import OperatorSettings
from tests.fixtures.kmock_fixture import LM_RESOURCE, start_cluster
from tests.local.conftest import serving_app

SPEC = {
    "task": "text-classification",
    "versions": [
        {"name": "v1", "checkpoint": {"uri": "s3://models/sentiment/v1/"}, "traffic": 100},
        {"name": "v2", "checkpoint": {"uri": "s3://models/sentiment/v2/"}, "traffic": 0},
    ],
    "rollout": {"strategy": "Canary", "steps": [10, 50, 100],
                "analysis": {"prometheusUrl": "http://prometheus.monitoring:9090"}},
}
STATUS = {
    "endpoint": "http://gateway.example/models/sentiment",
    "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    "versions": [
        {"name": "v1", "phase": "Ready", "traffic": 90, "replicas": 2, "readyReplicas": 2,
         "artifact": {"uri": "s3://store/abc/", "precision": "int8", "score": 0.995,
                      "sizeBytes": 23000000}},
        {"name": "v2", "phase": "Ready", "traffic": 10, "replicas": 1, "readyReplicas": 1},
    ],
    "rollout": {"phase": "Progressing", "step": 0, "candidate": "v2", "stable": "v1",
                "lastAnalysis": {"verdict": "pass", "step": 0, "time": "2026-01-01T00:02:00Z",
                                 "measurements": {"error_ratio": 0.0, "requests": 120},
                                 "reasons": ["error ratio 0.0000 (0/120) <= maxErrorRate"]}},
}


async def lmo(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = await asyncio.to_thread(main, list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    def write(url: str) -> None:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "me", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "test", "context": {"cluster": "kmock", "user": "me",
                                                       "namespace": "models"}}],
        }))
        monkeypatch.setenv("KUBECONFIG", str(path))
    return write


async def test_status_and_traffic_commands_on_a_cluster(kubeconfig, capsys, tmp_path):
    async with await start_cluster(operator=False) as (cluster, _):
        kubeconfig(str(cluster.kmock.url))
        await cluster.apply_lm("sentiment", SPEC, namespace="models")
        await cluster.request(
            "PATCH", "/apis/lmo.dev/v1alpha1/namespaces/models/languagemodels/sentiment/status",
            {"status": STATUS}, ctype="application/merge-patch+json")
        work = ["--work-dir", str(tmp_path)]  # no local lmo up there

        rc, out, err = await lmo(capsys, "status", "sentiment", *work)
        assert rc == 0, err
        for text in ("sentiment", "namespace models", "Ready=True", "90%", "10%", "2/2", "int8",
                     "0.9950", "Progressing", "candidate v2", "last analysis: pass",
                     "OpenAI base URL: http://gateway.example/models/sentiment/v1"):
            assert text in out, (text, out)
        # the spec's Prometheus is cluster-internal, unreachable here: dashes and why, no zeros
        assert "v1  last 1m: - req/s  errors -  p99 -" in out
        assert "(last minute: Prometheus at http://prometheus.monitoring:9090 did not answer" in out

        rc, out, _ = await lmo(capsys, "set-traffic", "sentiment", "v1=80", "v2=20", *work)
        assert rc == 0 and "rollout strategy set to Manual" in out
        obj = cluster.get(LM_RESOURCE, "models", "sentiment")
        assert [v["traffic"] for v in obj["spec"]["versions"]] == [80, 20]
        assert obj["spec"]["versions"][1]["checkpoint"]["uri"] == "s3://models/sentiment/v2/"
        assert obj["spec"]["rollout"]["strategy"] == "Manual"
        assert obj["spec"]["rollout"]["steps"] == [10, 50, 100]  # the rest is untouched

        rc, _, _ = await lmo(capsys, "promote", "v2", "sentiment", *work)
        obj = cluster.get(LM_RESOURCE, "models", "sentiment")
        assert [v["traffic"] for v in obj["spec"]["versions"]] == [0, 100]
        rc, _, _ = await lmo(capsys, "rollback", "sentiment", *work)  # to status.rollout.stable
        obj = cluster.get(LM_RESOURCE, "models", "sentiment")
        assert [v["traffic"] for v in obj["spec"]["versions"]] == [100, 0]

        rc, _, err = await lmo(capsys, "status", "nothing-here", *work)
        assert rc == 2 and "languagemodel models/nothing-here not found" in err
        rc, _, err = await lmo(capsys, "promote", "v7", "sentiment", *work)
        assert rc == 2 and "'v7' is not one of v1, v2" in err


async def test_cluster_commands_name_a_bad_context_or_a_missing_kubeconfig(
        kubeconfig, capsys, tmp_path, monkeypatch):
    work = ["--work-dir", str(tmp_path)]
    kubeconfig("http://127.0.0.1:9")
    rc, _, err = await lmo(capsys, "status", "sentiment", "--context", "prod", *work)
    assert rc == 2 and "kubeconfig" in err and "prod" in err and "--context" in err, err
    assert "Traceback" not in err

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    rc, _, err = await lmo(capsys, "status", "sentiment", *work)
    assert rc == 2 and "no Kubernetes cluster configured" in err, err


def succeeded_rollout(spec: dict) -> dict:
    """status.rollout after the canary of v2 passed every step, as lmo.rollout writes it."""
    s = LanguageModelSpec.model_validate(spec)
    seen = [VersionObservation(v.name, True, desired_key(s, v.name)) for v in s.versions]
    passed = AnalysisResult("pass", {"error_ratio": 0.0, "requests": 120.0}, ["ok"])
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    d = decide(s, None, seen, t0)
    for i in range(1, len(s.rollout.steps) + 1):
        d = decide(s, d.rollout, seen, t0 + timedelta(minutes=10 * i), passed)
    assert d.rollout.phase == "Succeeded" and d.rollout.stable == "v2"
    return d.rollout.to_dict()


async def test_rollback_after_a_succeeded_canary_goes_back_to_the_replaced_version(
        kubeconfig, capsys, tmp_path):
    async with await start_cluster(operator=False) as (cluster, _):
        kubeconfig(str(cluster.kmock.url))
        await cluster.apply_lm("sentiment", SPEC, namespace="models")
        status_path = "/apis/lmo.dev/v1alpha1/namespaces/models/languagemodels/sentiment/status"
        rollout = succeeded_rollout(SPEC)
        await cluster.request("PATCH", status_path, {"status": {**STATUS, "rollout": rollout}},
                              ctype="application/merge-patch+json")
        work = ["--work-dir", str(tmp_path)]

        # v2 was promoted to stable; rolling back means v1, the version it replaced
        rc, out, err = await lmo(capsys, "rollback", "sentiment", *work)
        assert rc == 0, err
        assert "v1=100,v2=0" in out and "rollout strategy set to Manual" in out
        obj = cluster.get(LM_RESOURCE, "models", "sentiment")
        assert [v["traffic"] for v in obj["spec"]["versions"]] == [100, 0]
        assert obj["spec"]["rollout"]["strategy"] == "Manual"

        # a Succeeded status that does not name the replaced version: refuse, say what to do
        await cluster.apply_lm("sentiment", SPEC, namespace="models")
        assert rollout["previous"] == "v1"
        unknown = {**rollout, "previous": None, "message": "v2 serves all traffic"}  # null: removed
        await cluster.request("PATCH", status_path, {"status": {"rollout": unknown}},
                              ctype="application/merge-patch+json")
        before = cluster.get(LM_RESOURCE, "models", "sentiment")["spec"]
        rc, _, err = await lmo(capsys, "rollback", "sentiment", *work)
        assert rc == 2 and "succeeded" in err and "lmo promote VERSION" in err, err
        assert "v1, v2" in err
        assert cluster.get(LM_RESOURCE, "models", "sentiment")["spec"] == before


async def test_infer_on_a_cluster_posts_to_the_model_under_status_endpoint(
        kubeconfig, capsys, tmp_path):
    """status.endpoint is the model's base URL on the gateway (`/<namespace>/<name>`, which
    the route strips); infer posts the text API under it."""
    paths: list[str] = []

    async def kserve(request: web.Request) -> web.Response:
        paths.append(request.path)
        body = await request.json()
        assert body == {"text": ["great film"]}
        ranked = [{"label": "POSITIVE", "score": 0.99}, {"label": "NEGATIVE", "score": 0.01}]
        return web.json_response({"version": "v2", "results": [{**ranked[0], "labels": ranked}]},
                                 headers={"x-lmo-version": "v2"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", kserve)
    lm = parse({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                "metadata": {"name": "sentiment", "namespace": "models"}, "spec": SPEC})
    async with serving_app(app) as port:
        url = endpoint(lm, OperatorSettings(gateway_address=f"127.0.0.1:{port}"))
        assert url.endswith("/models/sentiment")
        async with await start_cluster(operator=False) as (cluster, _):
            kubeconfig(str(cluster.kmock.url))
            await cluster.apply_lm("sentiment", SPEC, namespace="models")
            await cluster.request(
                "PATCH",
                "/apis/lmo.dev/v1alpha1/namespaces/models/languagemodels/sentiment/status",
                {"status": {**STATUS, "endpoint": url}}, ctype="application/merge-patch+json")
            rc, out, err = await lmo(capsys, "infer", "great film", "--name", "sentiment",
                                     "--work-dir", str(tmp_path))
            assert rc == 0, err
            assert paths == ["/models/sentiment/v1/text-classification"]
            assert "[v2]" in out and "POSITIVE (score 0.9900); then NEGATIVE 0.0100" in out
