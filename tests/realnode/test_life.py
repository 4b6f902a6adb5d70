"""A LanguageModel's life with real pods: the operator pod (chart, securityContext, RBAC), the
conversion Job pod running the converter image (its termination message reaching status),
Triton pods Ready by their real probes, answers through the version Service (kube-proxy),
and deletion removing every pod."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.http as tritonclient_http

from tests.fixtures.node_cluster import OPERATOR_NS
from tests.fixtures.real_cluster import tiny_checkpoints

pytestmark = pytest.mark.slow


def _text_input(texts):
    inp = tritonclient_http.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return inp


def test_operator_runs_as_a_pod_under_the_charts_security_context(cluster):
    pod = cluster.wait_pods_ready(OPERATOR_NS, {"app.kubernetes.io/name": "lmo"}, 60)[0]
    spec = pod["spec"]
    container = spec["containers"][0]
    assert container["image"].startswith(cluster.node.registry + "/lmo-dev/lmo-operator:")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    # the process really runs as the chart's uid, not root
    out = cluster.kubectl("exec", "-n", OPERATOR_NS, pod["metadata"]["name"], "--",
                          "python", "-c", "import os; print(os.getuid())").stdout
    assert out.strip() == str(spec["securityContext"]["runAsUser"])


def _labels_and_scores(client, texts):
    result = client.infer("text_classification", [_text_input(texts)])
    return ([x.decode() for x in result.as_numpy("LABEL").reshape(-1)],
            [round(float(x), 4) for x in result.as_numpy("SCORE").reshape(-1)])


def test_a_language_model_served_by_real_pods(cluster):
    ns = cluster.namespace("life")
    folders = cluster.claims(ns, "models", "lmo-artifacts")
    tiny_checkpoints(folders["models"])
    cluster.own(folders["models"])
    started = time.monotonic()
    cluster.create_lm(ns, "sentiment", {
        "task": "text-classification",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
             "optimize": {"precision": "fp32"}, "traffic": 100},
            {"name": "v2", "checkpoint": {"uri": "pvc://models/tiny-bert-v2/"},
             "optimize": {"precision": "fp32"}, "traffic": 0},
        ],
        "routing": {"provider": "Service"},
        # two versions' pods on one 2-CPU node: below the default request of one CPU each
        "serving": {"image": cluster.images["triton-cpu"], "backend": "python",
                    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}}},
    })

    # each conversion Job's pod ran the converter image; its Manifest (the termination
    # message) reached status
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
        assert (folders["lmo-artifacts"] / "store" / art["key"] / "manifest.json").is_file()
    assert {image for image, _ in seen.values()} == {cluster.images["converter"]}, seen

    # Triton pods Ready by their real probes; answers through each version's Service and
    # through the provider Service (kube-proxy's iptables rules, from the host)
    for v in ("v1", "v2"):
        cluster.wait_pods_ready(ns, {"lmo.dev/version": v, "app.kubernetes.io/component": "triton"},
                                600)
    texts = ["I loved this film.", "Terrible service, never again.", "It was fine."]

    def client(service):
        ip = cluster.request("GET", f"/api/v1/namespaces/{ns}/services/{service}")["spec"]["clusterIP"]
        return tritonclient_http.InferenceServerClient(f"{ip}:8000")
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
    provider = client("sentiment")
    first = answer("sentiment")
    cluster.timings["apply_to_first_answer_s"] = time.monotonic() - started
    v1, v2 = (answer(f"sentiment-{v}") for v in ("v1", "v2"))
    assert {label.lower() for label in first[0]} <= {"negative", "positive"}
    assert v1[1] != v2[1], "the two checkpoints should score differently"
    assert first == v1

    # a traffic change moves which version answers
    cluster.patch_lm(ns, "sentiment", {"spec": {"versions": [
        {"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
         "optimize": {"precision": "fp32"}, "traffic": 0},
        {"name": "v2", "checkpoint": {"uri": "pvc://models/tiny-bert-v2/"},
         "optimize": {"precision": "fp32"}, "traffic": 100},
    ]}})

    def moved():
        try:
            answers = {tuple(map(tuple, _labels_and_scores(provider, texts))) for _ in range(5)}
        except Exception:  # noqa: BLE001 - a connection cut while endpoints change
            return None
        return answers == {tuple(map(tuple, v2))}
    cluster.wait(moved, 600, "v2 answering through the provider Service", ns, "sentiment")

    # deleting the LanguageModel removes every pod
    cluster.request("DELETE", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels/sentiment")
    cluster.wait(lambda: not [p for p in cluster.pods(ns)], 180, "every pod gone", ns)
