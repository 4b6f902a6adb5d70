"""The rollout state machine inside the real Kopf operator, against the KMock emulator.

The operator reconciles LanguageModels with Canary rollouts end to end: conversion Jobs are
finished and Deployments reported ready by the test (as the cluster would), the operator
routes through the HTTPRoute, holds each step for its stepDuration (1-4 s here, wall clock)
and calls the analysis function — replaced by a scripted one, since there is no Prometheus
behind the emulator (the real analysis is tested with real Triton + Prometheus in
test_rollout_realparts.py).
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading

import pytest
import pytest_asyncio

import lmo.decide.measure
from lmo.decide.vocabulary import AnalysisResult
from lmo.labels import ARTIFACT_KEY
from lmo.rollout import desired_key
from tests.fixtures.kmock_fixture import (
    Cluster,
    OperatorThread,
    _by_operator,
    _method,
    job_for,
    manifest_for,
    parsed_spec,
    start_cluster,
)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
NS = "default"
pytestmark = pytest.mark.asyncio(loop_scope="module")


class ScriptedAnalysis:
    """Stands in for lmo.decide.measure.analyse: verdicts queued per LanguageModel (default pass)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str, str, float]] = []

    def __call__(self, analysis, namespace, lm, candidate, stable, window_seconds, replay=None):
        with self.lock:
            self.calls.append((lm, candidate, stable, window_seconds))
            queue = self.script.get(lm) or []
            verdict = queue.pop(0) if queue else "pass"
        if verdict == "fail":
            return AnalysisResult(
                "fail", {"error_ratio": 0.2, "requests": 50.0}, ["error ratio 0.2000 (10/50) > maxErrorRate 0.0100"]
            )
        if verdict == "inconclusive":
            return AnalysisResult("inconclusive", {"requests": 2.0}, ["v2 served 2 requests in 1s < minRequests 20"])
        return AnalysisResult("pass", {"error_ratio": 0.0, "requests": 50.0}, ["error ratio 0.0000 <= 0.0100"])

    def count(self, lm: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c[0] == lm)


@pytest.fixture(scope="module")
def scripted() -> ScriptedAnalysis:
    return ScriptedAnalysis()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(scripted):
    # Every operator Runtime (including one restarted mid-test) picks the analysis function
    # up from lmo.decide.measure when it is made.
    real = lmo.decide.measure.analyse
    lmo.decide.measure.analyse = scripted
    try:
        async with await start_cluster() as (cluster, operator):
            yield cluster, operator
    finally:
        lmo.decide.measure.analyse = real


def spec(steps=(20, 50, 100), hold="1s", v2_uri="s3://m/v2/", **rollout) -> dict:
    return {
        "task": "feature-extraction",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
            {"name": "v2", "checkpoint": {"uri": v2_uri}, "traffic": 0},
        ],
        "rollout": {
            "strategy": "Canary",
            "steps": list(steps),
            "stepDuration": hold,
            "analysis": {"prometheusUrl": "http://prometheus.monitoring:9090", "inconclusiveLimit": 2},
            **rollout,
        },
        "autoscaling": {"minReplicas": 1, "maxReplicas": 10},
    }


def serves(cluster: Cluster, name: str, body: dict, version: str) -> bool:
    """Deployment `<name>-<version>` exists with the pod template of the spec's artifact."""
    dep = cluster.get("apps/v1/deployments", NS, f"{name}-{version}")
    key = desired_key(parsed_spec(body), version)
    annotations = ((dep or {}).get("spec", {}).get("template", {}).get("metadata", {}) or {}).get(
        "annotations"
    ) or {}
    return annotations.get(ARTIFACT_KEY) == key


async def serve(cluster: Cluster, name: str, body: dict, versions=("v1", "v2")) -> None:
    """Finish each version's conversion Job and report its Deployment ready."""
    for v in versions:
        job = job_for(body, name, v)
        await cluster.wait(lambda: cluster.get("batch/v1/jobs", NS, job), what=f"Job {job}")
        await cluster.finish_job(NS, job, manifest_for(body, v))
    for v in versions:
        await cluster.wait(lambda: serves(cluster, name, body, v), what=f"Deployment of {v}")
        await cluster.ready_deployment(NS, f"{name}-{v}")


def rollout(cluster: Cluster, name: str) -> dict:
    return (cluster.lm_status(name) or {}).get("rollout") or {}


def route_history(cluster: Cluster, name: str) -> list[dict[str, int]]:
    """Every distinct weight set the operator wrote to HTTPRoute `name`, in order."""
    out: list[dict[str, int]] = []
    for r in list(cluster.kmock):
        if (
            _method(r) in ("POST", "PATCH")
            and r.resource is not None
            and getattr(r.resource, "plural", None) == "httproutes"
            and isinstance(r.data, dict)
            and (r.name == name or r.data.get("metadata", {}).get("name") == name)
            and _by_operator(r)
        ):
            refs = r.data["spec"]["rules"][-1]["backendRefs"]
            weights = {ref["name"].removeprefix(name + "-"): ref["weight"] for ref in refs}
            if not out or out[-1] != weights:
                out.append(weights)
    return out


def events(cluster: Cluster, name: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in cluster.list("v1/events", NS):
        if e.get("involvedObject", {}).get("name") == name:
            out.setdefault(e["reason"], []).append(e)
    return out


def traffic(cluster: Cluster, name: str) -> dict[str, int]:
    return {v["name"]: v["traffic"] for v in (cluster.lm_status(name) or {}).get("versions", [])}


async def test_canary_walks_steps_and_promotes(env, scripted):
    cluster, _ = env
    body = spec()
    await cluster.apply_lm("walk", body)
    await serve(cluster, "walk", body)
    await cluster.wait(lambda: rollout(cluster, "walk").get("phase") == "Succeeded", timeout=30,
                       what="rollout Succeeded")
    assert traffic(cluster, "walk") == {"v1": 0, "v2": 100}
    assert rollout(cluster, "walk")["stable"] == "v2"
    assert route_history(cluster, "walk")[-3:] == [
        {"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100},
    ]
    assert [c[1:3] for c in scripted.calls if c[0] == "walk"] == [("v2", "v1")] * 3
    # one route write per weight change: reconciles in between (status, child events) re-apply
    # nothing
    route_writes = cluster.writes(name="walk", resource="gateway.networking.k8s.io/v1/httproutes")
    assert route_writes == len(route_history(cluster, "walk"))
    ev = events(cluster, "walk")
    assert len(ev["RolloutStep"]) == 3 and all(e["count"] == 1 for e in ev["RolloutStep"])
    assert ev["RolloutSucceeded"][0]["count"] == 1
    # the candidate's HPA followed its share and was handed back the spec's range at the end
    hpa = cluster.get("autoscaling/v2/horizontalpodautoscalers", NS, "walk-v2")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 10)


async def test_rollback_holds_until_the_spec_changes(env, scripted):
    cluster, _ = env
    scripted.script["back"] = ["pass", "fail"]
    body = spec()
    await cluster.apply_lm("back", body)
    await serve(cluster, "back", body)
    await cluster.wait(lambda: rollout(cluster, "back").get("phase") == "RolledBack", timeout=30,
                       what="rollout RolledBack")
    assert traffic(cluster, "back") == {"v1": 100, "v2": 0}
    assert route_history(cluster, "back")[-1] == {"v1": 100}
    (warning,) = events(cluster, "back")["RolloutRolledBack"]
    assert warning["type"] == "Warning" and "0.2000 (10/50) > maxErrorRate 0.0100" in warning["message"]
    calls = scripted.count("back")
    assert calls == 2
    # several holds later: no new analysis, no retry, the Event not repeated
    await asyncio.sleep(3)
    assert scripted.count("back") == calls and rollout(cluster, "back")["phase"] == "RolledBack"
    assert events(cluster, "back")["RolloutRolledBack"][0]["count"] == 1

    fixed = spec(v2_uri="s3://m/v2-fixed/")
    await cluster.apply_lm("back", fixed)
    await cluster.wait(lambda: rollout(cluster, "back").get("phase") == "Waiting", what="new rollout")
    await serve(cluster, "back", fixed, versions=("v2",))
    await cluster.wait(lambda: rollout(cluster, "back").get("phase") == "Succeeded", timeout=30,
                       what="fixed candidate promoted")
    assert traffic(cluster, "back") == {"v1": 0, "v2": 100}
    assert scripted.count("back") == calls + 3


async def test_pause_holds_the_step_and_resume_continues(env, scripted):
    cluster, _ = env
    body = spec(steps=(30, 100), hold="2s")
    await cluster.apply_lm("hold", body)
    await serve(cluster, "hold", body)
    await cluster.wait(lambda: rollout(cluster, "hold").get("phase") == "Progressing", what="step 1")
    paused = copy.deepcopy(body)
    paused["rollout"]["paused"] = True
    await cluster.apply_lm("hold", paused)
    await cluster.wait(lambda: rollout(cluster, "hold").get("phase") == "Paused", what="Paused")
    step, calls = rollout(cluster, "hold")["step"], scripted.count("hold")
    await asyncio.sleep(3)  # longer than the hold: a running rollout would have been analysed
    assert rollout(cluster, "hold")["phase"] == "Paused" and rollout(cluster, "hold")["step"] == step
    assert scripted.count("hold") == calls
    assert traffic(cluster, "hold") == ({"v1": 70, "v2": 30} if step == 0 else {"v1": 0, "v2": 100})
    await cluster.apply_lm("hold", body)
    await cluster.wait(lambda: rollout(cluster, "hold").get("phase") == "Succeeded", timeout=30,
                       what="resumed and promoted")
    assert len(events(cluster, "hold")["RolloutPaused"]) == 1
    assert len(events(cluster, "hold")["RolloutResumed"]) == 1


async def test_operator_restart_mid_rollout_resumes_the_same_step(env, scripted):
    cluster, operator = env
    body = spec(steps=(50, 100), hold="4s")
    await cluster.apply_lm("again", body)
    await serve(cluster, "again", body)
    await cluster.wait(lambda: rollout(cluster, "again").get("phase") == "Progressing", what="step 1")
    before = rollout(cluster, "again")
    jobs_before = cluster.writes(resource="batch/v1/jobs")
    await operator.stop()
    seen = len(list(cluster.kmock))
    fresh = OperatorThread(str(cluster.kmock.url))
    await fresh.start()
    try:
        # the new operator has read the LanguageModel (its resume reconcile)
        await cluster.wait(
            lambda: any(
                _method(r) == "GET" and r.name == "again" and _by_operator(r)
                for r in list(cluster.kmock)[seen:]
            ),
            what="the restarted operator reading the LanguageModel",
        )
        now = rollout(cluster, "again")
        if now.get("step") == before["step"]:
            # same step, same hold: nothing started over
            assert now["stepStartedAt"] == before["stepStartedAt"]
        await cluster.wait(lambda: rollout(cluster, "again").get("phase") == "Succeeded", timeout=30,
                           what="promoted after the restart")
    finally:
        operator.thread = fresh.thread  # the module fixture stops whichever runs
        operator.stop_flag = fresh.stop_flag
    # no duplicate work: one analysis per step, one Event per transition, no new Job
    assert scripted.count("again") == 2
    ev = events(cluster, "again")
    assert len(ev["RolloutStarted"]) == 1 and ev["RolloutStarted"][0]["count"] == 1
    assert [e["count"] for e in ev["RolloutStep"]] == [1, 1]  # 50%, then 100%
    assert cluster.writes(resource="batch/v1/jobs") == jobs_before
    assert route_history(cluster, "again")[-2:] == [{"v1": 50, "v2": 50}, {"v2": 100}]
