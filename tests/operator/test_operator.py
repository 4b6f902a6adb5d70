"""The real Kopf operator (lmo.handlers) against the KMock emulator: what a user would see.

Each test owns one LanguageModel name; the module shares one emulator and one operator.
The converter and the kubelet are simulated by the fixture (`finish_job`, `ready_deployment`).
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from tests.fixtures.kmock_fixture import LM_RESOURCE, Cluster, job_for, manifest_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
JOBS = "batch/v1/jobs"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
ROUTES = "gateway.networking.k8s.io/v1/httproutes"
EVENTS = "v1/events"


def spec(**over) -> dict:
    out = {
        "task": "feature-extraction",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://models/minilm/v1/"}, "traffic": 90},
            {"name": "v2", "checkpoint": {"uri": "s3://models/minilm/v2/"}, "traffic": 10},
        ],
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
    }
    out.update(over)
    return out


def mine(cluster: Cluster, resource: str, lm: str) -> set[str]:
    return {n for n in cluster.names(resource, NS) if n == lm or n.startswith(lm + "-")}


def ready(cluster: Cluster, lm: str) -> str | None:
    return (cluster.condition(lm, "Ready") or {}).get("status")


def route_weights(cluster: Cluster, lm: str) -> dict[str, int]:
    route = cluster.get(ROUTES, NS, lm)
    default = route["spec"]["rules"][-1]
    return {b["name"]: b["weight"] for b in default["backendRefs"]}


def events(cluster: Cluster, lm: str) -> list[tuple[str, str, str]]:
    return [
        (e["type"], e["reason"], e["message"])
        for e in cluster.list(EVENTS, NS)
        if e["involvedObject"]["name"] == lm
    ]


async def converted(cluster: Cluster, lm: str, body: dict, versions=("v1", "v2")) -> None:
    """Wait for the conversion Jobs of `versions`, then report them accepted."""
    jobs = {v: job_for(body, lm, v) for v in versions}
    await cluster.wait(lambda: set(jobs.values()) <= mine(cluster, JOBS, lm), what="conversion Jobs")
    for v, job in jobs.items():
        await cluster.finish_job(NS, job, manifest_for(body, v))


async def serving(cluster: Cluster, lm: str, body: dict, versions=("v1", "v2")) -> None:
    """Create `lm`, let it convert, start its pods; wait until Ready=True."""
    await cluster.apply_lm(lm, body, NS)
    await converted(cluster, lm, body, versions)
    deps = {f"{lm}-{v}" for v in versions}
    await cluster.wait(lambda: deps <= mine(cluster, DEPLOYMENTS, lm), what="Deployments")
    for d in sorted(deps):
        await cluster.ready_deployment(NS, d)
    await cluster.wait(lambda: ready(cluster, lm) == "True", what=f"{lm} Ready")


async def quiet(cluster: Cluster, lm: str) -> None:
    """Wait until the operator has reconciled `lm` after the last change (it re-reads the
    LanguageModel first): poke a child so that a reconcile is sure to follow, then wait
    for the operator's next GET of the resource."""
    before = reads(cluster, lm)
    dep = cluster.get(DEPLOYMENTS, NS, f"{lm}-v1")
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{lm}-v1/status",
        {"status": dep["status"]}, "application/merge-patch+json",
    )
    await cluster.wait(lambda: reads(cluster, lm) > before, what="a reconcile")
    # and one more, so that the first one has certainly finished writing
    before = reads(cluster, lm)
    await cluster.request(
        "PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{lm}-v1/status",
        {"status": dep["status"]}, "application/merge-patch+json",
    )
    await cluster.wait(lambda: reads(cluster, lm) > before, what="a second reconcile")


def reads(cluster: Cluster, lm: str) -> int:
    path = f"/apis/lmo.dev/v1alpha1/namespaces/{NS}/languagemodels/{lm}"
    return sum(
        1 for r in list(cluster.kmock)
        if str(getattr(r.method, "value", r.method)) == "GET" and r.url.path == path
        and r.headers.get("User-Agent", "").startswith("lmo-operator")
    )


async def test_create_converts_then_serves_with_owned_children(cluster: Cluster):
    lm, body = "serve", spec()
    await cluster.apply_lm(lm, body, NS)
    jobs = {job_for(body, lm, "v1"), job_for(body, lm, "v2")}
    await cluster.wait(lambda: jobs <= mine(cluster, JOBS, lm), what="conversion Jobs")
    await cluster.wait(lambda: cluster.condition(lm, "Converted"), what="status")
    assert mine(cluster, DEPLOYMENTS, lm) == set()  # nothing to serve before conversion
    st = cluster.lm_status(lm)
    assert st["readyVersions"] == "0/2" and ready(cluster, lm) == "False"
    assert cluster.condition(lm, "Converted")["reason"] == "Converting"

    for v in ("v1", "v2"):
        await cluster.finish_job(NS, job_for(body, lm, v), manifest_for(body, v))
    want = {f"{lm}-v1", f"{lm}-v2"}
    await cluster.wait(lambda: mine(cluster, DEPLOYMENTS, lm) == want, what="Deployments")
    await cluster.wait(lambda: mine(cluster, JOBS, lm) == set(), what="finished Jobs removed")
    assert mine(cluster, SERVICES, lm) == want
    assert mine(cluster, HPAS, lm) == want
    assert mine(cluster, ROUTES, lm) == {lm}
    assert route_weights(cluster, lm) == {f"{lm}-v1": 90, f"{lm}-v2": 10}

    owner = cluster.get(LM_RESOURCE, NS, lm)
    for resource, names in ((DEPLOYMENTS, want), (SERVICES, want), (HPAS, want), (ROUTES, {lm})):
        for n in names:
            (ref,) = cluster.get(resource, NS, n)["metadata"]["ownerReferences"]
            assert ref == {
                "apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "name": lm,
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }
    assert cluster.condition(lm, "Deployed")["status"] == "False"  # pods not ready yet

    for d in sorted(want):
        await cluster.ready_deployment(NS, d)
    await cluster.wait(lambda: ready(cluster, lm) == "True", what="Ready")
    st = cluster.lm_status(lm)
    # printer columns and the API's status shape
    assert st["trafficSummary"] == "v1=90,v2=10"
    assert st["readyVersions"] == "2/2"
    assert st["endpoint"].startswith("http://")
    assert st["observedGeneration"] == owner["metadata"]["generation"]
    assert [c["type"] for c in st["conditions"]] == ["Converted", "Deployed", "Routed", "Ready"]
    for c in st["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime",
                          "observedGeneration"}
        assert c["status"] == "True" and c["observedGeneration"] == owner["metadata"]["generation"]
    from lmo.api import LanguageModelStatus

    LanguageModelStatus.model_validate(st)
    by_name = {v["name"]: v for v in st["versions"]}
    assert by_name["v1"]["phase"] == "Ready" and by_name["v1"]["traffic"] == 90
    assert by_name["v1"]["artifact"]["key"] == manifest_for(body, "v1")["key"]
    assert by_name["v1"]["artifact"]["uri"].endswith(by_name["v1"]["artifact"]["key"] + "/")
    assert by_name["v2"]["readyReplicas"] == 1
    reasons = [r for _, r, _ in events(cluster, lm)]
    assert reasons.count("VersionReady") == 2


async def test_reconcile_with_nothing_changed_writes_nothing(cluster: Cluster):
    lm = "idle"
    await serving(cluster, lm, spec())
    await quiet(cluster, lm)
    before = cluster.writes(lm)
    await quiet(cluster, lm)  # two more full reconciles
    assert cluster.writes(lm) == before, cluster.write_log(lm)[-10:]


async def test_traffic_patch_moves_the_route_only(cluster: Cluster):
    lm = "shift"
    await serving(cluster, lm, spec())
    await quiet(cluster, lm)
    deployments_before = cluster.writes(resource=DEPLOYMENTS)
    services_before = cluster.writes(resource=SERVICES)
    await cluster.patch_lm(lm, [
        {"op": "replace", "path": "/spec/versions/0/traffic", "value": 50},
        {"op": "replace", "path": "/spec/versions/1/traffic", "value": 50},
    ], NS)
    await cluster.wait(
        lambda: route_weights(cluster, lm) == {f"{lm}-v1": 50, f"{lm}-v2": 50}, what="route weights"
    )
    await cluster.wait(lambda: cluster.lm_status(lm).get("trafficSummary") == "v1=50,v2=50",
                       what="status traffic")
    gen = cluster.get(LM_RESOURCE, NS, lm)["metadata"]["generation"]
    assert cluster.lm_status(lm)["observedGeneration"] == gen
    assert [v["traffic"] for v in cluster.lm_status(lm)["versions"]] == [50, 50]
    assert cluster.writes(resource=DEPLOYMENTS) == deployments_before
    assert cluster.writes(resource=SERVICES) == services_before
    assert ready(cluster, lm) == "True"


async def test_removing_a_version_deletes_its_children(cluster: Cluster):
    lm = "shrink"
    body = spec()
    await serving(cluster, lm, body)
    smaller = copy.deepcopy(body)
    smaller["versions"] = [dict(body["versions"][0], traffic=100)]
    await cluster.apply_lm(lm, smaller, NS)
    await cluster.wait(lambda: mine(cluster, DEPLOYMENTS, lm) == {f"{lm}-v1"}, what="v2 removed")
    # the children are deleted one by one: wait for each kind rather than read it at once
    await cluster.wait(lambda: mine(cluster, SERVICES, lm) == {f"{lm}-v1"}, what="v2 Service removed")
    await cluster.wait(lambda: mine(cluster, HPAS, lm) == {f"{lm}-v1"}, what="v2 HPA removed")
    await cluster.wait(lambda: route_weights(cluster, lm) == {f"{lm}-v1": 100}, what="route")
    await cluster.wait(lambda: cluster.lm_status(lm).get("readyVersions") == "1/1", what="status")


async def test_invalid_spec_is_reported_and_changes_no_child(cluster: Cluster):
    lm = "invalid"
    await serving(cluster, lm, spec())
    await quiet(cluster, lm)
    children_before = cluster.writes(lm) - cluster.writes(lm, LM_RESOURCE)
    # a schema cannot refuse this (CEL would, on a real server); pydantic does
    await cluster.patch_lm(lm, [{"op": "replace", "path": "/spec/versions/1/traffic", "value": 20}], NS)
    await cluster.wait(lambda: ready(cluster, lm) == "False", what="Ready=False")
    cond = cluster.condition(lm, "Ready")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.versions[].traffic must sum to 100" in cond["message"]
    assert "110" in cond["message"]
    await cluster.wait(lambda: any(r == "InvalidSpec" for _, r, _ in events(cluster, lm)),
                       what="a Warning Event")
    assert [t for t, r, _ in events(cluster, lm) if r == "InvalidSpec"] == ["Warning"]
    await quiet(cluster, lm)
    assert cluster.writes(lm) - cluster.writes(lm, LM_RESOURCE) == children_before
    assert route_weights(cluster, lm) == {f"{lm}-v1": 90, f"{lm}-v2": 10}  # still serving


async def test_refused_conversion_keeps_serving_the_last_good_artifact(cluster: Cluster):
    lm = "gate"
    body = spec()
    await serving(cluster, lm, body)
    old_key = manifest_for(body, "v2")["key"]
    newer = copy.deepcopy(body)
    newer["versions"][1]["checkpoint"]["uri"] = "s3://models/minilm/v2-retrained/"
    newer["versions"][1]["optimize"] = {"precision": "int8", "accuracyGate": {"minScore": 0.99}}
    await cluster.apply_lm(lm, newer, NS)
    job = job_for(newer, lm, "v2")
    await cluster.wait(lambda: job in mine(cluster, JOBS, lm), what="the new conversion Job")
    reason = "accuracyGate.minScore: int8 scored cosine 0.912 < 0.99; use precision fp16"
    await cluster.finish_job(NS, job, manifest_for(newer, "v2", accepted=False, reason=reason,
                                                   score=0.912), succeeded=False)
    await cluster.wait(lambda: cluster.condition(lm, "Converted")["reason"] == "ConversionRefused",
                       what="refusal reported")
    assert ready(cluster, lm) == "False"
    assert reason in cluster.condition(lm, "Ready")["message"]
    v2 = next(v for v in cluster.lm_status(lm)["versions"] if v["name"] == "v2")
    assert v2["phase"] == "Failed" and reason in v2["message"]
    assert v2["artifact"]["key"] == old_key  # status still names what is served
    dep = cluster.get(DEPLOYMENTS, NS, f"{lm}-v2")
    assert dep["metadata"]["annotations"]["lmo.dev/artifact-key"] == old_key
    assert route_weights(cluster, lm) == {f"{lm}-v1": 90, f"{lm}-v2": 10}
    await quiet(cluster, lm)  # more reconciles: the Event is not posted again
    (warning,) = [e for e in cluster.list(EVENTS, NS)
                  if e["involvedObject"]["name"] == lm and e["reason"] == "ConversionRefused"]
    assert warning["type"] == "Warning" and reason in warning["message"]
    assert warning["count"] == 1


async def test_failed_conversion_job_without_manifest(cluster: Cluster):
    lm = "crash"
    body = spec(versions=[{"name": "v1", "checkpoint": {"uri": "s3://models/broken/"}}])
    await cluster.apply_lm(lm, body, NS)
    job = job_for(body, lm, "v1")
    await cluster.wait(lambda: job in mine(cluster, JOBS, lm), what="Job")
    await cluster.finish_job(NS, job, "Traceback ...\nOSError: no config.json under s3://models/broken/",
                             succeeded=False)
    await cluster.wait(lambda: (cluster.condition(lm, "Converted") or {}).get("reason") == "ConversionFailed",
                       what="failure reported")
    assert "no config.json" in cluster.condition(lm, "Converted")["message"]
    assert mine(cluster, DEPLOYMENTS, lm) == set()
    assert job in mine(cluster, JOBS, lm)  # kept: its log explains, and no second attempt


async def test_missing_secret_names_the_field(cluster: Cluster):
    lm = "secret"
    body = spec()
    body["versions"][1]["checkpoint"]["secretRef"] = {"name": "store-creds"}
    await cluster.apply_lm(lm, body, NS)
    await cluster.wait(lambda: ready(cluster, lm) == "False", what="Ready=False")
    await cluster.wait(lambda: job_for(body, lm, "v1") in mine(cluster, JOBS, lm), what="v1 Job")
    cond = cluster.condition(lm, "Converted")
    assert cond["reason"] == "SecretMissing"
    assert "spec.versions[1].checkpoint.secretRef.name" in cond["message"]
    assert "store-creds" in cond["message"] and "create it" in cond["message"]
    assert mine(cluster, JOBS, lm) == {job_for(body, lm, "v1")}  # nothing for v2
    await cluster.create_secret("store-creds", NS)
    # the Secret is seen on the next reconcile (here: woken by a change of v1's Job)
    await cluster.finish_job(NS, job_for(body, lm, "v1"), manifest_for(body, "v1"))
    await cluster.wait(lambda: job_for(body, lm, "v2") in mine(cluster, JOBS, lm), what="v2 Job")


async def test_delete_removes_children_through_owner_references(cluster: Cluster):
    lm = "gone"
    await serving(cluster, lm, spec())
    assert cluster.get(LM_RESOURCE, NS, lm)["metadata"].get("finalizers") in (None, [])
    await cluster.delete_lm(lm, NS)
    assert cluster.get(LM_RESOURCE, NS, lm) is None  # no finalizer: deletion is never blocked
    for resource in (DEPLOYMENTS, SERVICES, HPAS, ROUTES, JOBS):
        assert mine(cluster, resource, lm) == set()
    # a reconcile already under way may still apply a child; its owner is gone, so the
    # garbage collector removes it again, and the operator stops looking at the object
    await asyncio.sleep(1.0)
    for resource in (DEPLOYMENTS, SERVICES, HPAS, ROUTES, JOBS):
        assert mine(cluster, resource, lm) == set()
    calls = reads(cluster, lm), cluster.writes(lm)
    await asyncio.sleep(1.0)
    assert (reads(cluster, lm), cluster.writes(lm)) == calls


async def test_metrics_are_exported(cluster: Cluster):
    import urllib.request

    from lmo import metrics

    await serving(cluster, "metered", spec(versions=[
        {"name": "v1", "checkpoint": {"uri": "s3://models/minilm/v1/"}}]), versions=("v1",))
    await quiet(cluster, "metered")
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read().decode())
    finally:
        server.shutdown()
        server.server_close()
    assert 'lmo_languagemodel_ready{name="metered",namespace="default"} 1.0' in text
    assert 'lmo_reconcile_total{result="ready"}' in text
    assert 'lmo_children_applied_total{kind="Deployment"}' in text
    assert "lmo_reconcile_duration_seconds_bucket" in text
    assert "lmo_reconcile_errors_total" in text
