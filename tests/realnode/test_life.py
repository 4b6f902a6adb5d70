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


def test_a_language_model_served_by_real_pods(cluster):
    ns = cluster.namespace("life")
    folders = cluster.claims(ns, "models", "lmo-artifacts")
    tiny_checkpoints(folders["models"])
    started = time.monotonic()
    cluster.create_lm(ns, "sentiment", {
        "task": "text-classification",
        "versions": [{"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
                      "optimize": {"precision": "fp32"}}],
        "serving": {"image": cluster.images["triton"]},
    })

    # the conversion Job's pod ran the converter image; its Manifest reached status
    def converted():
        versions = cluster.status(ns, "sentiment").get("versions") or []
        art = (versions[0].get("artifact") or {}) if versions else {}
        return art if art.get("sizeBytes") else None
    art = cluster.wait(converted, 600, "the converter's manifest in status", ns, "sentiment")
    assert art["precision"] == "fp32" and art["score"] >= 0.99
    assert (folders["lmo-artifacts"] / "store" / art["key"] / "manifest.json").is_file()
    converter_pods = cluster.pods(ns, {"app.kubernetes.io/component": "converter"})
    assert [p["spec"]["containers"][0]["image"] for p in converter_pods] == \
        [cluster.images["converter"]]
    assert converter_pods[0]["status"]["phase"] == "Succeeded"

    # Triton pods Ready by their real probes, answering through the version Service
    cluster.wait_pods_ready(ns, {"lmo.dev/version": "v1", "app.kubernetes.io/component": "triton"},
                            600)
    svc = cluster.request("GET", f"/api/v1/namespaces/{ns}/services/sentiment-v1")
    ip = svc["spec"]["clusterIP"]
    client = tritonclient_http.InferenceServerClient(f"{ip}:8000")
    texts = ["I loved this film.", "Terrible service, never again."]
    result = cluster.wait(lambda: client.infer("text_classification", [_text_input(texts)]),
                          120, "an answer through the Service")
    cluster.timings["apply_to_first_answer_s"] = time.monotonic() - started
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]
    assert set(labels) <= {"NEGATIVE", "POSITIVE"} and len(labels) == 2

    # deleting the LanguageModel removes every pod
    cluster.request("DELETE", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels/sentiment")
    cluster.wait(lambda: not [p for p in cluster.pods(ns)], 180, "every pod gone", ns)
