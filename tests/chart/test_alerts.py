"""The chart's PrometheusRule, judged by Prometheus's own `promtool`.

`promtool check rules` parses every expression and annotation template; `promtool test rules`
runs each alert on synthetic series: it fires on the series that should wake someone, with
the labels the runbooks use, and stays quiet on healthy ones. (That the real API server
accepts the object is proven in tests/realkube, where helm installs it next to the
Prometheus Operator CRDs.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.chart.test_chart import CHART, helm

PROMTOOL = shutil.which("promtool")


@pytest.fixture(scope="module")
def groups(k8s_tools) -> list[dict]:
    if PROMTOOL is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian's prometheus package ships it: make prometheus)")
        pytest.skip("promtool is missing: apt-get install -y prometheus (make prometheus)")
    out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system",
               "--api-versions", "monitoring.coreos.com/v1/PrometheusRule").stdout
    (rule,) = [d for d in yaml.safe_load_all(out) if d and d.get("kind") == "PrometheusRule"]
    return rule["spec"]["groups"]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_without_the_prometheus_operator_api_no_rule_is_rendered(k8s_tools):
    out = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system").stdout
    assert "PrometheusRule" not in out  # helm install would fail on a cluster without the CRD


def test_every_expression_and_template_parses(groups, tmp_path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    result = promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = [r["alert"] for g in groups for r in g["rules"]]
    assert alerts == ["LmoOperatorDown", "LmoLanguageModelNotReady", "LmoConversionFailed",
                      "LmoRolloutRolledBack", "LmoHighErrorRatio", "LmoHighLatencyP99",
                      "LmoHighQueueTime", "LmoPayloadLogsDropping", "LmoInputLengthDrift",
                      "LmoInputUnknownTokens", "LmoEmbeddingDrift"]
    for g in groups:
        for r in g["rules"]:
            assert {"summary", "description", "runbook"} <= set(r["annotations"]), r["alert"]


TRITON = 'namespace="ml",lmo_model="chat",lmo_version="v2",model="entry"'
# Triton 2.51 labels failures with their reason: an expression adding failures to successes
# series by series matches nothing (it did, until the real-Prometheus test caught it)
FAILED = TRITON + ',reason="BACKEND"'
CASES = [
    # (alert, input series, eval time, expected labels or None for "must not fire")
    ("LmoOperatorDown", [("up", "1x20")], "10m", {"severity": "critical"}),
    ("LmoOperatorDown", [('lmo_reconcile_total{result="ready"}', "1+1x20")], "10m", None),
    ("LmoLanguageModelNotReady", [('lmo_languagemodel_ready{namespace="ml",name="chat"}', "0x40")], "30m",
     {"severity": "warning", "namespace": "ml", "name": "chat"}),
    ("LmoLanguageModelNotReady", [('lmo_languagemodel_ready{namespace="ml",name="chat"}', "1x40")], "30m", None),
    ("LmoConversionFailed",
     [('lmo_version_phase{namespace="ml",name="chat",version="v2",phase="Failed"}', "1x10")], "5m",
     {"severity": "warning", "namespace": "ml", "name": "chat", "version": "v2"}),
    ("LmoConversionFailed",
     [('lmo_version_phase{namespace="ml",name="chat",version="v2",phase="Failed"}', "0x10")], "5m", None),
    ("LmoRolloutRolledBack", [('lmo_rollbacks_total{namespace="ml",name="chat"}', "0 0 0 1 1 1")], "5m",
     {"severity": "warning", "namespace": "ml", "name": "chat"}),
    ("LmoHighErrorRatio",
     [(f"nv_inference_request_success{{{TRITON}}}", "0+90x30"), (f"nv_inference_request_failure{{{FAILED}}}", "0+10x30")],
     "25m", {"severity": "critical", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoHighErrorRatio",
     [(f"nv_inference_request_success{{{TRITON}}}", "0+99x30"), (f"nv_inference_request_failure{{{FAILED}}}", "0+1x30")],
     "25m", None),
    ("LmoHighLatencyP99",
     [(f'nv_inference_request_summary_us{{{TRITON},quantile="0.99"}}', "2000000x30")], "25m",
     {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoHighLatencyP99",
     [(f'nv_inference_request_summary_us{{{TRITON},quantile="0.99"}}', "20000x30")], "25m", None),
    ("LmoHighQueueTime",
     [(f"nv_inference_queue_duration_us{{{TRITON}}}", "0+3000000x30"), (f"nv_inference_count{{{TRITON}}}", "0+10x30")],
     "25m", {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoHighQueueTime",
     [(f"nv_inference_queue_duration_us{{{TRITON}}}", "0+30000x30"), (f"nv_inference_count{{{TRITON}}}", "0+10x30")],
     "25m", None),
    ("LmoPayloadLogsDropping",
     [(f'lmo_payloads_dropped_total{{{TRITON},reason="sink_error"}}', "0+5x30"),
      (f'lmo_payloads_dropped_total{{{TRITON},reason="queue_full"}}', "0x30")],
     "25m", {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoPayloadLogsDropping",
     [(f'lmo_payloads_dropped_total{{{TRITON},reason="sink_error"}}', "0x30")], "25m", None),
    # reference 14 tokens/text; now 40 tokens/text (10 texts/min, 400 tokens/min)
    ("LmoInputLengthDrift",
     [(f"lmo_input_tokens_sum{{{TRITON}}}", "0+400x90"), (f"lmo_input_tokens_count{{{TRITON}}}", "0+10x90"),
      (f"lmo_input_reference_tokens_mean{{{TRITON}}}", "14x90")],
     "80m", {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoInputLengthDrift",  # 16 tokens/text: within half of the reference
     [(f"lmo_input_tokens_sum{{{TRITON}}}", "0+160x90"), (f"lmo_input_tokens_count{{{TRITON}}}", "0+10x90"),
      (f"lmo_input_reference_tokens_mean{{{TRITON}}}", "14x90")],
     "80m", None),
    # 20% unknown tokens against a 1% reference
    ("LmoInputUnknownTokens",
     [(f"lmo_input_unknown_tokens_total{{{TRITON}}}", "0+80x90"), (f"lmo_input_tokens_sum{{{TRITON}}}", "0+400x90"),
      (f"lmo_input_reference_unknown_ratio{{{TRITON}}}", "0.01x90")],
     "80m", {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoInputUnknownTokens",
     [(f"lmo_input_unknown_tokens_total{{{TRITON}}}", "0+8x90"), (f"lmo_input_tokens_sum{{{TRITON}}}", "0+400x90"),
      (f"lmo_input_reference_unknown_ratio{{{TRITON}}}", "0.01x90")],
     "80m", None),
    ("LmoEmbeddingDrift", [(f"lmo_input_embedding_cosine{{{TRITON}}}", "0.6x90")], "80m",
     {"severity": "warning", "namespace": "ml", "lmo_model": "chat", "lmo_version": "v2"}),
    ("LmoEmbeddingDrift", [(f"lmo_input_embedding_cosine{{{TRITON}}}", "0.97x90")], "80m", None),
]


def test_each_alert_fires_on_trouble_and_stays_quiet_when_healthy(groups, tmp_path):
    # annotations are checked by `promtool check rules`; the unit tests judge expr, for, labels
    bare = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in groups]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    tests = []
    for alert, series, at, labels in CASES:
        tests.append({
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                 "exp_alerts": [] if labels is None else [{"exp_labels": labels}]}],
        })
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    result = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    fired = {a for a, _, _, labels in CASES if labels is not None}
    assert fired == {r["alert"] for g in groups for r in g["rules"]}  # every alert proven to fire
