"""A LanguageModel's life with real pods: the operator pods (chart, securityContext, RBAC, one
active replica by its Lease), the conversion Job pods running the converter image (a checkpoint
read from s3:// on a moto server on the host, artifacts written there; the termination message
reaching status), Triton pods pulling their model from s3:// and Ready by their real probes,
answers through the version Services (kube-proxy), payload records in `kubectl logs`, a
traffic change, a canary judged on a real Prometheus scraping the Triton pods that promotes,
a bad one that rolls back, and deletion removing every pod."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import boto3
import numpy as np
import pytest
import requests
import tritonclient.http as tritonclient_http

from tests.fixtures.node_cluster import OPERATOR_NS
from tests.fixtures.real_cluster import tiny_checkpoints

pytestmark = pytest.mark.slow
BUCKET = "lmo-store"


def _text_input(texts):
    inp = tritonclient_http.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return inp


def test_operator_runs_as_a_pod_under_the_charts_security_context(cluster):
    pods = cluster.wait_pods_ready(OPERATOR_NS, {"app.kubernetes.io/name": "lmo"}, 60)
    assert len(pods) == 2, "the chart runs two operator replicas by default"
    pod = pods[0]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"].startswith(cluster.node.registry + "/lmo-dev/lmo-operator:")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    # the process really runs as the chart's uid, not root
    out = cluster.kubectl("exec", "-n", OPERATOR_NS, pod["metadata"]["name"], "--",
                          "python", "-c", "import os; print(os.getuid())").stdout
    assert out.strip() == str(spec["securityContext"]["runAsUser"])

    # one replica is active, the holder of the Lease; the other waits for it
    leader, standby = cluster.operator_roles()
    assert {leader, standby} == {p["metadata"]["name"] for p in pods}
    standby_log = cluster.kubectl("logs", "-n", OPERATOR_NS, standby).stdout
    assert "waiting for Lease" in standby_log
    assert "acquired Lease" not in standby_log and "created Lease" not in standby_log


def _labels_and_scores(client, texts):
    result = client.infer("text_classification", [_text_input(texts)])
    return ([x.decode() for x in result.as_numpy("LABEL").reshape(-1)],
            [round(float(x), 4) for x in result.as_numpy("SCORE").reshape(-1)])


def _put_folder(s3, folder: Path, prefix: str) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            s3.upload_file(str(f), BUCKET, f"{prefix}/{f.relative_to(folder).as_posix()}")


def _fresh(address, texts):
    """Labels and scores from a new connection: kube-proxy balances a Service's connections,
    not its requests, so each new connection is a new draw among the Service's pods."""
    client = tritonclient_http.InferenceServerClient(address)
    try:
        return _labels_and_scores(client, texts)
    finally:
        client.close()


class Load:
    """Requests through one Service from a thread until stopped, each on a new connection
    (as from many clients): the traffic a canary is judged on. Refused connections while
    pods roll are retried, not counted."""

    def __init__(self, url: str, texts: list[str]) -> None:
        self.url, self.texts = url, texts
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                _fresh(self.url, self.texts)
                self.answers += 1
            except Exception:  # noqa: BLE001 - a connection cut while endpoints change
                self._stop.wait(0.2)
            self._stop.wait(0.1)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_language_model_served_by_real_pods(cluster):
    ns = cluster.namespace("life")
    folders = cluster.claims(ns, "models")
    tiny_checkpoints(folders["models"])
    cluster.own(folders["models"])
    # an s3:// store on the host (moto): v2's checkpoint, and the artifacts of both versions
    aws = cluster.s3()
    s3 = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], region_name=aws["AWS_REGION"],
                      aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"])
    s3.create_bucket(Bucket=BUCKET)
    _put_folder(s3, folders["models"] / "tiny-bert-v2", "checkpoints/tiny-bert-v2")
    cluster.secret(ns, "store", aws)
    prometheus = cluster.prometheus()
    v1 = {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
          "optimize": {"precision": "fp32"}}
    v2 = {"name": "v2", "checkpoint": {"uri": f"s3://{BUCKET}/checkpoints/tiny-bert-v2/",
                                       "secretRef": {"name": "store"}},
          "optimize": {"precision": "fp32"}}
    started = time.monotonic()
    cluster.create_lm(ns, "sentiment", {
        "task": "text-classification",
        "versions": [{**v1, "traffic": 100}, {**v2, "traffic": 0}],
        "artifacts": {"uri": f"s3://{BUCKET}/artifacts", "secretRef": {"name": "store"}},
        "routing": {"provider": "Service"},
        "logging": {"payloads": {"sampleRate": 1.0, "sink": "stdout"}},
        # two versions' pods on one 2-CPU node: below the default request of one CPU each
        "serving": {"image": cluster.images["triton-cpu"], "backend": "python",
                    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
    })

    # each conversion Job's pod ran the converter image; its Manifest (the termination
    # message) reached status, the artifact is in the s3:// store
    seen = {}  # converter pods as they run (the operator removes finished Jobs)

    def converted():
        for pod in cluster.pods(ns, {"app.kubernetes.io/component": "converter"}):
            seen[pod["metadata"]["name"]] = (pod["spec"]["containers"][0]["image"],
                                             pod["status"].get("phase"))
        versions = cluster.status(ns, "sentiment").get("versions") or []
        arts = [v.get("artifact") or {} for v in versions]
        return arts if len(arts) == 2 and all(a.get("sizeBytes") for a in arts) else None
    for art in cluster.wait(converted, 900, "the converters' manifests in status", ns,
                            "sentiment"):
        assert art["precision"] == "fp32" and art["score"] >= 0.99
        assert art["uri"].rstrip("/") == f"s3://{BUCKET}/artifacts/{art['key']}"
        s3.head_object(Bucket=BUCKET, Key=f"artifacts/{art['key']}/manifest.json")
    assert {image for image, _ in seen.values()} == {cluster.images["converter"]}, seen
    cluster.timings["apply_to_converted_s"] = time.monotonic() - started

    # Triton pods Ready by their real probes, their model pulled from s3:// by the init
    # container; answers through each version's Service and through the provider Service
    # (kube-proxy's iptables rules, from the host)
    pods = {}
    for v in ("v1", "v2"):
        pods[v] = cluster.wait_pods_ready(
            ns, {"lmo.dev/version": v, "app.kubernetes.io/component": "triton"}, 600)[0]
        pull = pods[v]["status"]["initContainerStatuses"][0]
        assert pull["name"] == "pull-model" and pull["image"] == cluster.images["converter"]
        assert pull["state"]["terminated"]["exitCode"] == 0, pull
    texts = ["I loved this film.", "Terrible service, never again.", "It was fine."]

    def address(service):
        ip = cluster.request("GET", f"/api/v1/namespaces/{ns}/services/{service}")["spec"]["clusterIP"]
        return f"{ip}:8000"

    def client(service):
        return tritonclient_http.InferenceServerClient(address(service))

    def answer(service):
        # a Service answers once kube-proxy has its ready endpoints; until then its ClusterIP
        # refuses connections (iptables REJECT for a Service without endpoints)
        def answered():
            try:
                return _labels_and_scores(client(service), texts)
            except ConnectionError:
                return None
        return cluster.wait(answered, 120, f"an answer through Service {service}", ns,
                            "sentiment")
    first = answer("sentiment")
    cluster.timings["apply_to_first_answer_s"] = time.monotonic() - started
    a1, a2 = (answer(f"sentiment-{v}") for v in ("v1", "v2"))
    assert {label.lower() for label in first[0]} <= {"negative", "positive"}
    assert a1[1] != a2[1], "the two checkpoints should score differently"
    assert first == a1

    # payload records (spec.logging.payloads, sink stdout) in the Triton container's log
    request_id = f"payload-{uuid.uuid4().hex[:8]}"
    client("sentiment-v1").infer("text_classification", [_text_input(["Logged, this one."])],
                                 request_id=request_id)

    def logged():
        out = cluster.kubectl("logs", "-n", ns, pods["v1"]["metadata"]["name"], "-c",
                              "triton").stdout
        records = [json.loads(line[line.index("{"):]) for line in out.splitlines()
                   if '"lmo_payload"' in line]
        return [r for r in records if r.get("requestId") == request_id]
    record = cluster.wait(logged, 60, f"payload record {request_id} in kubectl logs", ns)[0]
    assert (record["model"], record["version"], record["task"]) == \
        ("sentiment", "v1", "text-classification"), record
    assert record["input"] == "Logged, this one." and record["error"] is None, record
    assert record["output"]["label"].lower() in {"negative", "positive"}, record

    # a traffic change moves which version answers
    cluster.patch_lm(ns, "sentiment", {"spec": {"versions": [
        {**v1, "traffic": 0}, {**v2, "traffic": 100}]}})

    def only(scores):
        def answering():
            try:
                answers = {tuple(map(tuple, _fresh(address("sentiment"), texts)))
                           for _ in range(8)}
            except Exception:  # noqa: BLE001 - a connection cut while endpoints change
                return None
            return answers == {tuple(map(tuple, scores))}
        return answering
    cluster.wait(only(a2), 600, "v2 answering through the provider Service", ns, "sentiment")

    # a canary judged on Prometheus' numbers of the Triton pods: v1 over v2 (stable: the most
    # traffic) passes its gates and takes all traffic
    def rollout(max_p99_ms):
        # a step holds while the candidate's pod rolls into the provider Service (its
        # lmo.dev/routed label) and has served too few requests: on a loaded machine that
        # can take more than the default three holds
        return {"strategy": "Canary", "steps": [50], "stepDuration": "20s",
                "analysis": {"prometheusUrl": prometheus.url, "minRequests": 10,
                             "inconclusiveLimit": 10, "maxErrorRate": 0.01,
                             "maxLatencyP99Ms": max_p99_ms}}

    def phase(wanted):
        def reached():
            ro = cluster.status(ns, "sentiment").get("rollout") or {}
            return ro if ro.get("phase") == wanted else None
        return reached
    canaries = time.monotonic()
    with Load(address("sentiment"), texts) as load:
        t = time.monotonic()
        cluster.patch_lm(ns, "sentiment", {"spec": {
            "versions": [{**v2, "traffic": 100}, {**v1, "traffic": 0}],
            "rollout": rollout(10_000)}})
        ro = cluster.wait(phase("Succeeded"), 600, "the canary of v1 promoted", ns, "sentiment")
        cluster.timings["canary_promote_s"] = time.monotonic() - t
        assert ro["stable"] == "v1" and ro["previous"] == "v2", ro
        judged = ro["lastAnalysis"]
        assert judged["verdict"] == "pass", judged
        assert judged["measurements"]["requests"] >= 10, judged
        assert judged["measurements"]["latency_p99_ms"] > 0, judged
        # the chart's PodMonitor relabelling gave Triton's series the labels lmo queries
        series = prometheus_query(prometheus.url, "nv_inference_request_success"
                                  f'{{namespace="{ns}",lmo_model="sentiment"}}')
        assert {s["metric"]["lmo_version"] for s in series} >= {"v1", "v2"}, series
        cluster.wait(only(a1), 300, "v1 answering alone after the promotion", ns, "sentiment")

        # a canary that cannot meet its latency gate (no BERT answer takes 10 microseconds)
        # rolls back: all traffic stays with v1
        t = time.monotonic()
        cluster.patch_lm(ns, "sentiment", {"spec": {
            "versions": [{**v1, "traffic": 100}, {**v2, "traffic": 0}],
            "rollout": rollout(0.01)}})
        ro = cluster.wait(phase("RolledBack"), 600, "the canary of v2 rolled back", ns,
                          "sentiment")
        cluster.timings["canary_rollback_s"] = time.monotonic() - t
        assert (ro["candidate"], ro["stable"]) == ("v2", "v1"), ro
        assert ro["lastAnalysis"]["verdict"] == "fail", ro
        assert "maxLatencyP99Ms 0.01" in ro["message"], ro["message"]
        cluster.wait(only(a1), 300, "v1 answering alone after the rollback", ns, "sentiment")
        assert load.answers > 0
    cluster.timings["both_canaries_s"] = time.monotonic() - canaries
    events = cluster.request("GET", f"/api/v1/namespaces/{ns}/events")["items"]
    assert {"RolloutSucceeded", "RolloutRolledBack"} <= {e["reason"] for e in events}

    # only the Lease holder acted on the LanguageModel
    leader, standby = cluster.operator_roles()
    logs = {pod: cluster.kubectl("logs", "-n", OPERATOR_NS, pod).stdout
            for pod in (leader, standby)}
    assert "sentiment" in logs[leader] and "sentiment" not in logs[standby]

    # deleting the LanguageModel removes every pod
    cluster.request("DELETE", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels/sentiment")
    cluster.wait(lambda: not [p for p in cluster.pods(ns)], 180, "every pod gone", ns)


def prometheus_query(url: str, promql: str) -> list[dict]:
    body = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]
