"""An Experiment run by the real `lmo operator` on the real API server: the CRD's rules, the
route the standard Gateway API schema accepts, the Sticky condition, and the decision taken
from feedback counters read through a real Prometheus (scraping prometheus_client exporters
with the names and labels of the feedback model in each version's Triton)."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app

from tests.fixtures.prometheus import PrometheusServer, Target
from tests.fixtures.real_cluster import ApiError, RealCluster, two_versions
from tests.realkube.test_operator_life import ROUTE, events, weights

pytestmark = pytest.mark.slow


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Feedback:
    """One version's feedback counters, as its Triton's feedback model exports them."""

    def __init__(self) -> None:
        registry = CollectorRegistry()
        self.samples = Counter("lmo_feedback_samples", "reports", registry=registry)
        self.successes = Counter("lmo_feedback_successes", "successes", registry=registry)
        self.server = make_server("127.0.0.1", 0, make_wsgi_app(registry), handler_class=_Quiet)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def experiment(prom_url: str, **extra) -> dict:
    body = two_versions(
        routing={"parentRef": {"name": "gw"}, "sticky": {"header": "x-user-id"}},
        rollout={"strategy": "Experiment", "stepDuration": "2s",
                 "analysis": {"prometheusUrl": prom_url, "minRequests": 0},
                 "experiment": {"minSamples": 100}},
        **extra,
    )
    body.pop("autoscaling", None)
    for v in body["versions"]:
        v["traffic"] = 50
    return body


def test_an_experiment_is_decided_from_feedback_counters_and_promoted(real: RealCluster, ns: str):
    lm = "exp"
    fb = {v: Feedback() for v in ("v1", "v2")}
    try:
        with PrometheusServer([Target(f.address, ns, lm, v) for v, f in fb.items()]) as prom:
            real.create_lm(ns, lm, experiment(prom.url))
            real.wait_ready(ns, lm)
            # the route the standard schema accepted: a request naming a version (as a
            # feedback report names the one that answered) reaches that version's front
            rules = real.get(*ROUTE, ns, lm)["spec"]["rules"]
            assert [r["matches"][0]["headers"][0]["value"] for r in rules[:-1]] == ["v1", "v2"]
            assert "sessionPersistence" not in rules[-1]
            sticky = real.condition(ns, lm, "Sticky")
            assert sticky["status"] == "False" and "experimental channel" in sticky["message"]
            assert weights(real, ns, lm) == {"exp-v1": 50, "exp-v2": 50}
            real.wait(lambda: (real.status(ns, lm).get("experiment") or {}).get("startedAt"),
                      60, "the experiment started")

            fb["v1"].samples.inc(300)
            fb["v1"].successes.inc(90)
            fb["v2"].samples.inc(300)
            fb["v2"].successes.inc(180)
            exp = real.wait(
                lambda: (e := real.status(ns, lm).get("experiment") or {}).get("phase")
                == "Decided" and e, 90, "the experiment Decided")
            assert exp["winner"] == "v2" and exp["interval"][0] > 0 and exp["pValue"] <= 0.05
            arms = {a["version"]: a for a in exp["arms"]}
            assert arms["v2"]["rate"] > arms["v1"]["rate"]
            assert all(a["samples"] >= 100 for a in arms.values())
            real.wait(lambda: weights(real, ns, lm) == {"exp-v2": 100}, 60, "v2 promoted")
            assert real.status(ns, lm)["rollout"]["phase"] == "Succeeded"
            reasons = [e["reason"] for e in events(real, ns, lm)]
            assert "ExperimentStarted" in reasons and "ExperimentDecided" in reasons
    finally:
        for f in fb.values():
            f.close()


def test_the_server_refuses_an_experiment_that_cannot_work(real: RealCluster, ns: str):
    body = experiment("http://prometheus:9090")
    body["versions"][0]["traffic"] = 100
    body["versions"][1]["traffic"] = 0
    with pytest.raises(ApiError) as refused:
        real.create_lm(ns, "onearm", body)
    assert refused.value.status == 422
    assert "an Experiment compares exactly two versions" in refused.value.message
    body = experiment("http://prometheus:9090")
    body["rollout"]["experiment"]["outcome"] = {"successQuery": "sum(x)"}
    with pytest.raises(ApiError) as refused:
        real.create_lm(ns, "halfquery", body)
    assert "successQuery and totalQuery go together" in refused.value.message


def test_session_persistence_survives_only_the_experimental_httproute_crd(real: RealCluster, ns: str):
    """What the Sticky condition guards against: the standard channel's HTTPRoute silently
    prunes `sessionPersistence`; the experimental channel's keeps it. The route is the one
    lmo renders with gatewaySessionPersistence; server-side dry runs, and the standard CRD
    is put back afterwards."""
    from lmo.api import parse
    from lmo.builders import Owner
    from lmo.builders.traffic import build_httproute
    from lmo.settings import OperatorSettings
    from tests.builders.conftest import make_plans
    from tests.fixtures.control_plane import crd_dir

    settings = OperatorSettings(gateway_session_persistence=True)
    lm = parse({"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                "metadata": {"name": "sticky", "namespace": ns},
                "spec": experiment("http://prometheus:9090")})
    route = build_httproute(lm, Owner("sticky", ns, "00000000-0000-0000-0000-000000000001"),
                            settings, make_plans(lm, settings))
    route["metadata"].pop("ownerReferences")
    url = f"/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes"

    def kept() -> dict | None:
        out = real.request("POST", url, route, params={"dryRun": "All"})
        return out["spec"]["rules"][-1].get("sessionPersistence")

    assert kept() is None  # the standard CRD: dropped without a word
    experimental = crd_dir() / "gateway-api-experimental" / "gateway.networking.k8s.io_httproutes.yaml"
    standard = crd_dir() / "gateway-api" / "gateway.networking.k8s.io_httproutes.yaml"
    real.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(experimental))
    try:
        got = real.wait(kept, 30, "the experimental HTTPRoute schema in effect")
        assert got == {"sessionName": "x-user-id", "type": "Header"}
    finally:
        real.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(standard))
        real.wait(lambda: kept() is None, 30, "the standard HTTPRoute schema back")
