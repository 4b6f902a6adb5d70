"""The chart's Grafana dashboard: a ConfigMap the Grafana sidecar picks up, with a well-formed
dashboard whose every query is valid PromQL (promtool parses it); that the Triton panels
return series on a real Prometheus scraping real Triton is in tests/rollout/test_rollout_realparts.py."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.chart.test_alerts import PROMTOOL, groups  # noqa: F401  (promtool check)
from tests.chart.test_chart import CHART, helm

VARS = {"$namespace": ".*", "$model": ".*", "$version": ".*"}


def dashboard(k8s_tools, *args: str) -> tuple[dict, dict]:
    out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system", *args).stdout
    maps = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "ConfigMap"
            and "grafana_dashboard" in d["metadata"].get("labels", {})]
    if not maps:
        return {}, {}
    (cm,) = maps
    (text,) = cm["data"].values()
    return cm, json.loads(text)


def queries(dash: dict) -> list[tuple[str, str]]:
    """(panel title, query with the template variables filled in as 'all')."""
    out = []
    for p in dash["panels"]:
        for t in p["targets"]:
            q = t["expr"]
            for k, v in VARS.items():
                q = q.replace(k, v)
            out.append((p["title"], q))
    return out


def test_the_dashboard_is_a_labelled_configmap_and_can_be_turned_off(k8s_tools):
    cm, dash = dashboard(k8s_tools)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "lmo-system"
    assert dashboard(k8s_tools, "--set", "dashboard.enabled=false") == ({}, {})
    cm, _ = dashboard(k8s_tools, "--set", "dashboard.namespace=monitoring")
    assert cm["metadata"]["namespace"] == "monitoring"


def test_the_dashboard_is_well_formed(k8s_tools):
    _, dash = dashboard(k8s_tools)
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names == ["datasource", "namespace", "model", "version"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) == 10
    cells = set()
    for p in dash["panels"]:
        assert p["type"] == "timeseries" and p["datasource"]["uid"] == "${datasource}"
        g = p["gridPos"]
        cell = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & cell, f"{p['title']} overlaps another panel"
        cells |= cell
        assert all(t["refId"] and t["expr"] for t in p["targets"])
    titles = " ".join(p["title"] for p in dash["panels"])
    for words in ("Traffic share", "Requests per second", "Failed", "p50 / p99", "Queue time",
                  "Batch size", "Replicas", "Rollout step", "Payload records", "Input drift"):
        assert words in titles


def test_every_panel_query_is_valid_promql(k8s_tools, groups, tmp_path):  # noqa: F811
    _, dash = dashboard(k8s_tools)
    rules = [{"record": f"lmo:panel_{i}", "expr": q} for i, (_, q) in enumerate(queries(dash))]
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([PROMTOOL, "check", "rules", "panels.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
