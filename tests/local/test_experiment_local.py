"""An A/B experiment under a real `lmo up` (real Triton servers): sticky users, request ids,
feedback, the sequential test on every analysis, and the promotion of the winner."""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from lmo.cli import main
from lmo.decide.statistics import sequential_test
from lmo.local.routing import sticky_bucket
from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL
from lmo_runtime.manifest import REPOSITORY_DIR
from tests.local.conftest import LmoUp, rel, write_lm

pytestmark = pytest.mark.slow

MIN_SAMPLES = 200


def call(url: str, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


class Users:
    """Simulated users: each asks once (sticky by x-user-id) and reports whether the answer
    helped, with a per-version success rate (a seeded random stream: the same run each time)."""

    def __init__(self, url: str, rates: dict[str, float], seed: int, prefix: str):
        self.url, self.rates, self.prefix = url, rates, prefix
        self.rng = random.Random(seed)
        self.seen: dict[str, str] = {}

    def visit(self, i: int, report: bool = True) -> str:
        user = f"{self.prefix}-{i}"
        status, headers, body = call(self.url, "/v1/text-classification",
                                     {"text": "I love this, it is wonderful"},
                                     {"x-user-id": user})
        assert status == 200, body
        version, request_id = headers["x-lmo-version"], headers["x-lmo-request-id"]
        assert body["version"] == version and request_id
        self.seen.setdefault(user, version)
        if not report:
            return version
        success = self.rng.random() < self.rates[version]
        status, _, answer = call(self.url, "/v1/feedback",
                                 {"requestId": request_id, "success": success})
        assert status == 200 and answer["version"] == version, answer
        return version


def experiment(status: dict) -> dict:
    return status.get("experiment") or {}


def never_decides(rates: dict[str, float], seed: int, prefix: str, users: int) -> bool:
    """Whether the seeded stream of outcomes decides at no prefix at all (so the verdict
    does not depend on when the controller happens to look)."""
    rng = random.Random(seed)
    counts = {v: [0, 0] for v in rates}
    for i in range(users):
        v = "v1" if sticky_bucket(f"{prefix}-{i}") < 0.5 else "v2"
        counts[v][0] += 1
        counts[v][1] += rng.random() < rates[v]
        (n1, s1), (n2, s2) = counts["v1"], counts["v2"]
        t = sequential_test(s1, n1, s2, n2, MIN_SAMPLES, 0.95)
        if t.ready and t.p_value <= 0.05:
            return False
    return True


def test_experiment_equal_rates_then_a_better_v2_is_decided_and_promoted(
    tmp_path, sentiment_checkpoints, convert_cache, capsys
):
    versions = [{"name": n, "checkpoint": {"uri": rel(p, tmp_path)}, "traffic": 50}
                for n, p in sentiment_checkpoints.items()]
    rollout = {
        "strategy": "Experiment", "stepDuration": "1s",
        "analysis": {"prometheusUrl": "http://unused.local:9090"},
        "experiment": {"minSamples": MIN_SAMPLES, "maxSamples": 2 * MIN_SAMPLES},
    }
    file = write_lm(tmp_path / "exp.yaml", "exp", versions, rollout=rollout,
                    routing={"sticky": {"header": "x-user-id"}})
    up = LmoUp(file, tmp_path / "work", convert_cache).start()
    try:
        # 1. equal rates over 1,000 sticky users: no winner, ever
        equal = {"v1": 0.5, "v2": 0.5}
        assert never_decides(equal, seed=11, prefix="a", users=1000)
        users = Users(up.url, equal, seed=11, prefix="a")
        phases = set()
        for i in range(1000):
            users.visit(i)
            if i % 50 == 49:
                exp = experiment(up.status())
                phases.add(exp.get("phase"))
                assert not exp.get("winner"), exp
        share = Counter(users.seen.values())
        assert abs(share["v2"] / 10 - 50) <= 3, share  # the split matches the weights
        for i in range(0, 1000, 5):  # and every user stays with their version
            assert users.visit(i, report=False) == users.seen[f"a-{i}"]
        status = up.status()
        exp = experiment(status)
        assert exp["phase"] in ("Running", "Inconclusive") and not exp.get("winner"), exp
        assert phases <= {"Running", "Inconclusive"}
        assert status["trafficSummary"] == "v1=50,v2=50"
        assert exp["arms"][0]["samples"] >= MIN_SAMPLES and exp["pValue"] > 0.05

        # 2. a new experiment (its settings changed) where v2's users succeed more often
        doc = yaml.safe_load(file.read_text())
        del doc["spec"]["rollout"]["experiment"]["maxSamples"]
        file.write_text(yaml.safe_dump(doc, sort_keys=False))
        better = Users(up.url, {"v1": 0.3, "v2": 0.6}, seed=12, prefix="b")
        fresh = False
        for i in range(3000):
            better.visit(i)
            if i % 25 == 24:
                exp = experiment(up.status())
                fresh = fresh or exp.get("arms", [{}])[0].get("samples", 1e9) < MIN_SAMPLES
                if fresh and exp.get("phase") == "Decided":
                    break
        status = up.status()
        exp = experiment(status)
        assert exp["phase"] == "Decided" and exp["winner"] == "v2", exp
        assert exp["lift"] > 0 and exp["interval"][0] > 0 and exp["pValue"] <= 0.05
        assert all(a["samples"] >= MIN_SAMPLES for a in exp["arms"])
        assert status["trafficSummary"] == "v1=0,v2=100"
        assert status["rollout"]["phase"] == "Succeeded" and status["rollout"]["stable"] == "v2"
        assert "ExperimentDecided" in [e["reason"] for e in status["local"]["events"]]
        # lmo status shows the verdict, the arms, the lift with its interval and the p-value
        capsys.readouterr()
        assert main(["status", "--url", up.url]) == 0
        out = capsys.readouterr().out
        assert "experiment: Decided  winner v2" in out
        assert "rollout: Succeeded  candidate -  stable v2" in out  # looks, not steps
        assert "baseline" in out and "candidate" in out and "rate 0." in out
        assert f"lift {exp['lift']:+.4f} [{exp['interval'][0]:+.4f}" in out and "p-value" in out
        # promoted: every user now lands on v2, sticky or not
        assert {better.visit(i, report=False) for i in range(3000, 3040)} == {"v2"}

        # the counts are exported under the cluster's metric names
        with urllib.request.urlopen(up.url + "/lmo/metrics", timeout=10) as r:
            text = r.read().decode()
        totals = {s.labels["lmo_version"]: s.value
                  for fam in text_string_to_metric_families(text) for s in fam.samples
                  if s.name == "lmo_feedback_samples_total"}
        assert sum(totals.values()) >= 1000 + sum(a["samples"] for a in exp["arms"])

        # every converted repository carries the cluster's feedback model; lmo up does not
        # load it (its front door takes the feedback)
        v2 = next(v for v in status["versions"] if v["name"] == "v2")
        repo = Path(v2["artifact"]["uri"].removeprefix("file://")) / REPOSITORY_DIR
        assert (repo / FEEDBACK_MODEL / "config.pbtxt").is_file()
        triton = status["local"]["backends"]["v2"]["url"]
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{triton}/v2/models/{FEEDBACK_MODEL}/ready", timeout=10)

        # feedback errors say what is wrong
        code, _, body = call(up.url, "/v1/feedback", {"requestId": "nope", "success": True})
        assert code == 404 and "unknown or expired" in body["error"]
        code, _, body = call(up.url, "/v1/feedback", {"requestId": "nope", "score": 2})
        assert code == 400 and "score must be a number from 0 to 1" in body["error"]
    finally:
        up.stop()


def test_the_example_runs_under_lmo_up(tmp_path, sentiment_checkpoints, convert_cache):
    """examples/experiment.yaml as shipped, with the test's checkpoints and a 1 s look."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "experiment.yaml")
                         .read_text())
    for v in doc["spec"]["versions"]:
        v["checkpoint"]["uri"] = rel(sentiment_checkpoints[v["name"]], tmp_path)
    doc["spec"]["rollout"]["stepDuration"] = "1s"
    file = tmp_path / "experiment.yaml"
    file.write_text(yaml.safe_dump(doc, sort_keys=False))
    up = LmoUp(file, tmp_path / "work", convert_cache).start()
    try:
        users = Users(up.url, {"v1": 1.0, "v2": 0.0}, seed=1, prefix="ex")
        for i in range(20):
            users.visit(i)
        seen = Counter(users.seen.values())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            exp = experiment(up.status())
            if sum(a["samples"] for a in exp.get("arms", [])) >= 20:
                break
            time.sleep(0.5)
        assert exp["phase"] == "Running" and "minSamples 200" in exp["message"], exp
        assert {a["version"]: a["samples"] for a in exp["arms"]} == {
            "v1": seen["v1"], "v2": seen["v2"]}
        rates = {a["version"]: a["rate"] for a in exp["arms"] if a["samples"]}
        assert rates == {v: r for v, r in {"v1": 1.0, "v2": 0.0}.items() if seen[v]}
    finally:
        up.stop()
