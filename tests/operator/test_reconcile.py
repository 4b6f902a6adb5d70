"""`lmo.reconcile` driven directly (no Kopf) against the KMock emulator, through `lmo.kube`.

These pin the write discipline: a reconcile that finds nothing to change makes no write,
drift in one child is corrected with exactly one apply, and what is routed is only what
can be served.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import kopf
import pytest
import pytest_asyncio

from lmo.kube import Kube, KubeError
from lmo.reconcile import reconcile
from lmo.settings import OperatorSettings
from tests.fixtures.kmock_fixture import LM_RESOURCE, job_for, manifest_for, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"
SETTINGS = OperatorSettings()
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
HPAS = "autoscaling/v2/horizontalpodautoscalers"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env():
    async with await start_cluster(operator=False) as (cluster, _):
        kube = Kube(kopf.ConnectionInfo(server=str(cluster.kmock.url), insecure=True))
        try:
            yield cluster, kube
        finally:
            await kube.close()


def spec(**over) -> dict:
    out = {
        "task": "fill-mask",
        "versions": [
            {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 70},
            {"name": "b", "checkpoint": {"uri": "s3://m/b/"}, "traffic": 30},
        ],
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
    }
    out.update(over)
    return out


async def again(env, name: str):
    cluster, kube = env
    return await reconcile(cluster.get(LM_RESOURCE, NS, name), kube, SETTINGS, now=T0)


async def test_a_second_reconcile_writes_nothing(env):
    cluster, kube = env
    body = spec()
    await cluster.apply_lm("twice", body, NS)
    first = await again(env, "twice")
    assert first.applied["Job"] == 2 and first.status_written
    writes = cluster.writes("twice")
    second = await again(env, "twice")
    assert cluster.writes("twice") == writes, cluster.write_log("twice")
    assert not second.applied and not second.status_written and second.deleted == 0

    # the same holds once everything is converted, deployed and ready
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, "twice", v), manifest_for(body, v))
    await again(env, "twice")  # Deployments, Services, HPAs, route; Jobs deleted
    for v in ("a", "b"):
        await cluster.ready_deployment(NS, f"twice-{v}")
    result = await again(env, "twice")
    assert result.ready and result.outcome == "ready"
    assert [e[1] for e in result.events] == ["VersionReady", "VersionReady"]
    writes = cluster.writes("twice")
    quiet = await again(env, "twice")
    assert cluster.writes("twice") == writes, cluster.write_log("twice")[-5:]
    assert quiet.ready and not quiet.applied and not quiet.events
    assert quiet.requeue_after is None  # nothing in progress: only the periodic resync


async def test_drift_in_one_child_is_corrected_with_one_apply(env):
    cluster, kube = env
    body = spec()
    await cluster.apply_lm("drift", body, NS)
    await again(env, "drift")
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, "drift", v), manifest_for(body, v))
    await again(env, "drift")
    await cluster.request(
        "PATCH", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/drift-b",
        {"spec": {"maxReplicas": 40}}, "application/merge-patch+json",
    )
    result = await again(env, "drift")
    assert dict(result.applied) == {"HorizontalPodAutoscaler": 1}
    assert cluster.get(HPAS, NS, "drift-b")["spec"]["maxReplicas"] == 2


async def test_only_servable_versions_are_routed(env):
    cluster, kube = env
    body = spec()
    await cluster.apply_lm("partial", body, NS)
    await again(env, "partial")
    await cluster.finish_job(NS, job_for(body, "partial", "a"), manifest_for(body, "a"))
    await again(env, "partial")
    route = cluster.get("gateway.networking.k8s.io/v1/httproutes", NS, "partial")
    assert [b["name"] for b in route["spec"]["rules"][-1]["backendRefs"]] == ["partial-a"]
    status = cluster.lm_status("partial")
    assert status["trafficSummary"] == "a=100,b=0"  # what the route really sends
    routed = cluster.condition("partial", "Routed")
    assert routed["status"] == "False" and routed["reason"] == "RoutePending"
    assert "b" in routed["message"]
    phases = {v["name"]: v["phase"] for v in status["versions"]}
    assert phases == {"a": "Deploying", "b": "Converting"}


async def test_last_transition_time_follows_the_clock_parameter(env):
    cluster, kube = env
    await cluster.apply_lm("clock", spec(), NS)
    await again(env, "clock")
    times = {c["lastTransitionTime"] for c in cluster.lm_status("clock")["conditions"]}
    assert times == {"2026-03-01T12:00:00Z"}


async def test_canary_keeps_the_stable_version_until_the_candidate_is_ready(env):
    cluster, kube = env
    body = spec(
        versions=[
            {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 100},
            {"name": "b", "checkpoint": {"uri": "s3://m/b/"}, "traffic": 0},
        ],
        rollout={"strategy": "Canary", "steps": [50, 100], "stepDuration": "1m",
                 "analysis": {"prometheusUrl": "http://prometheus:9090"}},
    )
    await cluster.apply_lm("canary", body, NS)
    await again(env, "canary")
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, "canary", v), manifest_for(body, v))
    await again(env, "canary")
    await cluster.ready_deployment(NS, "canary-a")
    result = await again(env, "canary")
    status = cluster.lm_status("canary")
    assert status["trafficSummary"] == "a=100,b=0"
    assert status["rollout"]["stable"] == "a" and status["rollout"]["candidate"] == "b"
    assert status["rollout"]["phase"] == "Waiting"
    assert result.requeue_after is not None


async def test_service_provider_reports_the_pod_share_it_can_route(env):
    cluster, kube = env
    body = spec(routing={"provider": "Service"}, serving={"replicas": 2})
    body.pop("autoscaling")
    body["versions"][0]["traffic"], body["versions"][1]["traffic"] = 90, 10
    await cluster.apply_lm("pods", body, NS)
    await again(env, "pods")
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, "pods", v), manifest_for(body, v))
    await again(env, "pods")
    # 90/10 over a pool of 4 pods is 3 + 1: the Service really sends 75/25
    assert cluster.get("apps/v1/deployments", NS, "pods-a")["spec"]["replicas"] == 3
    assert cluster.get("apps/v1/deployments", NS, "pods-b")["spec"]["replicas"] == 1
    assert cluster.lm_status("pods")["trafficSummary"] == "a=75,b=25"
    assert cluster.get("v1/services", NS, "pods") is not None


async def serve_both(env, name: str, body: dict, golden: list[str] | None = None) -> None:
    cluster, _ = env
    await cluster.apply_lm(name, body, NS)
    await again(env, name)
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, name, v), manifest_for(body, v, golden=golden))
    await again(env, name)
    for v in ("a", "b"):
        await cluster.ready_deployment(NS, f"{name}-{v}")
    assert (await again(env, name)).ready


async def test_progress_deadline_fails_the_version(env):
    cluster, _ = env
    await serve_both(env, "stuck", spec())
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/stuck-b/status",
        {"status": {"readyReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "stuck-b-5d8" has timed out progressing.'}]}},
        "application/merge-patch+json",
    )
    result = await again(env, "stuck")
    assert not result.ready and result.outcome == "failed"
    deployed = cluster.condition("stuck", "Deployed")
    assert deployed["status"] == "False" and deployed["reason"] == "ProgressDeadlineExceeded"
    b = next(v for v in cluster.lm_status("stuck")["versions"] if v["name"] == "b")
    assert b["phase"] == "Failed" and "progress deadline" in b["message"]
    assert ("Warning", "ProgressDeadlineExceeded") in [(t, r) for t, r, _ in result.events]


async def test_a_missing_secret_leaves_the_serving_version_alone(env):
    cluster, _ = env
    body = spec()
    await serve_both(env, "locked", body)
    deployment = cluster.get("apps/v1/deployments", NS, "locked-b")
    changed = spec()
    changed["versions"][1]["checkpoint"] = {"uri": "s3://m/b-new/", "secretRef": {"name": "nope"}}
    await cluster.apply_lm("locked", changed, NS)
    writes = cluster.writes("locked-b")
    result = await again(env, "locked")
    assert cluster.writes("locked-b") == writes  # no new Job, Deployment, Service or HPA for b
    assert cluster.get("apps/v1/deployments", NS, "locked-b") == deployment
    assert not result.ready
    cond = cluster.condition("locked", "Converted")
    assert cond["reason"] == "SecretMissing"
    assert "spec.versions[1].checkpoint.secretRef.name" in cond["message"]
    assert cluster.lm_status("locked")["trafficSummary"] == "a=70,b=30"  # still served


async def test_a_job_the_server_will_not_change_is_replaced(env):
    cluster, kube = env
    body = spec(versions=[{"name": "a", "checkpoint": {"uri": "s3://m/a/"}}])
    await cluster.apply_lm("immutable", body, NS)
    await again(env, "immutable")
    job = job_for(body, "immutable", "a")
    assert cluster.get("batch/v1/jobs", NS, job) is not None
    # a real server (and the emulator) refuses to change a Job's pod template: a new
    # converter image must replace the Job
    newer = OperatorSettings(converter_image="registry.example/lmo-converter:0.2.0")
    result = await reconcile(cluster.get(LM_RESOURCE, NS, "immutable"), kube, newer, now=T0)
    assert cluster.get("batch/v1/jobs", NS, job) is None
    assert result.requeue_after is not None and result.requeue_after <= 1.0
    await reconcile(cluster.get(LM_RESOURCE, NS, "immutable"), kube, newer, now=T0)
    containers = cluster.get("batch/v1/jobs", NS, job)["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "registry.example/lmo-converter:0.2.0"


class Refusing:
    """`Kube` whose server-side applies of some kinds are refused as a real server would."""

    def __init__(self, kube: Kube, refuse: dict[str, tuple[int, str]]):
        self.kube, self.refuse = kube, refuse

    def __getattr__(self, name: str):
        return getattr(self.kube, name)

    async def apply(self, desired: dict, observed: dict | None = None, **kw):
        if desired["kind"] in self.refuse:
            status, message = self.refuse[desired["kind"]]
            raise KubeError(status, "PATCH", f"/{desired['kind']}", message)
        return await self.kube.apply(desired, observed, **kw)


async def test_a_child_the_server_refuses_becomes_a_condition_not_a_silent_stop(env):
    """No Gateway API CRDs (404 on the HTTPRoute): Routed=False naming the fix, one Event,
    the other children still applied, and the next pass is soon; a 422 names the field."""
    cluster, kube = env
    body = spec()
    await serve_both(env, "nogw", body)
    refusing = Refusing(kube, {"HTTPRoute": (404, "the server could not find the requested resource")})
    await cluster.apply_lm("nogw", spec(versions=[dict(v, traffic=50) for v in body["versions"]]), NS)
    result = await reconcile(cluster.get(LM_RESOURCE, NS, "nogw"), refusing, SETTINGS, now=T0)
    routed = cluster.condition("nogw", "Routed")
    assert routed["status"] == "False" and routed["reason"] == "ApplyRefused"
    assert "HTTPRoute nogw" in routed["message"] and "install the Gateway API CRDs" in routed["message"]
    assert "spec.routing.provider: Service" in routed["message"]
    assert cluster.condition("nogw", "Ready")["reason"] == "ApplyRefused"
    assert [e[1] for e in result.events] == ["ApplyRefused"]
    assert result.outcome == "failed" and result.requeue_after is not None
    again_ = await reconcile(cluster.get(LM_RESOURCE, NS, "nogw"), refusing, SETTINGS, now=T0)
    assert not again_.events  # the Warning is posted once, not every pass

    invalid = Refusing(kube, {"Deployment": (422, 'Deployment.apps "nogw-a" is invalid: '
                                             'spec.template.spec.affinity: Invalid value')})
    await cluster.apply_lm("nogw", spec(serving={"replicas": 2}, autoscaling=None), NS)
    await reconcile(cluster.get(LM_RESOURCE, NS, "nogw"), invalid, SETTINGS, now=T0)
    deployed = cluster.condition("nogw", "Deployed")
    assert deployed["reason"] == "ApplyRefused"
    assert "spec.template.spec.affinity" in deployed["message"]
    # once the server accepts again, the conditions recover
    await reconcile(cluster.get(LM_RESOURCE, NS, "nogw"), kube, SETTINGS, now=T0)
    assert cluster.condition("nogw", "Routed")["reason"] == "Routed"


async def test_a_spec_no_child_can_be_built_from_is_refused_in_status(env):
    """Valid for the API, unusable with these operator settings (KEDA with no Prometheus
    address anywhere): Ready=False NotServable naming the fix, and no child is written."""
    cluster, kube = env
    body = spec(autoscaling={"engine": "KEDA", "metric": "QueueTime", "minReplicas": 1})
    await cluster.apply_lm("nokeda", body, NS)
    result = await again(env, "nokeda")
    ready = cluster.condition("nokeda", "Ready")
    assert ready["status"] == "False" and ready["reason"] == "NotServable"
    assert "LMO_PROMETHEUS_URL" in ready["message"] and "prometheusUrl" in ready["message"]
    assert result.outcome == "invalid" and not result.applied
    assert cluster.writes("nokeda-") == 0
    assert [e[1] for e in result.events] == ["NotServable"]


async def test_a_missing_artifact_store_secret_blocks_every_version(env):
    cluster, kube = env
    settings = SETTINGS.model_copy(update={"artifact_store": "s3://store/lmo",
                                           "artifact_store_secret": "store-creds"})
    await cluster.apply_lm("nostore", spec(), NS)
    result = await reconcile(cluster.get(LM_RESOURCE, NS, "nostore"), kube, settings, now=T0)
    assert not result.applied["Job"]  # no Job would get past its missing envFrom Secret
    converted = cluster.condition("nostore", "Converted")
    assert converted["reason"] == "SecretMissing"
    assert "artifactStore.secret" in converted["message"] and "'store-creds'" in converted["message"]
    await cluster.create_secret("store-creds", NS)
    result = await reconcile(cluster.get(LM_RESOURCE, NS, "nostore"), kube, settings, now=T0)
    assert result.applied["Job"] == 2


class RecordingAnalysis:
    """Stands in for lmo.decide.measure.analyse: records every call, answers `verdict`."""

    def __init__(self, verdict: str = "pass"):
        self.verdict = verdict
        self.calls: list[dict] = []

    def __call__(self, analysis, namespace, lm, candidate, stable, window_seconds, replay=None):
        from lmo.decide.vocabulary import AnalysisResult

        self.calls.append({"lm": lm, "candidate": candidate, "stable": stable,
                           "window": window_seconds, "replay": replay})
        return AnalysisResult(self.verdict, {"requests": 50.0}, [f"scripted {self.verdict}"])


def canary(hold: str = "1m", **analysis) -> dict:
    return spec(
        versions=[
            {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 100},
            {"name": "b", "checkpoint": {"uri": "s3://m/b/"}, "traffic": 0},
        ],
        rollout={"strategy": "Canary", "steps": [50, 100], "stepDuration": hold,
                 "analysis": {"prometheusUrl": "http://prometheus:9090", **analysis}},
    )


async def at(env, name: str, seconds: float, analyse=None):
    cluster, kube = env
    return await reconcile(cluster.get(LM_RESOURCE, NS, name), kube, SETTINGS,
                           now=T0 + timedelta(seconds=seconds), analyse=analyse)


async def test_an_early_check_judges_only_the_elapsed_part_of_the_step(env):
    cluster, _ = env
    await serve_both(env, "early", canary(hold="8m"))  # early checks every 2 minutes
    await at(env, "early", 0)
    assert cluster.lm_status("early")["rollout"]["phase"] == "Progressing"
    fake = RecordingAnalysis()
    await at(env, "early", 130, analyse=fake)
    assert [c["window"] for c in fake.calls] == [130.0]  # not the 480 s hold


GOLDEN = ["the capital of France is [MASK].", "a [MASK] day"]


async def test_the_golden_replay_runs_against_both_services_on_a_cluster(env):
    """maxOutputDrift: the candidate artifact's golden inputs (from its conversion Job's
    summary, kept in status) are replayed against both versions' Services."""
    cluster, _ = env
    await serve_both(env, "replay", canary(maxOutputDrift=0.05, minRequests=0), golden=GOLDEN)
    b = next(v for v in cluster.lm_status("replay")["versions"] if v["name"] == "b")
    assert b["artifact"]["goldenInputs"] == GOLDEN and b["artifact"]["entryModel"] == "fill_mask"
    await at(env, "replay", 0)
    assert cluster.lm_status("replay")["rollout"]["phase"] == "Progressing"
    fake = RecordingAnalysis()
    await at(env, "replay", 61, analyse=fake)
    (call,) = fake.calls
    replay = call["replay"]
    assert replay is not None
    assert replay.candidate_url == f"http://replay-b.{NS}.svc:8000"
    assert replay.stable_url == f"http://replay-a.{NS}.svc:8000"
    assert replay.entry_model == "fill_mask" and replay.inputs == tuple(GOLDEN)
    assert cluster.lm_status("replay")["rollout"]["step"] == 1


async def test_no_replay_without_max_output_drift(env):
    cluster, _ = env
    await serve_both(env, "noreplay", canary(), golden=GOLDEN)
    await at(env, "noreplay", 0)
    fake = RecordingAnalysis()
    await at(env, "noreplay", 61, analyse=fake)
    assert [c["replay"] for c in fake.calls] == [None]


async def test_a_drift_gate_on_an_artifact_without_golden_inputs_fails_the_step(env):
    """An older artifact recorded no golden inputs: maxOutputDrift cannot be checked, and
    a check that cannot run must not pass (BlueGreen with minRequests 0 would otherwise
    switch with no check at all)."""
    cluster, _ = env
    body = canary(maxOutputDrift=0.05, minRequests=0)
    body["rollout"]["strategy"] = "BlueGreen"
    await serve_both(env, "nogolden", body)
    await at(env, "nogolden", 0)
    fake = RecordingAnalysis()
    result = await at(env, "nogolden", 61, analyse=fake)
    ro = cluster.lm_status("nogolden")["rollout"]
    assert ro["phase"] == "RolledBack" and not fake.calls
    assert cluster.lm_status("nogolden")["trafficSummary"] == "a=100,b=0"
    (warning,) = [m for t, r, m in result.events if r == "RolloutRolledBack"]
    assert "maxOutputDrift" in warning and "no golden inputs" in warning


async def deployment_status(env, name: str, **status) -> None:
    cluster, _ = env
    dep = cluster.get("apps/v1/deployments", NS, name)
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{name}/status",
        {"status": {"observedGeneration": dep["metadata"]["generation"], **status}},
        "application/merge-patch+json",
    )


async def test_a_changed_candidate_is_not_ready_while_old_pods_serve(env):
    """Old pods of a changed candidate are Ready but serve its previous artifact: no canary
    traffic until every pod runs the template of the new one."""
    cluster, _ = env
    body = canary()
    await serve_both(env, "rolling", body)
    await at(env, "rolling", 0)
    assert cluster.lm_status("rolling")["rollout"]["phase"] == "Progressing"
    changed = canary()
    changed["versions"][1]["checkpoint"]["uri"] = "s3://m/b2/"
    await cluster.apply_lm("rolling", changed, NS)
    await at(env, "rolling", 1)  # the new conversion Job
    await cluster.finish_job(NS, job_for(changed, "rolling", "b"), manifest_for(changed, "b"))

    def routed() -> str:
        return cluster.lm_status("rolling")["trafficSummary"]

    await at(env, "rolling", 2)  # the pass where the conversion finishes
    assert routed() == "a=100,b=0" and cluster.lm_status("rolling")["rollout"]["phase"] == "Waiting"
    # the Deployment rolls: one new pod up, an old one still serving
    await deployment_status(env, "rolling-b", replicas=2, updatedReplicas=1, readyReplicas=2)
    await at(env, "rolling", 3)
    assert routed() == "a=100,b=0"
    b = next(v for v in cluster.lm_status("rolling")["versions"] if v["name"] == "b")
    assert b["phase"] == "Deploying" and "servingKey" not in b
    await deployment_status(env, "rolling-b", replicas=1, updatedReplicas=1, readyReplicas=1)
    await at(env, "rolling", 4)
    assert routed() == "a=50,b=50"
    b = next(v for v in cluster.lm_status("rolling")["versions"] if v["name"] == "b")
    assert b["phase"] == "Ready" and b["servingKey"] == b["artifact"]["key"]


async def test_a_roll_that_keeps_the_artifact_keeps_the_candidate_ready(env):
    """Provider Service: the candidate's pods are relabelled (lmo.dev/routed) when its step
    gives it traffic, which rolls them; they serve the same artifact, so the step goes on."""
    cluster, _ = env
    body = canary()
    body["routing"] = {"provider": "Service"}
    await cluster.apply_lm("relabel", body, NS)
    await again(env, "relabel")
    for v in ("a", "b"):
        await cluster.finish_job(NS, job_for(body, "relabel", v), manifest_for(body, v))
    await again(env, "relabel")
    for v in ("a", "b"):
        await cluster.ready_deployment(NS, f"relabel-{v}")
    await at(env, "relabel", 0)
    assert cluster.lm_status("relabel")["rollout"]["phase"] == "Progressing"
    dep = cluster.get("apps/v1/deployments", NS, "relabel-b")
    assert dep["spec"]["template"]["metadata"]["labels"]["lmo.dev/routed"] == "true"
    await deployment_status(env, "relabel-b", replicas=2, updatedReplicas=1, readyReplicas=2)
    result = await at(env, "relabel", 5)
    assert cluster.lm_status("relabel")["rollout"]["phase"] == "Progressing"
    assert "CandidateNotReady" not in [r for _, r, _ in result.events]


async def test_a_scale_its_controller_has_not_seen_yet_keeps_the_candidate_ready(env):
    """The HPA scales the candidate when its step changes its share: the Deployment's
    generation moves ahead of its controller's observedGeneration for a moment (seconds
    after an etcd outage, while the controller manager catches up). Its ready pods still
    serve the same artifact, so the step goes on: no CandidateNotReady, no step taken (and
    announced) twice."""
    cluster, _ = env
    await serve_both(env, "scaled", canary())
    await at(env, "scaled", 0)
    assert cluster.lm_status("scaled")["rollout"]["phase"] == "Progressing"
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/scaled-b", {"spec": {"replicas": 2}},
        "application/merge-patch+json",
    )
    dep = cluster.get("apps/v1/deployments", NS, "scaled-b")
    assert dep["metadata"]["generation"] > dep["status"]["observedGeneration"]
    result = await at(env, "scaled", 5)
    assert cluster.lm_status("scaled")["rollout"]["phase"] == "Progressing"
    assert "CandidateNotReady" not in [r for _, r, _ in result.events]
    assert cluster.lm_status("scaled")["trafficSummary"] == "a=50,b=50"


async def test_a_canary_waits_for_its_stable_before_its_first_step(env):
    """Both versions new, the candidate converted and ready first: no step starts (which
    would route it every request, the stable taking none) until the stable serves too."""
    cluster, _ = env
    body = canary()
    await cluster.apply_lm("quick", body, NS)
    await again(env, "quick")
    await cluster.finish_job(NS, job_for(body, "quick", "b"), manifest_for(body, "b"))
    await again(env, "quick")
    await cluster.ready_deployment(NS, "quick-b")
    result = await at(env, "quick", 0)
    status = cluster.lm_status("quick")
    assert status["rollout"]["phase"] == "Waiting", status["rollout"]
    assert "stable version a" in status["rollout"]["message"]
    assert status["trafficSummary"] == "a=0,b=0"
    assert "RolloutStep" not in [r for _, r, _ in result.events]
    await cluster.finish_job(NS, job_for(body, "quick", "a"), manifest_for(body, "a"))
    await at(env, "quick", 1)
    await cluster.ready_deployment(NS, "quick-a")
    await at(env, "quick", 2)
    status = cluster.lm_status("quick")
    assert status["rollout"]["phase"] == "Progressing" and status["trafficSummary"] == "a=50,b=50"
