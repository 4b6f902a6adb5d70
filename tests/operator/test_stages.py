"""The pure stages of a reconcile pass (`lmo.stages`), each on its own: plain dicts in, values out."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

from lmo import stages as S
from lmo.api import parse
from lmo.builders import build_children, Owner
from lmo.builders.conversion import job_name
from lmo.conditions import Reason
from lmo.decide.vocabulary import FAIL, AnalysisResult
from lmo.labels import ARTIFACT_KEY
from lmo.settings import OperatorSettings

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = OperatorSettings()
STORE = SETTINGS.artifact_store
OWNER = Owner("chat", "ml", "uid-1")


def lm(**over):
    spec = {
        "task": "fill-mask",
        "versions": [
            {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 70},
            {"name": "b", "checkpoint": {"uri": "s3://m/b/", "secretRef": {"name": "creds"}}, "traffic": 30},
        ],
    }
    spec.update(over)
    return parse({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                  "metadata": {"name": "chat", "namespace": "ml"}, "spec": spec})


def key(model, version: str) -> str:
    return S.observe(model, STORE, None, {}, {"creds": True}, {}, {}).version(version).key


def job(model, version: str, state: str) -> tuple[tuple[str, str], dict]:
    name = job_name("chat", version, key(model, version))
    conds = {"running": [], "succeeded": [{"type": "Complete", "status": "True"}],
             "failed": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}[state]
    return ("Job", name), {"metadata": {"name": name}, "status": {"conditions": conds}}


def deployment(model, version: str, ready: int = 1, artifact: str | None = None) -> tuple[tuple[str, str], dict]:
    name = f"chat-{version}"
    template = {"metadata": {"annotations": {ARTIFACT_KEY: artifact or key(model, version)}}}
    return ("Deployment", name), {
        "metadata": {"name": name, "generation": 2},
        "spec": {"replicas": 1, "template": template},
        "status": {"observedGeneration": 2, "replicas": 1, "readyReplicas": ready, "updatedReplicas": 1},
    }


def accepted(model, version: str) -> str:
    return json.dumps({"accepted": True, "key": key(model, version), "precision": "fp32",
                       "sha256": "f" * 64, "sizeBytes": 10, "score": 1.0})


def test_observe_reads_conversion_outcomes_and_missing_secrets():
    model = lm()
    children = dict([job(model, "a", "succeeded")])
    messages = {job_name("chat", "a", key(model, "a")): [accepted(model, "a")]}
    obs = S.observe(model, STORE, None, children, {"creds": False}, messages, {})
    a, b = obs.versions
    assert a.available and not a.convert and a.artifact["key"] == a.key
    assert a.serve_uri == a.uri and a.artifact["uri"] == a.uri
    assert b.blocked and b.phase == "Failed" and b.failure_reason == Reason.SECRET_MISSING
    assert "spec.versions[1].checkpoint.secretRef.name" in b.message and b.serve_uri is None


def test_observe_refused_and_failed_conversions_name_the_key():
    model = lm()
    children = dict([job(model, "a", "failed"), job(model, "b", "running")])
    refusal = json.dumps({"accepted": False, "reason": "accuracyGate: 0.91 < 0.99"})
    messages = {job_name("chat", "a", key(model, "a")): [refusal]}
    a, b = S.observe(model, STORE, None, children, {"creds": True}, messages, {}).versions
    assert a.failure_reason == Reason.CONVERSION_REFUSED
    assert a.message == f"conversion {a.key[:8]} refused: accuracyGate: 0.91 < 0.99"
    assert a.convert  # the Job stays (its log), never a second attempt
    assert b.phase == "Converting" and b.convert and not b.available


def test_jobs_to_read_only_finished_jobs_of_unrecorded_artifacts():
    model = lm()
    children = dict([job(model, "a", "succeeded"), job(model, "b", "running")])
    assert S.jobs_to_read(model, STORE, children, {}) == [job_name("chat", "a", key(model, "a"))]
    recorded = {"versions": [{"name": "a", "artifact": {"key": key(model, "a")}}]}
    assert S.jobs_to_read(model, STORE, children, recorded) == []


def serving_observed(model, ready_b: int = 1):
    old = {"versions": [{"name": v, "artifact": {"key": key(model, v), "uri": f"{STORE}/{key(model, v)}/"}}
                        for v in ("a", "b")]}
    children = dict([deployment(model, "a"), deployment(model, "b", ready=ready_b)])
    return S.observe(model, STORE, None, children, {"creds": True}, {}, old), children


def test_step_measures_only_when_the_state_machine_asks():
    model = lm()
    obs, _ = serving_observed(model)
    calls = []

    async def measure(ro):
        calls.append(ro.candidate)
        return AnalysisResult(FAIL, {}, ["no"])

    decision = asyncio.run(S.step(model.spec, obs, T0, measure))
    assert decision.traffic == {"a": 70, "b": 30} and calls == []  # Manual: the spec's weights


def test_plan_routes_only_what_can_serve_and_normalises():
    model = lm()
    obs = S.observe(model, STORE, None, {}, {"creds": True}, {},
                    {"versions": [{"name": "a", "artifact": {"key": "old", "uri": "s3://x/old/"}}]})
    decision = asyncio.run(S.step(model.spec, obs, T0, None))
    plans, routed = S.plan(model, obs, decision)
    assert [(p.name, p.convert, p.serve_uri) for p in plans] == [
        ("a", True, "s3://x/old/"), ("b", True, None)]
    assert routed == {"a": 100}  # b has nothing to serve yet
    assert S.normalise({"a": 1, "b": 1, "c": 1}) == {"a": 34, "b": 33, "c": 33}


def test_plan_carries_what_the_served_artifact_needs_in_dev_shm():
    model = lm()
    old = {"versions": [{"name": "a", "artifact": {"key": "old", "uri": "s3://x/old/",
                                                   "sharedMemoryBytes": 3 << 30}}]}
    obs = S.observe(model, STORE, None, {}, {"creds": True}, {}, old)
    plans, _ = S.plan(model, obs, asyncio.run(S.step(model.spec, obs, T0, None)))
    assert [(p.name, p.serve_uri, p.shared_memory_bytes) for p in plans] == [
        ("a", "s3://x/old/", 3 << 30), ("b", None, None)]


def test_assess_and_status_from_ready_and_not_ready():
    model = lm()
    obs, children = serving_observed(model, ready_b=0)
    decision = asyncio.run(S.step(model.spec, obs, T0, None))
    plans, routed = S.plan(model, obs, decision)
    desired = build_children(model, OWNER, SETTINGS, plans)
    for obj in desired:  # the server holds what lmo wants (plus its own fields)
        if obj["kind"] == "Deployment":
            seen = children[("Deployment", obj["metadata"]["name"])]
            children[("Deployment", obj["metadata"]["name"])] = {**obj, "metadata": {**obj["metadata"], **seen["metadata"]},
                                                                 "status": seen["status"]}
    obs = S.assess(obs, "chat", desired, children)
    a, b = obs.versions
    assert (a.phase, b.phase) == ("Ready", "Deploying") and b.message == "0/1 Triton replicas ready"
    status = S.status_from(model, SETTINGS, obs, routed, decision, [], 3, T0)
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Deployed"]["status"] == "False" and conds["Deployed"]["message"] == "waiting for b (0 ready)"
    assert conds["Ready"]["status"] == "False" and status["readyVersions"] == "1/2"
    assert status["trafficSummary"] == "a=70,b=30" and status["observedGeneration"] == 3
    events = S.events_from(obs, status, decision)
    assert [(t, r) for t, r, _ in events] == [("Normal", "VersionReady")]
    # the same pass again, from the status it wrote: no Event repeats
    again = S.Observed(obs.versions, status)
    assert S.events_from(again, status, decision) == []


def test_status_from_reports_refused_children_on_their_condition():
    model = lm()
    obs, _ = serving_observed(model)
    decision = asyncio.run(S.step(model.spec, obs, T0, None))
    _, routed = S.plan(model, obs, decision)
    status = S.status_from(model, SETTINGS, obs, routed, decision,
                           [("HTTPRoute", "HTTPRoute chat: install the Gateway API CRDs")], 1, T0)
    routed_cond = next(c for c in status["conditions"] if c["type"] == "Routed")
    assert routed_cond["reason"] == Reason.APPLY_REFUSED and "Gateway API" in routed_cond["message"]
    assert [r for _, r, _ in S.events_from(obs, status, decision)][-1] == Reason.APPLY_REFUSED


def test_invalid_status_keeps_everything_but_ready():
    old = {"versions": [{"name": "a"}], "conditions": [], "endpoint": "http://x"}
    status = S.invalid_status(old, "spec.versions[].traffic must sum to 100", Reason.INVALID_SPEC, 4, T0)
    assert status["versions"] == old["versions"] and status["endpoint"] == "http://x"
    (ready,) = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert status["observedGeneration"] == 4
