"""Canary under `lmo up`: the operator's state machine, judged on local Triton metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.local.conftest import LmoUp, alive, descendants, rel, write_lm
from tests.local.test_up import burst

pytestmark = pytest.mark.slow


class Load:
    """Steady background requests through the door (a canary needs traffic to be judged)."""

    def __init__(self, url: str):
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            asyncio.run(burst(self.url, 20, clients=2))
            time.sleep(0.05)

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def wait_for(up: LmoUp, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = up.status()
        if predicate(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"timed out; last status: {status}\n{up.output()}")


def test_appending_a_version_starts_a_canary_that_rolls_back_then_succeeds(
    tmp_path, sentiment_checkpoints, convert_cache
):
    rollout = {
        "strategy": "Canary", "steps": [50, 100], "stepDuration": "2s",
        "analysis": {"prometheusUrl": "http://unused.local:9090", "minRequests": 5,
                     "maxErrorRate": 0.01, "maxLatencyP99Ms": 0.001},
    }
    v1 = {"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"], tmp_path)},
          "traffic": 100}
    v2 = {"name": "v2", "checkpoint": {"uri": rel(sentiment_checkpoints["v2"], tmp_path)},
          "traffic": 0}
    file = write_lm(tmp_path / "canary.yaml", "canary", [v1], rollout=rollout)
    up = LmoUp(file, tmp_path / "work", convert_cache).start()
    try:
        with Load(up.url):
            assert up.status()["trafficSummary"] == "v1=100"
            # Append v2 while running: it is converted and started, then the canary begins.
            # An impossible latency gate fails the first step: all traffic back to v1.
            write_lm(file, "canary", [v1, v2], rollout=rollout)
            status = wait_for(up, lambda s: (s.get("rollout") or {}).get("phase") == "RolledBack",
                              timeout=120)
            assert status["trafficSummary"] == "v1=100,v2=0"
            assert status["readyVersions"] == "2/2"
            analysis = status["rollout"]["lastAnalysis"]
            assert analysis["verdict"] == "fail"
            assert any("maxLatencyP99Ms" in r for r in analysis["reasons"])
            assert analysis["measurements"]["requests"] >= 5
            # A sane gate (a rollout settings change) restarts it; it goes through to 100%.
            doc = yaml.safe_load(file.read_text())
            doc["spec"]["rollout"]["analysis"]["maxLatencyP99Ms"] = 10000
            file.write_text(yaml.safe_dump(doc, sort_keys=False))
            status = wait_for(up, lambda s: (s.get("rollout") or {}).get("phase") == "Succeeded")
        assert status["trafficSummary"] == "v1=0,v2=100"
        assert status["rollout"]["lastAnalysis"]["verdict"] == "pass"
        reasons = [e["reason"] for e in status["local"]["events"]]
        assert "RolloutSucceeded" in reasons
        # Removing the old version from the file stops its server.
        port = status["local"]["backends"]["v1"]["url"].rsplit(":", 1)[1]
        v1_pids = [p for p in descendants(up.proc.pid) if f"--http-port={port}" in
                   Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")]
        assert v1_pids
        write_lm(file, "canary", [dict(v2, traffic=100)], rollout=rollout)
        status = wait_for(up, lambda s: [v["name"] for v in s["versions"]] == ["v2"]
                          and "v1" not in s["local"]["backends"])
        assert status["trafficSummary"] == "v2=100"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(p) for p in v1_pids):
            time.sleep(0.2)
        assert not any(alive(p) for p in v1_pids)
    finally:
        up.stop()
