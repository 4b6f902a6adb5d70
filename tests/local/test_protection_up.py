"""spec.protection on a real `lmo up` (real Triton, real conversion): API keys from
`--secrets`, a rate limit held over 20 s of loopback load, the request timeout, and no key
in any log line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.local.conftest import LmoUp, rel, write_lm

pytestmark = pytest.mark.slow

KEYS = {"alice": "sk-alice-7d1e0c44", "bob": "sk-bob-2b9f63aa"}
RATE = 10


@pytest.fixture(scope="module")
def protected_up(tmp_path_factory, sentiment_checkpoints, convert_cache):
    d = tmp_path_factory.mktemp("protected")
    secrets = d / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "chat-keys"}, "stringData": KEYS}))
    file = write_lm(
        d / "protected.yaml", "sentiment-protected",
        [{"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"], d)}}],
        routing={"policies": "EnvoyGateway"},
        protection={"timeout": "30s", "auth": {"apiKeys": {"secretRef": {"name": "chat-keys"}}},
                    "rateLimit": {"requestsPerSecond": RATE},
                    "circuitBreaker": {"maxPendingRequests": 64, "consecutiveErrors": 5}},
        serving={"batching": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 200},
                 "queue": {"maxSize": 64, "timeout": "5s"}},
    )
    up = LmoUp(file, d / "work", convert_cache, "--secrets", str(secrets)).start()
    yield up
    up.stop()


def _session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    return s


def _post(s: requests.Session, url: str, key: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return s.post(url + "/v1/text-classification", json={"text": "a fine day"},
                  headers=headers, timeout=30)


def test_admitted_rate_holds_within_10_percent_over_20_seconds(protected_up):
    url = protected_up.url
    time.sleep(1.5)  # a full bucket: whatever earlier requests took has refilled
    counts = {"ok": 0, "limited": 0, "other": 0}
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + 20.0

    def client(key: str) -> None:
        with _session() as s:
            while time.monotonic() < stop_at:
                r = _post(s, url, key)
                with lock:
                    if r.status_code == 200:
                        counts["ok"] += 1
                    elif r.status_code == 429:
                        counts["limited"] += 1
                        assert int(r.headers["Retry-After"]) >= 1
                    else:
                        counts["other"] += 1
                time.sleep(0.02)  # bounded: a few times the rate, not a flood

    threads = [threading.Thread(target=client, args=(k,)) for k in (*KEYS.values(), KEYS["bob"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    expected = RATE * elapsed + RATE  # the refill over the run plus the initial bucket
    assert counts["other"] == 0, counts
    assert counts["limited"] > counts["ok"], counts  # the clients asked for far more
    assert abs(counts["ok"] - expected) <= 0.10 * expected, (counts, elapsed, expected)


def test_missing_unknown_and_known_keys(protected_up):
    time.sleep(1.0)
    with _session() as s:
        r = _post(s, protected_up.url, None)
        assert r.status_code == 401 and "Bearer" in r.json()["error"]
        r = _post(s, protected_up.url, "sk-mallory-31337")
        assert r.status_code == 403
        r = _post(s, protected_up.url, KEYS["alice"])
        assert r.status_code == 200 and r.json()["label"] in ("negative", "positive")
        # the status and health endpoints need no key
        assert s.get(protected_up.url + "/v2/health/ready", timeout=10).status_code == 200
        assert s.get(protected_up.url + "/lmo/status", timeout=10).status_code == 200


def test_no_key_in_any_log_or_status(protected_up):
    with _session() as s:
        for key in (*KEYS.values(), "sk-mallory-31337"):
            _post(s, protected_up.url, key)
        status = s.get(protected_up.url + "/lmo/status", timeout=10).text
    logs = [protected_up.log, *Path(protected_up.work_dir).rglob("*.log")]
    text = status + "".join(p.read_text(errors="replace") for p in logs if p.is_file())
    assert text  # there is something to look at
    for key in (*KEYS.values(), "sk-mallory-31337"):
        assert key not in text


def test_a_missing_secret_is_refused_before_any_conversion(tmp_path, sentiment_checkpoints):
    import subprocess
    import sys

    file = write_lm(
        tmp_path / "m.yaml", "m",
        [{"name": "v1", "checkpoint": {"uri": rel(sentiment_checkpoints["v1"], tmp_path)}}],
        routing={"policies": "EnvoyGateway"},
        protection={"auth": {"apiKeys": {"secretRef": {"name": "nowhere"}}}})
    out = subprocess.run([sys.executable, "-m", "lmo.cli", "up", "-f", str(file), "--port", "0",
                          "--work-dir", str(tmp_path / "w")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert ("spec.protection.auth.apiKeys.secretRef.name: Secret 'nowhere' not found; give it "
            "with --secrets FILE") in out.stderr
    assert "LMO_SECRET_NOWHERE" in out.stderr
    assert not (tmp_path / "w" / "cache").exists()  # nothing was converted
