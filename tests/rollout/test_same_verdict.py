"""One rule, two runtimes: the same Triton numbers give the same verdict and the same message
on the cluster (Prometheus scraping the servers, `lmo.decide.measure.analyse`) and under `lmo up`
(the controller reading the servers' /metrics, `Controller.analyse`).

Each version's /metrics is served in Triton's own exposition format, with numbers chosen so
the two latency statistics a runtime could take disagree: the candidate's p99 (Triton's
summary, which the chart and `lmo up` both turn on) is 150 ms, its mean request duration
20 ms. `maxLatencyP99Ms: 100` is a p99 gate, so both runtimes must fail the step, naming the
p99. A real server cannot be made to hold such numbers still; the scraping, the PromQL, the
parsing and the judging are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

from lmo.api import LanguageModel, RolloutStatus
from lmo.decide.measure import analyse
from lmo.decide.vocabulary import FAIL
from lmo.local.controller import Backend, Controller
from lmo.rollout import decide, desired_key, rollout_hash, VersionObservation
from tests.fixtures.prometheus import Target
from tests.rollout.test_metric_gates_real import until

pytestmark = pytest.mark.slow

NS, LM, ENTRY = "shop", "chat", "text_classification"


def exposition(success: int, failure: int, duration_us: int, queue_us: int, p99_us: int) -> str:
    """A Triton 2.51 /metrics page (the lines lmo reads) for one model."""
    labels = f'model="{ENTRY}",version="1"'
    return "\n".join([
        "# HELP nv_inference_request_success Number of successful inference requests",
        "# TYPE nv_inference_request_success counter",
        f"nv_inference_request_success{{{labels}}} {success}",
        "# HELP nv_inference_request_failure Number of failed inference requests",
        "# TYPE nv_inference_request_failure counter",
        f'nv_inference_request_failure{{model="{ENTRY}",reason="BACKEND",version="1"}} {failure}',
        "# HELP nv_inference_count Number of inferences performed",
        "# TYPE nv_inference_count counter",
        f"nv_inference_count{{{labels}}} {success}",
        "# HELP nv_inference_request_duration_us Cumulative inference request duration",
        "# TYPE nv_inference_request_duration_us counter",
        f"nv_inference_request_duration_us{{{labels}}} {duration_us}",
        "# HELP nv_inference_queue_duration_us Cumulative inference queuing duration",
        "# TYPE nv_inference_queue_duration_us counter",
        f"nv_inference_queue_duration_us{{{labels}}} {queue_us}",
        "# HELP nv_inference_request_summary_us Summary of inference request duration",
        "# TYPE nv_inference_request_summary_us summary",
        f"nv_inference_request_summary_us_count{{{labels}}} {success + failure}",
        f"nv_inference_request_summary_us_sum{{{labels}}} {duration_us}",
        f'nv_inference_request_summary_us{{model="{ENTRY}",quantile="0.5",version="1"}} '
        f"{p99_us // 8}",
        f'nv_inference_request_summary_us{{model="{ENTRY}",quantile="0.99",version="1"}} '
        f"{p99_us}",
        "",
    ])


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Page:
    """One server's /metrics (and a ready /v2/health/ready), its text set by the test."""

    def __init__(self, text: str) -> None:
        self.text = text

        def app(environ, start_response):
            body = (self.text if environ["PATH_INFO"] == "/metrics" else "").encode()
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
            return [body]

        self.server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pages():
    out = {"v1": Page(exposition(1000, 0, 10_000_000, 100_000, 12_000)),
           "v2": Page(exposition(0, 0, 0, 0, 150_000))}
    yield out
    for p in out.values():
        p.close()


def test_the_same_triton_numbers_give_the_same_verdict_and_message(pages, prometheus_factory):
    prom = prometheus_factory([Target(p.address, NS, LM, v) for v, p in pages.items()])
    lm = LanguageModel.model_validate({
        "apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
        "metadata": {"name": LM, "namespace": NS},
        "spec": {"task": "text-classification",
                 "versions": [{"name": v, "checkpoint": {"uri": f"s3://m/{v}/"}} | (
                     {"traffic": 100} if v == "v1" else {"traffic": 0}) for v in ("v1", "v2")],
                 "rollout": {"strategy": "Canary", "steps": [50], "stepDuration": "60s",
                             "analysis": {"prometheusUrl": prom.url, "minRequests": 20,
                                          "maxErrorRate": 0.05, "maxLatencyP99Ms": 100}}}})
    manifest = SimpleNamespace(summary=lambda uri: {"uri": uri, "key": "k"}, golden=None,
                               key="k" * 64, entry_model=ENTRY)
    controller = Controller(lm, backends={
        v: Backend(v, f"http://{p.address}", "", f"http://{p.address}/metrics",
                   SimpleNamespace(directory=None, spec_key="k", manifest=manifest))
        for v, p in pages.items()})
    start = datetime.now(timezone.utc)

    async def local_analysis():
        await controller.start(tick_seconds=3600)  # the loop's session; no further ticks
        try:
            controller.mark(await controller.snapshots(), start)  # the step starts
            # the step's traffic: the candidate answers 200 requests, p99 150 ms, mean 20 ms
            pages["v1"].text = exposition(1200, 0, 12_000_000, 120_000, 12_000)
            pages["v2"].text = exposition(200, 0, 4_000_000, 20_000, 150_000)
            for v in pages:
                await asyncio.to_thread(
                    until, prom.url,
                    f'nv_inference_request_success{{lmo_version="{v}"}}', lambda x: x >= 200)
            ro = SimpleNamespace(candidate="v2", stable="v1")
            return await controller.analyse(ro, start + timedelta(seconds=60))
        finally:
            await controller.stop()

    local = asyncio.run(local_analysis())
    cluster = analyse(lm.spec.rollout.analysis, NS, LM, "v2", "v1", 60.0)

    assert cluster.verdict == FAIL, cluster
    assert cluster.reasons == ["p99 latency 150.0ms > maxLatencyP99Ms 100"]
    assert (local.verdict, local.reasons) == (cluster.verdict, cluster.reasons)

    # and so the rollout says the same thing on both
    rollout = RolloutStatus(phase="Progressing", step=0, candidate="v2", stable="v1",
                            spec_hash=rollout_hash(lm.spec, "v1", "v2"),
                            step_started_at=(start - timedelta(minutes=5)).isoformat())
    seen = [VersionObservation(v, True, desired_key(lm.spec, v)) for v in ("v1", "v2")]

    def decided(result):
        d = decide(lm.spec, rollout, seen, start, analysis=result)
        return d.rollout.phase, d.rollout.message, d.events

    assert decided(local) == decided(cluster)
    assert decided(cluster)[0] == "RolledBack"
