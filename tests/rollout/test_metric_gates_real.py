"""Custom analysis gates (`analysis.metrics[]`) and experiment outcome queries, evaluated by
a real Prometheus scraping real counters and gauges (prometheus_client exporters labelled
per version as the chart's relabelling labels Triton pods)."""

from __future__ import annotations

import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from lmo.api import Analysis, ExperimentOutcome
from lmo.decide.judge import judge
from lmo.decide.measure import measure_gates
from lmo.decide.outcomes import query_outcomes
from lmo.decide.prometheus import fill, Prometheus
from lmo.decide.vocabulary import FAIL, PASS, VersionMetrics

pytestmark = pytest.mark.slow

NS, LM = "shop", "chat"


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class App:
    """One version's application metrics on a free port: a toxicity gauge and outcome
    counters, as an app would export them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.toxicity = Gauge("app_toxicity", "toxicity of answers", registry=self.registry)
        self.orders = Counter("shop_orders", "orders", registry=self.registry)
        self.sessions = Counter("shop_sessions", "sessions", registry=self.registry)
        self.server = make_server("127.0.0.1", 0, make_wsgi_app(self.registry),
                                  handler_class=_Quiet)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def counters_scraped(prom_url: str, apps: dict[str, "App"]) -> None:
    """Wait until Prometheus has every outcome counter of every app at its current value
    (each target is scraped on its own, and the module's tests add to the same counters)."""
    for v, app in apps.items():
        for name in ("shop_orders_total", "shop_sessions_total"):
            now_at = app.registry.get_sample_value(name)
            until(prom_url, f'{name}{{lmo_version="{v}"}}', lambda x, n=now_at: x >= n)


@pytest.fixture(scope="module")
def apps():
    out = {v: App() for v in ("v1", "v2")}
    yield out
    for a in out.values():
        a.close()


@pytest.fixture
def prom(apps, prometheus_factory):
    from tests.fixtures.prometheus import Target

    return prometheus_factory([Target(a.address, NS, LM, v) for v, a in apps.items()])


def until(prom_url: str, promql: str, predicate, timeout: float = 30.0) -> float:
    """Wait for a scrape to show the value (1 s scrapes); return it."""
    client = Prometheus(prom_url)
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        values = [v for _, v in client.query(promql)]
        value = sum(values) if values else None
        if value is not None and predicate(value):
            return value
        time.sleep(0.3)
    raise AssertionError(f"{promql} stayed at {value}")


def gates(**bounds) -> Analysis:
    return Analysis.model_validate({
        "prometheusUrl": "http://unused", "minRequests": 0,
        "metrics": [{"name": "toxicity", "query":
                     'max(max_over_time(app_toxicity{namespace="{{namespace}}",'
                     'lmo_model="{{name}}",lmo_version="{{version}}"}[{{window}}]))', **bounds}],
    })


HEALTHY = VersionMetrics(requests=100, failures=0, latency_ms=5.0, latency_is_p99=False,
                         queue_time_ms=0.1)


def verdict(prom_url: str, analysis: Analysis, window: float = 5.0):
    values = measure_gates(Prometheus(prom_url), analysis.metrics, NS, LM, "v2", "v1", window)
    return judge(analysis, "v2", HEALTHY, HEALTHY, window, None, values)


def test_custom_gates_judge_the_candidate_and_compare_with_the_stable(apps, prom):
    apps["v1"].toxicity.set(0.02)
    apps["v2"].toxicity.set(0.05)
    q = 'app_toxicity{lmo_version="v2"}'
    until(prom.url, q, lambda v: v == 0.05)
    until(prom.url, 'app_toxicity{lmo_version="v1"}', lambda v: v == 0.02)

    r = verdict(prom.url, gates(max=0.1, min=0.0))
    assert r.verdict == PASS, r
    assert r.measurements["toxicity"] == pytest.approx(0.05)
    assert "toxicity 0.05 <= max 0.1" in r.reasons

    r = verdict(prom.url, gates(maxIncreaseOverStable=0.02))
    assert r.verdict == FAIL
    assert r.measurements["stable_toxicity"] == pytest.approx(0.02)
    (why,) = r.reasons
    assert "toxicity 0.05 is +0.03 over the stable's 0.02 > maxIncreaseOverStable 0.02" in why

    apps["v2"].toxicity.set(0.3)
    until(prom.url, q, lambda v: v == 0.3)
    r = verdict(prom.url, gates(max=0.1))
    assert r.verdict == FAIL and r.reasons == ["toxicity 0.3 > max 0.1"]
    r = verdict(prom.url, gates(min=0.5))
    assert r.verdict == FAIL and r.reasons == ["toxicity 0.3 < min 0.5"]


def test_a_gate_that_cannot_be_measured_fails_saying_why(apps, prom):
    missing = Analysis.model_validate({"prometheusUrl": "http://unused", "metrics": [
        {"name": "latency_slo", "query": 'app_nothing{lmo_version="{{version}}"}', "max": 1}]})
    r = verdict(prom.url, missing)
    assert r.verdict == FAIL
    assert r.reasons == ["latency_slo: cannot be measured (its query returned no value)"]
    broken = Analysis.model_validate({"prometheusUrl": "http://unused", "metrics": [
        {"name": "typo", "query": "sum(rate(x[5m]", "max": 1}]})
    r = verdict(prom.url, broken)
    assert r.verdict == FAIL and "refused the query" in r.reasons[0]


def test_outcome_queries_count_each_version_over_the_window(apps, prom):
    apps["v1"].sessions.inc(200)
    apps["v1"].orders.inc(20)
    apps["v2"].sessions.inc(200)
    apps["v2"].orders.inc(50)
    counters_scraped(prom.url, apps)
    time.sleep(2.5)  # a few more scrapes, so increase() has points on both sides
    outcome = ExperimentOutcome(
        successQuery='sum(increase(shop_orders_total{lmo_version="{{version}}"}[{{window}}]))',
        totalQuery='sum(increase(shop_sessions_total{lmo_version="{{version}}"}[{{window}}]))',
    )
    counts = query_outcomes(prom.url, outcome, NS, LM, ["v1", "v2"], 600)
    (n1, s1), (n2, s2) = counts["v1"], counts["v2"]
    # increase() extends the last increase to the window's end by up to one scrape interval:
    # over few scrapes on a loaded machine that reads up to ~1.5x the 200 counted
    assert 150 <= n1 <= 300 and 150 <= n2 <= 300, (n1, n2)
    assert s2 / n2 == pytest.approx(0.25, abs=0.02) and s1 / n1 == pytest.approx(0.1, abs=0.02)


def test_placeholders_are_filled():
    q = fill('x{ns="{{namespace}}",m="{{name}}",v="{{version}}"}[{{window}}]', "a", "b", "v9", 90.2)
    assert q == 'x{ns="a",m="b",v="v9"}[91s]'


def test_lmo_up_runs_the_same_gates_and_outcome_queries(apps, prom):
    """The local controller's analysis (`Controller.analyse`) measures the custom gates and an
    Experiment's successQuery/totalQuery on the same Prometheus with the same functions."""
    import asyncio
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    import aiohttp

    from lmo.api import ExperimentStatus, parse
    from lmo.local.controller import Controller

    apps["v1"].toxicity.set(0.01)
    apps["v2"].toxicity.set(0.2)
    apps["v1"].sessions.inc(100)
    apps["v1"].orders.inc(10)
    apps["v2"].sessions.inc(100)
    apps["v2"].orders.inc(40)
    until(prom.url, 'app_toxicity{lmo_version="v2"}', lambda v: v == 0.2)
    counters_scraped(prom.url, apps)
    lm = parse({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                "metadata": {"name": LM, "namespace": NS}, "spec": {
                    "task": "text-classification",
                    "versions": [{"name": v, "checkpoint": {"uri": f"s3://m/{v}/"},
                                  "traffic": 50} for v in ("v1", "v2")],
                    "rollout": {"strategy": "Experiment", "analysis": {
                        "prometheusUrl": prom.url, "minRequests": 0,
                        "metrics": [{"name": "toxicity", "max": 0.1, "query":
                                     'max(app_toxicity{lmo_version="{{version}}"})'}]},
                        "experiment": {"outcome": {
                            "successQuery": 'sum(increase(shop_orders_total{lmo_version='
                                            '"{{version}}"}[{{window}}]))',
                            "totalQuery": 'sum(increase(shop_sessions_total{lmo_version='
                                          '"{{version}}"}[{{window}}]))'}}}}})
    controller = Controller(lm, backends={})
    now = datetime.now(timezone.utc)
    controller.experiment = ExperimentStatus(
        started_at=(now - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))

    async def analyse():
        controller._session = aiohttp.ClientSession()
        try:
            return await controller.analyse(SimpleNamespace(candidate="v2", stable="v1"), now)
        finally:
            await controller._session.close()

    r = asyncio.run(analyse())
    assert r.verdict == FAIL and "toxicity 0.2 > max 0.1" in r.reasons
    (n1, s1), (n2, s2) = r.outcomes["v1"], r.outcomes["v2"]
    assert n1 > 0 and n2 > 0 and s2 / n2 > s1 / n1
