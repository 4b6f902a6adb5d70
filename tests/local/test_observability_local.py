"""`lmo up` with payload logging: the records land in the Triton logs `lmo up` keeps, redacted,
`lmo logs --local` prints them, and `lmo status --local` shows each version's last minute
(rate, errors, p99 from Triton's own /metrics; "-" where a number is not at hand)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from lmo.commands import vitals
from lmo.decide.triton import Snapshot
from lmo.local.recent import last_minute, Sample
from tests.local.conftest import ROOT, LmoUp, rel, write_lm

SECRET = "12345678901"


def _lmo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmo.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def _classify(url: str, text: str) -> int:
    body = json.dumps({"text": text}).encode()
    req = urllib.request.Request(f"{url}/v1/text-classification", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


@pytest.mark.slow
def test_lmo_up_logs_payloads_and_status_shows_the_last_minute(
        tmp_path, sentiment_checkpoints, convert_cache):
    file = write_lm(
        tmp_path / "logged.yaml", "logged",
        [{"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"], tmp_path)}}],
        logging={"payloads": {"sampleRate": 1, "redact": [r"\b\d{11}\b"]}},
    )
    work = tmp_path / "work"
    up = LmoUp(file, work, convert_cache).start()
    try:
        for i in range(6):
            assert _classify(up.url, f"call me on {SECRET}, I love it ({i})") == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            logs = _lmo("logs", "logged", "--local", "--work-dir", str(work))
            if len(logs.stdout.splitlines()) == 6:
                break
            time.sleep(0.5)
        status = json.loads(_lmo("status", "--local", "--work-dir", str(work),
                                 "-o", "json").stdout)
        deadline = time.monotonic() + 60  # two samples 5 s apart give a rate
        while time.monotonic() < deadline and (
                status["local"]["lastMinute"]["v1"]["requestsPerSecond"] is None):
            time.sleep(1)
            status = json.loads(_lmo("status", "--local", "--work-dir", str(work),
                                     "-o", "json").stdout)
        table = _lmo("status", "--local", "--work-dir", str(work))
        # turning logging off in the file restarts the version's Triton without it
        write_lm(file, "logged", [{"name": "v1", "checkpoint": {
            "uri": rel(sentiment_checkpoints["v1"], tmp_path)}}],
            logging={"payloads": {"sampleRate": 0}})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                e["reason"] == "SpecApplied" for e in up.status()["local"]["events"]):
            time.sleep(0.5)
        for i in range(3):
            assert _classify(up.url, f"after {i}") == 200
        metrics_url = up.status()["local"]["backends"]["v1"]["metricsUrl"]
        with urllib.request.urlopen(metrics_url, timeout=10) as r:
            new_server = r.read().decode()
        after = _lmo("logs", "logged", "--local", "--work-dir", str(work))
        said = up.output()
    finally:
        up.stop()
    assert "converted before payload logging" not in said  # a fresh artifact ships it
    # the restarted server answered the requests after the edit and logged none of them
    assert 'nv_inference_request_success{model="text_classification",version="1"} 3' in new_server
    assert 'lmo_payloads_logged_total{model="text_classification"} 0' in new_server
    assert after.stdout == logs.stdout
    records = [json.loads(line) for line in logs.stdout.splitlines()]
    assert len(records) == 6, logs.stderr
    assert {r["model"] for r in records} == {"logged"} and {r["version"] for r in records} == {"v1"}
    assert all("[REDACTED]" in r["input"] and SECRET not in json.dumps(r) for r in records)
    assert all(r["output"]["label"] in ("negative", "positive") for r in records)
    assert SECRET not in (work / "logs" / "logged-v1.log").read_text()
    minute = status["local"]["lastMinute"]["v1"]
    assert minute["requestsPerSecond"] is not None and minute["errorRatio"] in (0.0, None)
    assert minute["p99Ms"] is not None and minute["p99Ms"] > 0
    assert "v1  last 1m:" in table.stdout and " ms" in table.stdout


def test_last_minute_is_a_difference_and_unknown_stays_none():
    a = Sample(0.0, Snapshot(success=10, failure=0, duration_us=10_000), None)
    b = Sample(30.0, Snapshot(success=40, failure=20, duration_us=70_000), 8.0)
    got = last_minute([a, b])
    assert got["requestsPerSecond"] == pytest.approx(50 / 30)
    assert got["errorRatio"] == pytest.approx(20 / 50) and got["p99Ms"] == 8.0
    # one sample: no rate; no summary: the mean stands in and says so
    assert last_minute([b])["requestsPerSecond"] is None
    no_p99 = last_minute([a, Sample(30.0, b.counters, None)])
    assert no_p99["p99Ms"] == pytest.approx(60_000 / 50 / 1000) and not no_p99["latencyIsP99"]
    # a restarted server's counters began again: nothing rather than a negative rate
    assert last_minute([b, Sample(60.0, Snapshot(success=1), None)])["requestsPerSecond"] is None


def test_lines_print_dashes_for_numbers_not_at_hand():
    lines = vitals.lines({"v1": {"requestsPerSecond": 2.5, "errorRatio": 0.01, "p99Ms": 12.34,
                                 "latencyIsP99": True},
                          "v2": {"requestsPerSecond": 0.0, "errorRatio": None, "p99Ms": None}},
                         ["v1", "v2", "v3"])
    assert lines == ["v1  last 1m: 2.50 req/s  errors 1.0%  p99 12.3 ms",
                     "v2  last 1m: 0.00 req/s  errors -  p99 -",
                     "v3  last 1m: - req/s  errors -  p99 -"]
    numbers, why = vitals.cluster_last_minute(None, "ml", "chat", ["v1"])
    assert numbers == {} and "--prometheus" in why
