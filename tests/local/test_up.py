"""`lmo up` end to end: real conversion, real Triton servers, requests over HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter

import aiohttp
import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml

from lmo.api import parse, SpecError
from lmo.decide.triton import parse as parse_metrics
from tests.local.conftest import ROOT, LmoUp, descendants, rel, write_lm

pytestmark = pytest.mark.slow

MODEL = "text_classification"


def kserve(texts: list[str]) -> bytes:
    return json.dumps({"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES",
                                   "data": texts}]}).encode()


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json",
                                                          **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), json.loads(r.read())


def set_traffic(up: LmoUp, weights: dict[str, int]) -> dict:
    _, _, status = post(up.url + "/lmo/traffic", json.dumps({"weights": weights}).encode())
    return status


async def burst(url: str, n: int, clients: int = 16, headers: dict | None = None) -> Counter:
    """n KServe requests from `clients` concurrent callers; count x-lmo-version answers."""
    seen: Counter = Counter()
    body = kserve(["I love this, it is wonderful"])
    queue = list(range(n))

    async def caller(session: aiohttp.ClientSession) -> None:
        while queue:
            queue.pop()
            async with session.post(f"{url}/v2/models/{MODEL}/infer", data=body,
                                    headers={"Content-Type": "application/json",
                                             **(headers or {})}) as r:
                await r.read()
                assert r.status == 200, await r.text()
                seen[r.headers["x-lmo-version"]] += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(caller(session) for _ in range(clients)))
    return seen


def test_json_endpoint_answers_with_the_version(ab_up):
    status, headers, body = post(ab_up.url + "/v1/text-classification",
                                 json.dumps({"text": "I love this, it is wonderful"}).encode())
    assert status == 200
    assert headers["x-lmo-version"] in ("v1", "v2")
    assert body["version"] == headers["x-lmo-version"]
    assert body["label"] in ("negative", "positive")
    assert 0.5 <= body["score"] <= 1.0
    _, _, many = post(ab_up.url + "/v1/text-classification",
                      json.dumps({"text": ["great", "awful"]}).encode())
    assert len(many["results"]) == 2


def test_tritonclient_through_the_door_matches_direct_triton(ab_up):
    """The door speaks binary-tensor KServe v2: tritonclient works unchanged through it."""
    texts = [b"I love this, it is wonderful", b"I hate this, it is terrible"]

    def ask(address: str, version: str | None = None):
        client = httpclient.InferenceServerClient(address)
        inp = httpclient.InferInput("TEXT", [2, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[t] for t in texts], dtype=object))
        headers = {"x-lmo-version": version} if version else None
        try:
            result = client.infer(MODEL, [inp], headers=headers)
        finally:
            client.close()
        return result.as_numpy("LABEL").reshape(-1).tolist(), result.as_numpy("SCORE").reshape(-1)

    backends = ab_up.status()["local"]["backends"]
    door = ab_up.url.removeprefix("http://")
    for version in ("v1", "v2"):
        labels, scores = ask(door, version)
        d_labels, d_scores = ask(backends[version]["url"].removeprefix("http://"))
        assert labels == d_labels
        np.testing.assert_allclose(scores, d_scores, rtol=1e-5)


def test_weights_are_honoured_within_3_percent_and_mirror_copies(ab_up):
    set_traffic(ab_up, {"v1": 70, "v2": 30})
    before = ab_up.status()["local"]["backends"]
    v2_metrics_url = before["v2"]["metricsUrl"]
    v2_before = parse_metrics(urllib.request.urlopen(v2_metrics_url).read().decode(), MODEL)
    try:
        seen = asyncio.run(burst(ab_up.url, 2000))
    finally:
        set_traffic(ab_up, {"v1": 50, "v2": 50})
    assert sum(seen.values()) == 2000
    assert abs(seen["v1"] / 2000 - 0.70) <= 0.03, seen
    assert abs(seen["v2"] / 2000 - 0.30) <= 0.03, seen
    # 20% of the requests v1 answered were copied to v2 (fire-and-forget: wait for them).
    expected = seen["v1"] * 20 // 100
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        mirrored = ab_up.status()["local"]["backends"]["v2"]["mirrored"] - before["v2"]["mirrored"]
        if mirrored >= expected - 1:
            break
        time.sleep(0.2)
    assert abs(mirrored - expected) <= 1, (mirrored, expected)
    # ...and really reached v2's Triton: it served its own share plus the copies.
    v2_after = parse_metrics(urllib.request.urlopen(v2_metrics_url).read().decode(), MODEL)
    assert v2_after.success - v2_before.success >= seen["v2"] + mirrored


def test_ab_header_routes_exactly(ab_up):
    for version in ("v1", "v2"):
        seen = asyncio.run(burst(ab_up.url, 60, clients=4, headers={"x-lmo-version": version}))
        assert seen == Counter({version: 60})
    # A value naming no version falls through to the weights (as an HTTPRoute does).
    seen = asyncio.run(burst(ab_up.url, 40, clients=4, headers={"x-lmo-version": "v9"}))
    assert seen == Counter({"v1": 20, "v2": 20})


def test_editing_the_file_shifts_traffic(ab_up):
    doc = yaml.safe_load(ab_up.file.read_text())
    original = ab_up.file.read_text()
    doc["spec"]["versions"][0]["traffic"] = 0
    doc["spec"]["versions"][1]["traffic"] = 100
    ab_up.file.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ab_up.status()["trafficSummary"] == "v1=0,v2=100":
                break
            time.sleep(0.2)
        assert ab_up.status()["trafficSummary"] == "v1=0,v2=100"
        assert asyncio.run(burst(ab_up.url, 20, clients=2)) == Counter({"v2": 20})
        # An invalid edit is refused with the API's message and the old routing stays.
        doc["spec"]["versions"][1]["traffic"] = 90
        ab_up.file.write_text(yaml.safe_dump(doc, sort_keys=False))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            events = ab_up.status()["local"]["events"]
            if any(e["reason"] == "InvalidSpec" for e in events):
                break
            time.sleep(0.2)
        assert any("must sum to 100" in e["message"] for e in events if e["reason"] == "InvalidSpec")
        assert ab_up.status()["trafficSummary"] == "v1=0,v2=100"
    finally:
        ab_up.file.write_text(original)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ab_up.status()["trafficSummary"] != "v1=50,v2=50":
            time.sleep(0.2)


def test_bad_yaml_gives_the_cluster_message(tmp_path):
    doc = {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
           "metadata": {"name": "bad"},
           "spec": {"task": "text-classification", "versions": [
               {"name": "v1", "checkpoint": {"uri": "file://x"}, "traffic": 60},
               {"name": "v2", "checkpoint": {"uri": "file://y"}, "traffic": 30}]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SpecError) as err:
        parse(doc)
    proc = subprocess.run([sys.executable, "-m", "lmo.cli", "up", "-f", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"lmo up: error: {err.value}"
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_every_process(sig, tmp_path, sentiment_checkpoints, convert_cache):
    file = write_lm(tmp_path / "one.yaml", "solo",
                    [{"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"],
                                                              tmp_path)}}])
    up = LmoUp(file, tmp_path / "work", convert_cache).start()
    kids = descendants(up.proc.pid)
    assert kids, "lmo up should have started a Triton server"
    assert up.stop(sig) == 0  # stop() asserts every descendant is gone
    assert not (tmp_path / "work" / "up.json").exists()
    assert "stopped" in up.output()


def test_a_taken_port_is_refused_before_any_conversion(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "lmo.cli", "up", "-f", str(ROOT / "examples/tiny-bert.yaml"),
             "--port", str(port), "--work-dir", str(tmp_path)],
            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert f"--port {port}: cannot listen" in proc.stderr and "--port 0" in proc.stderr
    assert not (tmp_path / "artifacts").exists()


def test_json_endpoint_explains_mistakes(ab_up):
    def status_and_error(path: str, body: bytes) -> tuple[int, str]:
        try:
            post(ab_up.url + path, body)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())["error"]
        raise AssertionError("expected an error")

    assert status_and_error("/v1/fill-mask", b'{"text": "x"}') == (
        404, "this model does its task at /v1/text-classification, not /v1/fill-mask")
    code, msg = status_and_error("/v1/text-classification", b"not json")
    assert code == 400 and '{"text": "hello"}' in msg
    code, msg = status_and_error("/v1/text-classification", b'{"text": 3}')
    assert code == 400 and 'field "text"' in msg
    code, msg = status_and_error("/lmo/traffic", b'{"weights": {"v1": 60, "v2": 30}}')
    assert code == 400 and "sum to 100" in msg


def test_a_crashed_triton_server_is_restarted(tmp_path, sentiment_checkpoints, convert_cache):
    import os

    file = write_lm(tmp_path / "one.yaml", "crashy",
                    [{"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"],
                                                              tmp_path)}}])
    up = LmoUp(file, tmp_path / "work", convert_cache).start()
    try:
        old = up.status()["local"]["backends"]["v1"]["url"]
        port = old.rsplit(":", 1)[1]
        pid = next(p for p in descendants(up.proc.pid)
                   if f"--http-port={port}" in open(f"/proc/{p}/cmdline").read().replace("\0", " "))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            s = up.status()
            if s["local"]["backends"]["v1"]["url"] != old and s["readyVersions"] == "1/1":
                break
            time.sleep(0.3)
        assert s["local"]["backends"]["v1"]["url"] != old, up.output()
        assert any(e["reason"] == "TritonExited" for e in s["local"]["events"])
        status, headers, body = post(up.url + "/v1/text-classification",
                                     json.dumps({"text": "I love it"}).encode())
        assert status == 200 and body["label"] in ("negative", "positive")
    finally:
        up.stop()
