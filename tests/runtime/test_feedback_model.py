"""The cluster's feedback path without a new data-plane component: each version's Triton
serves lmo's `feedback` model, which counts outcome reports as Triton custom metrics; a real
Prometheus scrapes them with the pod labels, and the experiment reads them with the same
PromQL as under `lmo up` (lmo.decide.outcomes.query_outcomes) and decides (lmo.decide.experiment)."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from lmo.api import ExperimentOutcome, LanguageModelSpec
from lmo.decide.experiment import decide as experiment_decide
from lmo.decide.measure import measure
from lmo.decide.outcomes import FEEDBACK_SAMPLES, query_outcomes, with_outcomes
from lmo.decide.prometheus import Prometheus
from lmo.decide.vocabulary import AnalysisResult
from lmo.rollout import VersionObservation
from lmo_runtime.feedback import MODEL, write_model
from lmo_runtime.triton.config import validate_config
from tests.fixtures.prometheus import Target, prometheus_factory  # noqa: F401

pytestmark = pytest.mark.slow

NS, LM = "shop", "chat"


@pytest.fixture(scope="module")
def servers(tmp_path_factory, triton_servers):
    out = {}
    for v in ("v1", "v2"):
        repo = tmp_path_factory.mktemp(f"feedback-{v}")
        write_model(repo)
        out[v] = triton_servers(repo, [MODEL])
    return out


def report(server, body: dict) -> requests.Response:
    with requests.Session() as s:
        s.trust_env = False
        return s.post(f"{server.url}/v2/models/{MODEL}/generate", json=body, timeout=10)


def counters(server) -> dict[str, float]:
    with requests.Session() as s:
        s.trust_env = False
        text = s.get(server.metrics_url, timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("lmo_feedback_"):
            name, value = line.rsplit(" ", 1)
            out[name.split("{")[0]] = float(value)
    return out


def test_the_generated_config_is_what_triton_accepts(tmp_path):
    model_dir = write_model(tmp_path)
    validate_config((model_dir / "config.pbtxt").read_text())
    assert (model_dir / "1" / "model.py").is_file()


def test_reports_are_counted_and_bad_ones_refused(servers):
    server = servers["v1"]
    before = counters(server)
    assert report(server, {"success": True}).status_code == 200
    assert report(server, {"success": False, "requestId": "abc"}).status_code == 200
    r = report(server, {"score": 0.25})
    assert r.status_code == 200 and r.json()["counted"] == 0.25
    for bad, words in (({}, "exactly one of success"), ({"success": True, "score": 0.5},
                       "exactly one of success"), ({"score": 1.5}, "score must be from 0 to 1")):
        r = report(server, bad)
        assert r.status_code == 400 and words in r.text, (bad, r.text)
    # a value of the wrong JSON type is refused by Triton's own parser (and not counted)
    assert report(server, {"success": 0.5}).status_code >= 400
    after = counters(server)
    assert after["lmo_feedback_samples_total"] - before.get("lmo_feedback_samples_total", 0) == 3
    assert (after["lmo_feedback_successes_total"]
            - before.get("lmo_feedback_successes_total", 0)) == pytest.approx(1.25)


def test_prometheus_counts_feed_the_experiment_which_picks_the_better_version(
    servers, prometheus_factory
):
    prom = prometheus_factory([
        Target(s.metrics_url.removeprefix("http://").removesuffix("/metrics"), NS, LM, v)
        for v, s in servers.items()])
    rng = random.Random(5)
    rates = {"v1": 0.3, "v2": 0.6}
    sent = {"v1": 0, "v2": 0}
    time.sleep(2.5)  # a scrape before the reports, so increase() sees them all
    for _ in range(3):  # bad reports: Triton counts them as failures of the feedback model
        assert report(servers["v1"], {"score": 7}).status_code == 400
    for i in range(600):
        v = "v1" if i % 2 else "v2"
        assert report(servers[v], {"success": rng.random() < rates[v]}).status_code == 200
        sent[v] += 1
    # wait for a scrape that has every report
    deadline = time.monotonic() + 30
    with requests.Session() as s:
        s.trust_env = False
        while time.monotonic() < deadline:
            got = s.get(f"{prom.url}/api/v1/query", params={
                "query": f'sum by (lmo_version) ({FEEDBACK_SAMPLES}{{namespace="{NS}"}})'},
                timeout=5).json()["data"]["result"]
            if sum(float(r["value"][1]) for r in got) >= 600 + 3:
                break
            time.sleep(0.5)
    time.sleep(2.5)
    counts = query_outcomes(prom.url, ExperimentOutcome(), NS, LM, ["v1", "v2"], 600)
    # ... and none of it is a request or an error of the version to the rollout's gates
    health = measure(Prometheus(prom.url), NS, LM, "v1", 600)
    assert health.requests == 0 and health.failures == 0
    for v in ("v1", "v2"):
        n, succ = counts[v]
        # increase() may extend the last increase to the window's end (up to one scrape
        # interval's worth: ~1.5x over few scrapes on a loaded machine), never below the count
        assert 0.95 * sent[v] <= n <= 1.5 * sent[v], counts
        assert succ / n == pytest.approx(rates[v], abs=0.08), counts

    # the operator's decision on those counts (what reconcile runs on each analysis)
    spec = LanguageModelSpec.model_validate({
        "task": "feature-extraction",
        "versions": [{"name": v, "checkpoint": {"uri": f"s3://m/{v}/"}, "traffic": 50}
                     for v in ("v1", "v2")],
        "rollout": {"strategy": "Experiment", "stepDuration": "1s",
                    "analysis": {"prometheusUrl": prom.url},
                    "experiment": {"minSamples": 200}},
    })
    now = datetime.now(timezone.utc)
    result = with_outcomes(AnalysisResult("pass", {}, []), spec, NS, LM,
                           "2020-01-01T00:00:00Z", now)
    assert set(result.outcomes) == {"v1", "v2"}
    observed = {v: VersionObservation(v, True, None) for v in ("v1", "v2")}
    first = experiment_decide(spec, None, None, observed, lambda n: True, now)
    decision = experiment_decide(spec, first.rollout, first.experiment, observed,
                                 lambda n: True, now + timedelta(seconds=5), result)
    assert decision.experiment.phase == "Decided" and decision.experiment.winner == "v2"
    assert decision.traffic == {"v1": 0, "v2": 100}
