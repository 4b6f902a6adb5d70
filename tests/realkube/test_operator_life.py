"""A LanguageModel's whole life, run by the real `lmo operator` on a real API server.

kube-apiserver and kube-controller-manager v1.36 (real validation, CEL, server-side apply,
RBAC, garbage collector, Deployment/ReplicaSet/Job controllers); the chart installed with
helm and the operator logged in with its ServiceAccount's token; conversion Jobs really
convert real tiny checkpoints (the kubelet stand-in runs their `lmo convert`). Each test has
its own namespace and, afterwards, no 403 in the operator's log.
"""

from __future__ import annotations

import copy
import time

import pytest

from tests.fixtures.real_cluster import ApiError, RealCluster, epoch_seconds, two_versions

HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
DEPLOYMENT = ("apps/v1", "Deployment")
SERVICE = ("v1", "Service")
JOB = ("batch/v1", "Job")
ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute")
SCALEDOBJECT = ("keda.sh/v1alpha1", "ScaledObject")
CHILDREN = (DEPLOYMENT, SERVICE, HPA, ROUTE, JOB, SCALEDOBJECT)

pytestmark = pytest.mark.slow


def spec(**extra) -> dict:
    return two_versions(**extra)


def weights(real: RealCluster, ns: str, lm: str) -> dict[str, int]:
    route = real.get(*ROUTE, ns, lm) or {}
    rules = (route.get("spec") or {}).get("rules") or [{}]
    return {r["name"]: r.get("weight", 1) for r in rules[-1].get("backendRefs") or []}


def child_writes(real: RealCluster, ns: str, since: float) -> list[str]:
    return [w for w in real.writes(ns, since) if "languagemodels" not in w and "events" not in w]


def events(real: RealCluster, ns: str, lm: str) -> list[dict]:
    return [e for e in real.list("v1", "Event", ns) if e["involvedObject"].get("name") == lm]


def rolled_out(real: RealCluster, ns: str) -> bool:
    """Every Deployment's controller has caught up: its status is final (on a loaded machine
    the controller manager may still be updating it after the LanguageModel is Ready)."""
    for d in real.list(*DEPLOYMENT, ns):
        st, want = d.get("status") or {}, d["spec"].get("replicas", 1)
        if st.get("observedGeneration") != d["metadata"]["generation"] or not (
            st.get("replicas") == st.get("updatedReplicas") == st.get("readyReplicas")
            == st.get("availableReplicas") == want
        ):
            return False
    return True


def settle(real: RealCluster, ns: str, seconds: float = 3.0) -> float:
    """Wait until the Deployments rolled out and the operator sent nothing into `ns` for
    `seconds`; the time it went quiet."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mark = time.time()
        time.sleep(seconds)
        if not real.writes(ns, mark) and rolled_out(real, ns):
            return mark
    raise AssertionError(f"the operator kept writing: {real.writes(ns, time.time() - 5)}")


def serving(real: RealCluster, ns: str, lm: str, body: dict | None = None) -> dict:
    real.create_lm(ns, lm, body or spec())
    return real.wait_ready(ns, lm)


def test_create_converts_then_serves_with_owned_children(real: RealCluster, ns: str):
    lm = "chat"
    created = real.create_lm(ns, lm, spec())
    uid = created["metadata"]["uid"]
    jobs = real.wait(lambda: real.names(*JOB, ns) if len(real.names(*JOB, ns)) == 2 else None,
                     what="two conversion Jobs")
    assert all(j.startswith(("chat-v1-convert-", "chat-v2-convert-")) for j in jobs)
    st = real.wait_ready(ns, lm)

    # the Jobs really converted: the artifact is what `lmo convert` measured and wrote
    by_name = {v["name"]: v for v in st["versions"]}
    for v in ("v1", "v2"):
        art = by_name[v]["artifact"]
        assert art["precision"] == "fp32" and art["sizeBytes"] > 0 and art["score"] >= 0.99
        assert art["uri"] == f"pvc://lmo-artifacts/store/{art['key']}/"
        assert (real.pvc_root / "lmo-artifacts" / "store" / art["key"] / "manifest.json").is_file()
        assert any(j.endswith(art["key"][:8]) for j in jobs)
        assert by_name[v]["phase"] == "Ready" and by_name[v]["readyReplicas"] == 1

    want = {"chat-v1", "chat-v2"}
    assert real.names(*DEPLOYMENT, ns) == want
    assert real.names(*SERVICE, ns) == want
    assert real.names(*HPA, ns) == want
    assert real.names(*ROUTE, ns) == {"chat"}
    assert weights(real, ns, lm) == {"chat-v1": 90, "chat-v2": 10}
    for kind in (DEPLOYMENT, SERVICE, HPA, ROUTE, JOB):
        for obj in real.list(*kind, ns):
            (ref,) = obj["metadata"]["ownerReferences"]
            assert ref == {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "name": lm,
                           "uid": uid, "controller": True, "blockOwnerDeletion": True}

    assert [c["type"] for c in st["conditions"]] == ["Converted", "Deployed", "Routed", "Ready"]
    assert all(c["status"] == "True" for c in st["conditions"])
    assert st["trafficSummary"] == "v1=90,v2=10" and st["readyVersions"] == "2/2"
    from lmo.api import LanguageModelStatus

    LanguageModelStatus.model_validate(st)
    # `kubectl get lm` answers "is it up, what is routed where"
    table = real.kubectl("get", "lm", lm, "-n", ns).stdout.split("\n")
    assert table[0].split() == ["NAME", "TASK", "READY", "VERSIONS", "TRAFFIC", "ENDPOINT", "AGE"]
    assert table[1].split()[:6] == ["chat", "text-classification", "True", "2/2", "v1=90,v2=10",
                                    f"http://inference-gateway.gateways/{ns}/chat"]
    reasons = [e["reason"] for e in events(real, ns, lm)]
    assert reasons.count("VersionReady") == 2
    assert "reconcile failed" not in real.operator_log()


def test_a_reconcile_with_nothing_changed_writes_nothing(real: RealCluster, ns: str):
    lm = "idle"
    serving(real, ns, lm)
    mark = settle(real, ns)
    # a label change is no spec change (same generation): no reconcile needed, no write
    real.patch_lm(ns, lm, [{"op": "add", "path": "/metadata/labels", "value": {"team": "nlp"}}])
    # a person labels a child: its event wakes a full reconcile, which has nothing to do
    real.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{lm}-v1",
                 {"metadata": {"labels": {"team.example/owner": "nlp"}}},
                 "application/merge-patch+json")
    real.wait(lambda: any(e.get("verb") == "list" and (e.get("objectRef") or {}).get("namespace") == ns
                          for e in real.audit(time.time() - 1)) or None, what="a reconcile")
    settle(real, ns)
    assert child_writes(real, ns, mark) == []
    # nothing at all on the LanguageModel: no status, and no bookkeeping of Kopf's
    assert not any("languagemodels" in w for w in real.writes(ns, mark)), real.writes(ns, mark)


def test_a_new_languagemodel_costs_no_write_to_itself_but_its_status(real: RealCluster, ns: str):
    """Kopf's create/update handlers would store a diff base annotation after each creation
    and spec change (one more PATCH of the object, one more watch event): lmo's reconcile
    is level-based and needs none, so the only writes to a LanguageModel are its status."""
    lm = "lean"
    mark = time.time()
    serving(real, ns, lm)
    real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec/versions/0/traffic", "value": 50},
                           {"op": "replace", "path": "/spec/versions/1/traffic", "value": 50}])
    real.wait(lambda: weights(real, ns, lm) == {f"{lm}-v1": 50, f"{lm}-v2": 50}, 30, "50/50")
    settle(real, ns)
    own = [w for w in real.writes(ns, mark) if "languagemodels" in w]
    assert own and all(w == f"patch languagemodels/status/{lm}" for w in own), own
    assert not (real.lm(ns, lm)["metadata"].get("annotations") or {}), "no bookkeeping annotations"


def test_traffic_patch_moves_the_route_only(real: RealCluster, ns: str):
    lm = "shift"
    serving(real, ns, lm)
    for split in ((50, 50), (20, 80), (0, 100)):
        mark = settle(real, ns, 1.0)
        real.patch_lm(ns, lm, [
            {"op": "replace", "path": "/spec/versions/0/traffic", "value": split[0]},
            {"op": "replace", "path": "/spec/versions/1/traffic", "value": split[1]},
        ])
        want = {f"{lm}-v{i + 1}": w for i, w in enumerate(split) if w}
        real.wait(lambda: weights(real, ns, lm) == want, 30, f"route weights {want}")
        summary = f"v1={split[0]},v2={split[1]}"
        real.wait(lambda: real.status(ns, lm).get("trafficSummary") == summary, 30, summary)
        writes = child_writes(real, ns, mark)
        assert all(w.startswith("patch httproutes/") for w in writes), writes
    assert real.condition(ns, lm, "Ready")["status"] == "True"
    # the route moved on the event, never on a retry after a failed reconcile
    assert "reconcile failed" not in real.operator_log()


def test_header_ab_mirror_and_timeout_rules_are_accepted_by_the_real_schema(real: RealCluster, ns: str):
    lm = "ab"
    body = spec(routing={"parentRef": {"name": "gw"}, "abTest": {"header": "x-lmo-version"},
                         "mirror": {"version": "v2", "percent": 20}},
                protection={"timeout": "30s"})
    serving(real, ns, lm, body)
    rules = real.get(*ROUTE, ns, lm)["spec"]["rules"]
    assert all(r["timeouts"] == {"request": "30s"} for r in rules)  # standard since v1.2
    headers = [r["matches"][0]["headers"][0] for r in rules[:-1]]
    assert [(h["name"], h["value"]) for h in headers] == [("x-lmo-version", "v1"), ("x-lmo-version", "v2")]
    assert [r["backendRefs"][0]["name"] for r in rules[:-1]] == ["ab-v1", "ab-v2"]
    strip, mirror = rules[-1]["filters"]
    assert strip["urlRewrite"]["path"] == {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}
    assert mirror["type"] == "RequestMirror"
    assert mirror["requestMirror"]["backendRef"]["name"] == "ab-v2"
    assert mirror["requestMirror"]["percent"] == 20


def test_two_models_share_a_gateway_with_disjoint_routes(real: RealCluster, ns: str):
    """Two LanguageModels of one task on the same Gateway, no hostname: the real API server
    accepts both HTTPRoutes and each claims only its own path prefix, which it strips; the
    pods' only client port is the front's."""
    gateway = {"parentRef": {"name": "inference-gateway", "namespace": "gateways"}}
    one = {"task": "text-classification", "routing": gateway, "versions": [
        {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
         "optimize": {"precision": "fp32"}}]}
    for lm in ("emb-a", "emb-ab"):
        real.create_lm(ns, lm, one)
    prefixes = {}
    for lm in ("emb-a", "emb-ab"):
        st = real.wait_ready(ns, lm)
        assert st["endpoint"] == f"http://inference-gateway.gateways/{ns}/{lm}"
        rules = real.get(*ROUTE, ns, lm)["spec"]["rules"]
        prefixes[lm] = {m["path"]["value"] for r in rules for m in r["matches"]}
        assert all(m["path"]["type"] == "PathPrefix" for r in rules for m in r["matches"])
        assert all(r["filters"][0]["urlRewrite"]["path"]["replacePrefixMatch"] == "/"
                   for r in rules)
    assert prefixes == {"emb-a": {f"/{ns}/emb-a"}, "emb-ab": {f"/{ns}/emb-ab"}}
    pod = real.get(*DEPLOYMENT, ns, "emb-a-v1")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["triton", "front"]
    svc = real.get(*SERVICE, ns, "emb-a-v1")["spec"]["ports"]
    assert [(p["name"], p["targetPort"]) for p in svc] == [("http", "http"), ("metrics", "metrics")]
    # a model of its own host with a chat template: accepted as rendered
    chat = {"task": "text-generation", "routing": {**gateway, "hostname": "chat.example.com"},
            "chatTemplate": {"user": "Q: {content}\n"}, "versions": one["versions"]}
    real.request("POST", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels",
                 {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                  "metadata": {"name": "chat"}, "spec": chat}, params={"dryRun": "All"})
    with pytest.raises(ApiError, match="spec.chatTemplate is for task: text-generation"):
        real.request("POST", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels",
                     {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                      "metadata": {"name": "bad"}, "spec": {**one, "chatTemplate": {}}},
                     params={"dryRun": "All"})


NETPOL = ("networking.k8s.io/v1", "NetworkPolicy")
BTP = ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy")
SECPOL = ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy")
DR = ("networking.istio.io/v1", "DestinationRule")
AUTHZ = ("security.istio.io/v1", "AuthorizationPolicy")


def test_protection_policies_are_accepted_by_the_upstream_crds(real: RealCluster, ns: str):
    """Envoy Gateway v1.9 and Istio 1.30 policies, the NetworkPolicy and the queue policy,
    applied by the operator and accepted by the real server with the upstream CRDs."""
    lm = "guarded"
    real.create_secret(ns, "chat-keys", {"alice": "sk-alice"})
    body = spec(routing={"parentRef": {"name": "gw", "namespace": "gateways"},
                         "policies": "EnvoyGateway"},
                protection={"timeout": "30s",
                            "auth": {"apiKeys": {"secretRef": {"name": "chat-keys"}}},
                            "rateLimit": {"requestsPerSecond": 50, "perClient": True},
                            "circuitBreaker": {"maxPendingRequests": 64, "consecutiveErrors": 5,
                                               "ejectionTime": "30s"}},
                serving={"queue": {"maxSize": 64, "timeout": "2s"}})
    serving(real, ns, lm, body)
    settle(real, ns)  # the server's defaults in the policies (invert: false...) are no drift
    btp = real.get(*BTP, ns, lm)["spec"]
    assert btp["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
                                  "name": lm}]
    (rule,) = btp["rateLimit"]["local"]["rules"]
    assert rule["limit"] == {"requests": 50, "unit": "Second"}
    (header,) = rule["clientSelectors"][0]["headers"]  # the server adds invert: false
    assert (header["name"], header["type"]) == ("x-lmo-client", "Distinct")
    assert btp["circuitBreaker"]["maxPendingRequests"] == 64
    assert btp["healthCheck"]["passive"]["consecutive5XxErrors"] == 5
    sec = real.get(*SECPOL, ns, lm)["spec"]["apiKeyAuth"]
    assert sec["credentialRefs"][0]["name"] == "chat-keys" and sec["forwardClientIDHeader"] == "x-lmo-client"
    netpol = real.get(*NETPOL, ns, lm)["spec"]
    assert netpol["podSelector"]["matchLabels"]["lmo.dev/model"] == lm
    assert netpol["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateways"}}}]
    operator_peer = netpol["ingress"][1]["from"][0]
    assert operator_peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
    # the queue policy is in the served artifact's config.pbtxt (the conversion made it)
    deployment = real.get(*DEPLOYMENT, ns, f"{lm}-v1")
    key = deployment["spec"]["template"]["metadata"]["annotations"]["lmo.dev/artifact-key"]
    configs = [c.read_text() for c in real.pvc_root.glob(f"**/{key}/**/config.pbtxt")]
    assert any("default_queue_policy" in c and "max_queue_size: 64" in c
               and "default_timeout_microseconds: 2000000" in c for c in configs), configs
    # Istio instead: a DestinationRule per version and an AuthorizationPolicy; the Envoy
    # Gateway policies go
    istio = {**body, "routing": {"parentRef": {"name": "gw", "namespace": "gateways"},
                                 "policies": "Istio"},
             "protection": {"circuitBreaker": {"maxPendingRequests": 8, "consecutiveErrors": 3}}}
    real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec", "value": istio}])
    real.wait(lambda: real.names(*DR, ns) == {f"{lm}-v1", f"{lm}-v2"}, 30, "DestinationRules")
    real.wait(lambda: real.names(*BTP, ns) == set() and real.names(*SECPOL, ns) == set(), 30,
              "Envoy Gateway policies removed")
    dr = real.get(*DR, ns, f"{lm}-v1")["spec"]
    assert dr["host"] == f"{lm}-v1.{ns}.svc.cluster.local"
    assert dr["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 3
    assert dr["trafficPolicy"]["connectionPool"]["http"]["http1MaxPendingRequests"] == 8
    assert real.get(*AUTHZ, ns, lm)["spec"]["action"] == "ALLOW"
    # networkPolicy: false removes the NetworkPolicy and the AuthorizationPolicy
    real.patch_lm(ns, lm, [{"op": "add", "path": "/spec/routing/networkPolicy", "value": False}])
    real.wait(lambda: real.names(*NETPOL, ns) == set() and real.names(*AUTHZ, ns) == set(), 30,
              "NetworkPolicy and AuthorizationPolicy removed")


def test_a_missing_api_key_secret_is_a_readable_condition(real: RealCluster, ns: str):
    lm = "keyless"
    body = spec(routing={"policies": "EnvoyGateway"},
                protection={"auth": {"apiKeys": {"secretRef": {"name": "team-keys"}}}})
    real.create_lm(ns, lm, body)

    def ready_false() -> bool:  # once converted and deployed, the Secret is what is missing
        c = real.condition(ns, lm, "Ready") or {}
        return c.get("reason") == "SecretMissing"

    real.wait(ready_false, 120, "Ready=False SecretMissing")
    ready = real.condition(ns, lm, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SecretMissing"
    assert "spec.protection.auth.apiKeys.secretRef.name: Secret 'team-keys' not found" in ready["message"]
    assert "kubectl create secret generic team-keys" in ready["message"]
    assert real.get(*SECPOL, ns, lm) is not None  # the policy is there, waiting for its Secret
    # the Secret appears (seen at the next pass: a spec change here, else the resync)
    real.create_secret(ns, "team-keys", {"alice": "sk-team-alice"})
    real.patch_lm(ns, lm, [{"op": "add", "path": "/spec/protection/timeout", "value": "20s"}])
    real.wait_ready(ns, lm)


def test_what_a_gateway_cannot_do_is_refused_by_the_server(real: RealCluster, ns: str):
    for protection, routing, words in [
        ({"auth": {"apiKeys": {"secretRef": {"name": "k"}}}}, {}, "needs spec.routing.policies: EnvoyGateway"),
        ({"rateLimit": {"requestsPerSecond": 5}}, {"policies": "Istio"}, "rateLimit needs"),
        ({"circuitBreaker": {"consecutiveErrors": 2}}, {}, "EnvoyGateway or Istio"),
    ]:
        with pytest.raises(ApiError) as err:
            real.create_lm(ns, "refused", spec(protection=protection, routing=routing))
        assert err.value.status == 422 and words in str(err.value)


def test_keda_variant_makes_scaled_objects_instead_of_hpas(real: RealCluster, ns: str):
    lm = "keda"
    body = spec(autoscaling={"engine": "KEDA", "minReplicas": 1, "maxReplicas": 4},
                rollout={"strategy": "Manual", "analysis": {"prometheusUrl": "http://prometheus.monitoring:9090"}})
    serving(real, ns, lm, body)
    assert real.names(*SCALEDOBJECT, ns) == {"keda-v1", "keda-v2"}
    assert real.names(*HPA, ns) == set()
    so = real.get(*SCALEDOBJECT, ns, "keda-v1")
    assert so["spec"]["scaleTargetRef"]["name"] == "keda-v1"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 4)
    # switching back to HPA removes the ScaledObjects and makes HPAs
    real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec/autoscaling/engine", "value": "HPA"}])
    real.wait(lambda: real.names(*HPA, ns) == {"keda-v1", "keda-v2"}, 30, "HPAs")
    real.wait(lambda: real.names(*SCALEDOBJECT, ns) == set(), 30, "ScaledObjects removed")


def test_removing_a_version_deletes_its_children(real: RealCluster, ns: str):
    lm = "shrink"
    body = spec()
    serving(real, ns, lm, body)
    smaller = copy.deepcopy(body)
    smaller["versions"] = [dict(body["versions"][0], traffic=100)]
    real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec", "value": smaller}])
    real.wait(lambda: real.names(*DEPLOYMENT, ns) == {"shrink-v1"}, 30, "v2's Deployment deleted")
    real.wait(lambda: real.names(*SERVICE, ns) == {"shrink-v1"}, 30, "v2's Service deleted")
    real.wait(lambda: real.names(*HPA, ns) == {"shrink-v1"}, 30, "v2's HPA deleted")
    real.wait(lambda: weights(real, ns, lm) == {"shrink-v1": 100}, 30, "route to v1 only")
    real.wait(lambda: real.status(ns, lm).get("readyVersions") == "1/1", 30, "status 1/1")
    # the real garbage collector takes the ReplicaSets and pods along
    real.wait(lambda: not any(p["metadata"]["name"].startswith("shrink-v2-")
                              and "convert" not in p["metadata"]["name"]
                              for p in real.list("v1", "Pod", ns)), 60, "v2's pods gone")


def test_an_invalid_patch_is_refused_by_the_server_and_changes_nothing(real: RealCluster, ns: str):
    lm = "invalid"
    serving(real, ns, lm)
    before = real.lm(ns, lm)
    mark = settle(real, ns, 1.0)
    with pytest.raises(ApiError) as refused:
        real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec/versions/1/traffic", "value": 20}])
    assert refused.value.status == 422
    assert "traffic" in refused.value.message and "100" in refused.value.message
    with pytest.raises(ApiError) as refused:
        real.patch_lm(ns, lm, [{"op": "replace", "path": "/spec/versions/1/name", "value": "V_2"}])
    assert refused.value.status == 422
    after = real.lm(ns, lm)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    time.sleep(2)
    assert real.writes(ns, mark) == []
    assert weights(real, ns, lm) == {"invalid-v1": 90, "invalid-v2": 10}


def test_missing_secret_is_a_readable_condition_and_blocks_only_that_version(real: RealCluster, ns: str):
    lm = "secret"
    body = spec()
    body["versions"][1]["checkpoint"]["secretRef"] = {"name": "store-creds"}
    real.create_lm(ns, lm, body)
    real.wait(lambda: real.condition(ns, lm, "Converted").get("reason") == "SecretMissing", 60,
              "SecretMissing")
    cond = real.condition(ns, lm, "Converted")
    assert "spec.versions[1].checkpoint.secretRef.name" in cond["message"]
    assert "store-creds" in cond["message"] and "create it" in cond["message"]
    real.wait(lambda: real.names(*DEPLOYMENT, ns) == {"secret-v1"}, 60, "v1 served")
    assert not any(j.startswith("secret-v2-") for j in real.names(*JOB, ns))
    assert real.condition(ns, lm, "Ready")["status"] == "False"
    warnings = [e for e in events(real, ns, lm) if e["reason"] == "SecretMissing"]
    assert warnings and warnings[0]["type"] == "Warning"

    settle(real, ns)
    made = time.time()
    real.create_secret(ns, "store-creds")
    # nothing else changes: the operator looks for the missing Secret by name and converts
    # v2 once it appears (not at the next resync, 60 s later)
    real.wait(lambda: any(w.startswith("patch jobs/secret-v2-") for w in real.writes(ns, made)),
              30, "v2's conversion Job after the late Secret")
    (job,) = [ev for ev in real.audit(made) if ev.get("verb") == "patch"
              and (ev.get("objectRef") or {}).get("resource") == "jobs"
              and (ev.get("objectRef") or {}).get("namespace") == ns]
    print(f"\nlate Secret -> its conversion Job: {epoch_seconds(job['stageTimestamp']) - made:.2f} s")
    real.wait_ready(ns, lm)
    assert real.names(*DEPLOYMENT, ns) == {"secret-v1", "secret-v2"}


def test_operator_restart_writes_nothing_and_ready_stays(real: RealCluster, ns: str):
    lm = "restart"
    serving(real, ns, lm)
    settle(real, ns)
    before = real.status(ns, lm)
    real.stop_operator()
    mark = time.time()
    real.start_operator()
    # the new process lists this namespace's children when it resumes the LanguageModel
    real.wait(lambda: any(e.get("verb") == "list" and (e.get("objectRef") or {}).get("namespace") == ns
                          for e in real.audit(mark)) or None, 60, "the resumed reconcile")
    settle(real, ns)
    assert child_writes(real, ns, mark) == []
    after = real.status(ns, lm)
    assert not any("languagemodels/status" in w for w in real.writes(ns, mark)), (before, after)
    assert real.condition(ns, lm, "Ready")["status"] == "True"


def test_delete_lets_the_garbage_collector_remove_every_child(real: RealCluster, ns: str):
    lm = "gone"
    serving(real, ns, lm)
    assert not real.lm(ns, lm)["metadata"].get("finalizers")
    real.delete_lm(ns, lm)
    assert real.lm(ns, lm) is None  # no finalizer: deletion is never blocked by the operator
    for kind in CHILDREN:
        real.wait(lambda: real.names(*kind, ns) == set(), 60, f"{kind[1]}s collected")
    real.wait(lambda: real.list("v1", "Pod", ns) == [], 60, "pods collected")
    mark = time.time()
    time.sleep(2)
    assert real.writes(ns, mark) == []


def test_refused_conversion_keeps_serving_the_last_good_artifact(real: RealCluster, ns: str):
    lm = "gate"
    st = serving(real, ns, lm)
    old_key = {v["name"]: v for v in st["versions"]}["v2"]["artifact"]["key"]
    # a digest the checkpoint does not have: the real converter refuses the artifact
    real.patch_lm(ns, lm, [{"op": "add", "path": "/spec/versions/1/checkpoint/sha256", "value": "0" * 64}])
    real.wait(lambda: real.condition(ns, lm, "Converted").get("reason") in ("ConversionRefused", "ConversionFailed"),
              120, "the refusal reported")
    cond = real.condition(ns, lm, "Converted")
    assert "sha256" in cond["message"], cond
    assert real.condition(ns, lm, "Ready")["status"] == "False"
    v2 = {v["name"]: v for v in real.status(ns, lm)["versions"]}["v2"]
    assert v2["phase"] == "Failed" and v2["artifact"]["key"] == old_key  # still what is served
    dep = real.get(*DEPLOYMENT, ns, "gate-v2")
    assert dep["spec"]["template"]["metadata"]["annotations"]["lmo.dev/artifact-key"] == old_key
    assert weights(real, ns, lm) == {"gate-v1": 90, "gate-v2": 10}
    # the Job failed at once (exit 2 is final: the Job's podFailurePolicy), and is kept for its log
    (job,) = [j for j in real.list(*JOB, ns) if j["metadata"]["name"].startswith("gate-v2-convert-")
              and not j["metadata"]["name"].endswith(old_key[:8])]
    assert any(c["type"] == "Failed" and c["status"] == "True" for c in job["status"]["conditions"])
    settle(real, ns)
    (warning,) = [e for e in events(real, ns, lm) if e["reason"] == cond["reason"]]
    assert warning["type"] == "Warning" and warning["count"] == 1


def test_a_missing_checkpoint_fails_the_conversion_with_the_converters_words(real: RealCluster, ns: str):
    lm = "crash"
    real.create_lm(ns, lm, {"task": "text-classification", "versions": [
        {"name": "v1", "checkpoint": {"uri": "pvc://models/nowhere/"}, "optimize": {"precision": "fp32"}}]})
    real.wait(lambda: real.condition(ns, lm, "Converted").get("reason") in ("ConversionRefused", "ConversionFailed"),
              120, "the failure reported")
    assert "nowhere" in real.condition(ns, lm, "Converted")["message"]
    assert real.names(*DEPLOYMENT, ns) == set()
    assert any(j.startswith("crash-v1-convert-") for j in real.names(*JOB, ns))  # kept: its log explains


def test_the_operator_exports_its_metrics(real: RealCluster, ns: str):
    import requests

    serving(real, ns, "metered")
    text = requests.get(f"http://127.0.0.1:{real.metrics_port}/metrics", timeout=5).text
    assert f'lmo_languagemodel_ready{{name="metered",namespace="{ns}"}} 1.0' in text
    assert 'lmo_children_applied_total{kind="Deployment"}' in text
    assert (f'lmo_version_phase{{name="metered",namespace="{ns}",phase="Ready",version="v1"}} 1.0'
            in text)
    assert f'lmo_version_traffic_percent{{name="metered",namespace="{ns}",version="v2"}} 10.0' in text
    assert f'lmo_rollout_step{{name="metered",namespace="{ns}"}} 0.0' in text
    # the chart's alerts were installed next to the Prometheus Operator CRDs, and accepted
    rule = real.request("GET", "/apis/monitoring.coreos.com/v1/namespaces/lmo-system/prometheusrules/lmo")
    assert rule is not None
    assert "LmoConversionFailed" in [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_drift_in_a_child_is_corrected_with_one_apply(real: RealCluster, ns: str):
    lm = "drift"
    serving(real, ns, lm)
    mark = settle(real, ns)
    dep = real.get(*DEPLOYMENT, ns, "drift-v1")
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    # someone edits the Deployment by hand (a field lmo owns)
    real.request("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/drift-v1",
                 {"spec": {"revisionHistoryLimit": 9}}, "application/merge-patch+json")
    real.wait(lambda: real.get(*DEPLOYMENT, ns, "drift-v1")["spec"]["revisionHistoryLimit"] != 9, 60,
              "the operator restoring its field")
    settle(real, ns)
    assert child_writes(real, ns, mark) == ["patch deployments/drift-v1"]
    assert real.get(*DEPLOYMENT, ns, "drift-v1")["spec"]["template"]["spec"]["containers"][0]["image"] == image


def test_the_lease_is_renewed_in_the_leader_election_priority_level(real: RealCluster):
    """The chart's FlowSchema: the API server queues the operator's Lease requests in its
    `leader-election` priority level, the rest of the operator's requests where every
    ServiceAccount's go (`workload-low`), so a busy server does not delay the renewals
    behind the operator's own reads. The API server names the priority level that served a
    request in a response header."""
    import requests
    import yaml

    from tests.fixtures.real_cluster import OPERATOR_NS, RELEASE

    levels = {pl["metadata"]["uid"]: pl["metadata"]["name"] for pl in real.request(
        "GET", "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations")["items"]}
    token = yaml.safe_load(real.token_kubeconfig.read_text())["users"][0]["user"]["token"]
    s = requests.Session()
    s.trust_env = False
    s.verify = str(real.cp.pki.ca)
    s.headers["Authorization"] = f"Bearer {token}"

    def level(path: str) -> str:
        r = s.get(real.cp.url + path, timeout=30)
        assert r.status_code == 200, r.text
        return levels[r.headers["X-Kubernetes-PF-PriorityLevel-UID"]]

    lease = f"/apis/coordination.k8s.io/v1/namespaces/{OPERATOR_NS}/leases/{RELEASE}"
    assert level(lease) == "leader-election"
    assert level("/apis/lmo.dev/v1alpha1/languagemodels") == "workload-low"
