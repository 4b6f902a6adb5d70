"""The chart's operator alerts and dashboard panels on a real Prometheus scraping the real
`lmo operator` (the real API server suite's process), while a canary really rolls back.

Each `lmo.operator` alert, its threshold taken off, answers with a series for the resource
(`LmoOperatorDown` answers nothing while the operator is scraped); the rolled-back alert
fires with its threshold on, which needs the rollback counter to exist at 0 before the
rollback (a counter that appears at 1 has no increase); every dashboard panel on the
operator's metrics answers too.
"""

from __future__ import annotations

import re
import time

import pytest
import yaml

from tests.fixtures.k8s_tools import k8s_tools  # noqa: F401  (session fixture)
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.real_cluster import RealCluster
from tests.fixtures.stub_prometheus import StubPrometheus
from tests.realkube.test_rollout_life import canary, rollout

pytestmark = pytest.mark.slow


class OperatorScrape(PrometheusServer):
    """Prometheus scraping the operator's /metrics, keeping its own namespace/name labels."""

    def __init__(self, address: str):
        super().__init__(targets=[])
        self.address = address

    def config(self) -> dict:
        return {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "lmo-operator", "honor_labels": True,
                                "scrape_interval": "1s", "scrape_timeout": "1s",
                                "static_configs": [{"targets": [self.address]}]}],
        }


def _series(client, promql: str, ns: str | None, timeout: float = 30.0) -> list[dict]:
    """The series `promql` answers (of namespace `ns` when given), waiting for scrapes."""
    deadline = time.monotonic() + timeout
    while True:
        found = [labels for labels, _ in client.query(promql)
                 if ns is None or labels.get("namespace") == ns]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_operator_alerts_and_panels_return_series_from_the_real_operator(
        real: RealCluster, ns: str, k8s_tools):
    from lmo.decide.prometheus import Prometheus
    from tests.chart.test_chart import CHART, helm
    from tests.chart.test_dashboard import dashboard, queries

    stub = StubPrometheus().start()
    try:
        with OperatorScrape(f"127.0.0.1:{real.metrics_port}") as prom:
            lm = "alerted"
            client = Prometheus(prom.url)
            # no candidate numbers yet: the step holds (inconclusive) until Prometheus has
            # scraped the rollback counter at 0, so increase() can see it go to 1 (a loaded
            # machine may miss scrapes around the first reconcile)
            stub.set(ns, lm, "v2", success=0, failure=0)
            stub.set(ns, lm, "v1", success=400, failure=0)
            body = canary(stub)
            body["rollout"]["analysis"]["inconclusiveLimit"] = 1000
            real.create_lm(ns, lm, body)
            real.wait(lambda: any(v == 0 for _, v in client.query(
                f'lmo_rollbacks_total{{namespace="{ns}",name="{lm}"}}')), 120,
                "the rollback counter scraped at 0")
            stub.set(ns, lm, "v2", success=60, failure=40)
            real.wait(lambda: rollout(real, ns, lm).get("phase") == "RolledBack", 120,
                      "rollout RolledBack")
            out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system",
                       "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").stdout
            (rule,) = [d for d in yaml.safe_load_all(out)
                       if d and d.get("kind") == "PrometheusRule"]
            (group,) = [g for g in rule["spec"]["groups"] if g["name"] == "lmo.operator"]
            for r in group["rules"]:
                expr = r["expr"].strip()
                if r["alert"] == "LmoOperatorDown":
                    # a scrape that timed out on the loaded machine leaves the series stale
                    # for a moment: absent() must go quiet once a scrape lands
                    deadline = time.monotonic() + 30
                    while client.query(expr) != [] and time.monotonic() < deadline:
                        time.sleep(0.5)
                    assert client.query(expr) == [], "absent() answers while scraped"
                    assert client.query("lmo_reconcile_total"), "the operator is scraped"
                    continue
                bare = re.sub(r"\s*(==|>|<)\s*[0-9.e+-]+\s*$", "", expr)
                assert bare != expr, r["alert"]
                assert _series(client, bare, ns), (r["alert"], bare)
            (rolled_back,) = [r for r in group["rules"] if r["alert"] == "LmoRolloutRolledBack"]
            fired = _series(client, rolled_back["expr"], ns)
            assert [(s["namespace"], s["name"]) for s in fired] == [(ns, lm)]
            _, dash = dashboard(k8s_tools)
            checked = 0
            for title, q in queries(dash):
                if "nv_inference" in q or "lmo_input" in q or "lmo_payloads" in q:
                    continue
                assert _series(client, q, None), (title, q)  # panels sum namespaces away
                checked += 1
            assert checked >= 2
    finally:
        stub.stop()
