"""lmo's own model metrics on real parts: a tiny BERT feature extractor converted by lmo and
served by the real tritonserver with payload logging to an unreachable s3:// sink, scraped by
a real Prometheus with the labels the chart gives Triton pods.

Every alert of the chart's `lmo.models` group (threshold taken off) and every dashboard
panel on lmo_* metrics answers with a series for the version, and `lmo status`'s cluster
numbers (rate, error ratio, p99 over the last minute) come back from the same Prometheus.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from lmo_runtime.convert import convert
from lmo_runtime.manifest import ConversionRequest
from lmo_runtime.triton.server import free_port, TritonServer
from tests.fixtures.artifacts import _tiny_bert
from tests.fixtures.prometheus import PrometheusServer, Target

pytestmark = pytest.mark.slow

NS, LM, VERSION = "ml", "embed", "v3"


@pytest.fixture(scope="module")
def scraped(minilm_path, artifact_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("model-metrics")
    ckpt = _tiny_bert(root / "ckpt", minilm_path, "mlm")
    request = ConversionRequest(checkpoint_uri=str(ckpt), task="feature-extraction",
                                precision="fp32", backend="python", min_score=0.0)
    convert(request, root / "artifact", cache_dir=artifact_cache, progress=False)
    env = {"LMO_PAYLOADS": json.dumps({"sampleRate": 1, "sink": "s3://payloads/x"}),
           "LMO_NAME": LM, "LMO_VERSION": VERSION,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nobody answers
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}
    with TritonServer(root / "artifact" / "model_repository", log_path=root / "triton.log",
                      env=env, extra_args=["--metrics-config=summary_latencies=true"]) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        tensor = httpclient.InferInput("TEXT", [2, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[b"an ordinary sentence"], [b"\xf0\x93\x80\x80"]],
                                            dtype=np.object_))
        target = Target(f"127.0.0.1:{server.metrics_port}", NS, LM, VERSION, f"{LM}-{VERSION}-0")
        with PrometheusServer([target]) as prom:
            for _ in range(10):  # requests spread over several scrapes
                client.infer("feature_extraction", [tensor])
                time.sleep(0.3)
            client.close()
            yield prom


def _query_until(client, promql: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        found = {labels.get("lmo_version") for labels, _ in client.query(promql)}
        if VERSION in found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_the_charts_model_alert_expressions_return_series(scraped, k8s_tools):
    import yaml

    from lmo.decide.prometheus import Prometheus
    from tests.chart.test_chart import CHART, helm

    out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system",
               "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "PrometheusRule"]
    (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "lmo.models"]
    client = Prometheus(scraped.url)
    assert len(group["rules"]) == 4
    for r in group["rules"]:
        bare = re.sub(r"\s*[<>]\s*[0-9.e+-]+\s*$", "", r["expr"].strip())
        assert bare != r["expr"].strip(), r["alert"]
        assert VERSION in _query_until(client, bare), (r["alert"], bare)
    # the failing sink is what the dropping alert sees: its rate is above zero
    dropping = group["rules"][0]["expr"]
    assert VERSION in _query_until(client, dropping), dropping


def test_the_charts_dashboard_model_panels_return_series(scraped, k8s_tools):
    from lmo.decide.prometheus import Prometheus
    from tests.chart.test_dashboard import dashboard, queries

    _, dash = dashboard(k8s_tools)
    client = Prometheus(scraped.url)
    checked = 0
    for title, q in queries(dash):
        if "lmo_payloads" not in q and "lmo_input" not in q:
            continue
        assert VERSION in _query_until(client, q), (title, q)
        checked += 1
    assert checked == 5


def test_lmo_status_cluster_numbers_come_from_prometheus(scraped):
    from lmo.commands import vitals

    numbers, why = vitals.cluster_last_minute(scraped.url, NS, LM, [VERSION, "v9"])
    assert why is None
    got = numbers[VERSION]
    assert got["requestsPerSecond"] > 0 and got["errorRatio"] == 0.0
    assert got["p99Ms"] > 0 and got["latencyIsP99"]
    # a version without traffic has no ratio or latency to show
    assert numbers["v9"]["errorRatio"] is None and numbers["v9"]["p99Ms"] is None
    lines = vitals.lines(numbers, [VERSION, "v9"])
    assert lines[1] == "v9  last 1m: 0.00 req/s  errors -  p99 -"
