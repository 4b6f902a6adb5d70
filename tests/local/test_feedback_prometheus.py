"""The `lmo up` front door's feedback counters (`GET /lmo/metrics`) scraped by a real
Prometheus answer the experiment's feedback queries exactly as the cluster's feedback model
does: the same metric names and labels, so the same PromQL (lmo.decide.outcomes.query_outcomes)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest
from aiohttp import web

from lmo.api import ExperimentOutcome
from lmo.decide.outcomes import query_outcomes
from lmo.decide.prometheus import Prometheus
from lmo.local.feedback import Feedback
from tests.fixtures.prometheus import PrometheusServer, prometheus_binary

pytestmark = pytest.mark.slow


@dataclass
class HonoringPrometheus(PrometheusServer):
    """One scrape job keeping the labels the target exports (`honor_labels`), as a scrape
    of the lmo up front door is configured: it labels its counters itself."""

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": "lmo-up", "honor_labels": True, "metrics_path": "/lmo/metrics",
                "scrape_interval": "1s", "scrape_timeout": "1s",
                "static_configs": [{"targets": [t.address for t in self.targets]}],
            }],
        }


class Door:
    """The front door's metrics route, served from a thread's own event loop."""

    def __init__(self, feedback: Feedback):
        self.feedback = feedback
        self.port = 0
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/lmo/metrics", self.feedback.serve_metrics)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self.ready.set()
        self.loop.run_forever()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_front_door_counters_answer_the_feedback_queries():
    if prometheus_binary() is None:
        pytest.fail("the prometheus binary is required by this test")
    from tests.fixtures.prometheus import Target

    fb = Feedback(namespace="default", model="sentiment", versions=["v1", "v2"])
    door = Door(fb)
    try:
        with HonoringPrometheus([Target(f"127.0.0.1:{door.port}", "", "", "")]) as prom:
            # reports arrive after the first scrape, so increase() sees all of them
            for i in range(40):
                fb.record({"requestId": fb.remember("v1"), "success": i % 4 == 0})
                fb.record({"requestId": fb.remember("v2"), "score": 0.5})
            client = Prometheus(prom.url)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = client.query('sum(lmo_feedback_samples_total{lmo_model="sentiment"})')
                if got and got[0][1] >= 80:
                    break
                time.sleep(0.3)
            time.sleep(2.5)
            counts = query_outcomes(prom.url, ExperimentOutcome(), "default", "sentiment",
                                    ["v1", "v2"], 300)
    finally:
        door.close()
    (n1, s1), (n2, s2) = counts["v1"], counts["v2"]
    # increase() never extrapolates a counter below its first sample of 0, but it extends the
    # last increase to the window's end by up to one scrape interval: a loaded machine that
    # scraped only a few times reads up to ~1.5x the count (both series by the same factor)
    assert 40 <= n1 <= 64 and 40 <= n2 <= 64, (n1, n2)
    assert s1 / n1 == pytest.approx(0.25, abs=0.02) and s2 / n2 == pytest.approx(0.5, abs=0.02)
