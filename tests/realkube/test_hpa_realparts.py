"""The real HPA controller scales a version's Deployment on Triton's queue time.

Every part is real except the node: the `lmo operator` creates the version's Deployment and
its autoscaling/v2 HPA (metric QueueTime, target 50ms, 1..3 replicas); kube-controller-manager's
HPA controller reads the Pods metric `lmo_triton_queue_time_ms` from `custom.metrics.k8s.io`
through the kube-apiserver's aggregation layer; the APIService is served by
`tests.fixtures.metrics_adapter` (prometheus-adapter's job, run with the rules lmo documents,
`prometheus_adapter_rules()`) querying a real Prometheus that scrapes a real tritonserver.

The node is the kubelet stand-in: the Deployment's pods are objects only. The tritonserver
stands in for the first pod's container: Prometheus scrapes it with that pod's labels
(`namespace`, `pod`, `lmo_model`, `lmo_version`, what the chart's PodMonitor relabelling gives),
so the adapter's PromQL per pod finds it. Its model takes 50 ms a request on one instance, so
four clients make requests wait in Triton's queue. Pods added by the HPA have no server behind
them: the HPA controller treats them as pods without metrics (0 while scaling up, the target
while scaling down), as it does for pods not yet scraped.

The rules' rate window is 10s here (Prometheus scrapes every second) instead of 1m, so an idle
server reads idle in seconds; the queries are otherwise the documented ones. The session's
control plane serves aggregated APIs and its HPA controller syncs every 5s
(--horizontal-pod-autoscaler-sync-period; 15s by default): see tests/realkube/conftest.py.
"""

from __future__ import annotations

import textwrap
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.triton import triton_server_factory  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
DEPLOYMENT = ("apps/v1", "Deployment")
LM = "queue"
MODEL = "slow"
SERVICE_SECONDS = 0.05  # per request, one instance, no batching
CLIENTS = 4  # concurrent callers: three wait while one runs (~150 ms queue time)
WINDOW = "10s"

SLOW_MODEL = f'''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            time.sleep({SERVICE_SECONDS})
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", x.astype(np.float32))]))
        return out
'''


def slow_model(repo: Path) -> Path:
    from lmo_runtime.triton.config import ModelConfig, Tensor, write_config

    model_dir = repo / MODEL
    write_config(model_dir, ModelConfig(name=MODEL, backend="python",
                                        inputs=(Tensor("X", "FP32", (4,)),),
                                        outputs=(Tensor("Y", "FP32", (4,)),)))
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(SLOW_MODEL))
    return repo


class Load:
    """`clients` threads sending one request after another to the slow model."""

    def __init__(self, url: str, clients: int = CLIENTS):
        self.url = f"{url}/v2/models/{MODEL}/infer"
        self.clients = clients
        self.sent = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        body = {"inputs": [{"name": "X", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        with requests.Session() as s:
            while not self._stop.is_set():
                try:
                    r = s.post(self.url, json=body, timeout=30)
                    if r.status_code != 200:
                        self.failed.append(r.text[:200])
                except requests.RequestException as err:
                    self.failed.append(repr(err))
                with self._lock:
                    self.sent += 1

    def start(self) -> "Load":
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def milli(q: str) -> float:
    """A Kubernetes quantity as the HPA writes it ("152m", "3", "1500m") -> a float."""
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def condition(hpa: dict, type_: str) -> dict:
    return next((c for c in (hpa.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def queue_ms(hpa: dict) -> float | None:
    """The HPA controller's last reading of the version's queue time (ms per request)."""
    for m in (hpa.get("status") or {}).get("currentMetrics") or []:
        if m.get("type") == "Pods":
            return milli(m["pods"]["current"]["averageValue"])
    return None


def test_hpa_controller_scales_a_version_on_triton_queue_time(real: RealCluster, ns: str, tmp_path,
                                                              triton_server_factory):
    from lmo.builders.autoscaling import QUEUE_TIME_METRIC, prometheus_adapter_rules
    from tests.fixtures.metrics_adapter import CustomMetricsAdapter
    from tests.fixtures.prometheus import PrometheusServer, Target

    began = time.monotonic()
    real.create_lm(ns, LM, {
        "task": "text-classification",
        "versions": [{"name": "v1", "checkpoint": {"uri": "pvc://models/tiny-bert/"},
                      "optimize": {"precision": "fp32"}, "traffic": 100}],
        "routing": {"parentRef": {"name": "gw"}},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "metric": "QueueTime",
                        "target": "50ms"},
    })
    # the server starts while the operator's conversion Job runs
    server = triton_server_factory(slow_model(tmp_path / "repo"), [MODEL])
    real.wait_ready(ns, LM)
    ready = time.monotonic() - began
    name = f"{LM}-v1"
    hpa = real.get(*HPA, ns, name)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": QUEUE_TIME_METRIC},
        "target": {"type": "AverageValue", "averageValue": "50"}}}]
    (pod,) = real.list("v1", "Pod", ns, {"lmo.dev/model": LM, "lmo.dev/version": "v1"})

    target = Target(f"127.0.0.1:{server.metrics_port}", ns, LM, "v1", pod["metadata"]["name"])
    rules = prometheus_adapter_rules(window=WINDOW)["rules"]["custom"]
    with PrometheusServer([target]) as prom:
        adapter = CustomMetricsAdapter(real.cp, prom.url, rules).start()
        available = time.monotonic() - began
        try:
            # idle: the controller reads the metric (0 ms) and holds the minimum
            def read() -> dict | None:
                h = real.get(*HPA, ns, name)
                return h if condition(h, "ScalingActive").get("status") == "True" else None

            try:
                hpa = real.wait(read, 60, "the HPA controller reading the queue time")
            except AssertionError:
                raise AssertionError(f"HPA status: {real.get(*HPA, ns, name).get('status')}\n"
                                     f"adapter answered: {adapter.answered[-3:]}") from None
            assert condition(hpa, "ScalingActive")["reason"] == "ValidMetricFound"
            assert queue_ms(hpa) == 0.0
            assert real.get(*DEPLOYMENT, ns, name)["spec"]["replicas"] == 1

            # load: requests wait in Triton's queue; the controller scales the Deployment
            read_idle = time.monotonic() - began
            load = Load(server.url).start()
            started = time.monotonic()
            try:
                real.wait(lambda: real.get(*DEPLOYMENT, ns, name)["spec"]["replicas"] == 3, 120,
                          "the HPA controller scaling the Deployment to 3")
                scaled = time.monotonic() - started
                hpa = real.get(*HPA, ns, name)
                assert hpa["status"]["desiredReplicas"] == 3
                busy = max(queue_ms(hpa) or 0.0, *(
                    v for a in adapter.answered if a["metric"] == QUEUE_TIME_METRIC
                    for v in a["values"].values() if v))
                assert busy > 50, busy
                # the pods exist (the stand-in node runs them) and the operator reports them
                real.wait(lambda: len(real.list("v1", "Pod", ns, {"lmo.dev/version": "v1"})) == 3,
                          30, "three pods")
                real.wait(lambda: (real.status(ns, LM).get("versions") or [{}])[0]
                          .get("replicas") == 3, 60, "status.versions[0].replicas 3")
            finally:
                load.stop()
                stopped = time.monotonic()
            assert not load.failed, load.failed[:3]
            rescale = [e for e in real.list("v1", "Event", ns)
                       if e["involvedObject"].get("kind") == "HorizontalPodAutoscaler"
                       and e["reason"] == "SuccessfulRescale"]
            assert [e["message"] for e in rescale] == [
                f"New size: 3; reason: pods metric {QUEUE_TIME_METRIC} above target"]

            # idle again: the queue time reads 0, the controller would remove a pod, but the
            # operator's scale-down stabilisation (10 min) holds the replicas
            def stabilised() -> dict | None:
                h = real.get(*HPA, ns, name)
                return h if (queue_ms(h) == 0.0
                             and condition(h, "AbleToScale").get("reason") == "ScaleDownStabilized"
                             ) else None

            try:
                hpa = real.wait(stabilised, 90, "queue time 0 and scale-down held")
            except AssertionError:
                raise AssertionError(f"HPA status: {real.get(*HPA, ns, name).get('status')}\n"
                                     f"adapter answered: {adapter.answered[-3:]}") from None
            assert real.get(*DEPLOYMENT, ns, name)["spec"]["replicas"] == 3
            assert condition(hpa, "ScalingActive")["status"] == "True"
            print(f"\nLanguageModel Ready {ready:.1f}s, APIService Available {available:.1f}s, "
                  f"idle read {read_idle:.1f}s after create; load start -> Deployment at 3: "
                  f"{scaled:.1f}s; load stop -> scale-down held at queue time 0: "
                  f"{time.monotonic() - stopped:.1f}s; requests sent {load.sent}")
        finally:
            adapter.stop()
    assert not adapter.errors, adapter.errors[:3]
