"""The HTTPRoute of an Experiment and of routing.sticky, and the Sticky condition: checked
against the Gateway API CRD schemas shipped in ../shared/kube/crds."""

from __future__ import annotations

from datetime import datetime, timezone

import jsonschema
import pytest
import yaml

from lmo import conditions as C
from lmo.builders.traffic import build_httproute, sticky_conditions
from lmo.settings import OperatorSettings
from tests.fixtures.control_plane import crd_dir

from .conftest import OWNER, make_lm, make_plans

CRDS = crd_dir()  # ../shared/kube/crds (LMO_SHARED_KUBE from a checkout elsewhere)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
PROM = {"prometheusUrl": "http://prom:9090"}
SESSION = OperatorSettings(gateway_session_persistence=True)


def spec(**extra) -> dict:
    return {
        "versions": [{"name": n, "checkpoint": {"uri": f"s3://m/{n}/"}, "traffic": 50}
                     for n in ("v1", "v2")],
        "rollout": {"strategy": "Experiment", "analysis": PROM},
        **extra,
    }


def route(s: dict, settings: OperatorSettings | None = None) -> dict:
    settings = settings or OperatorSettings()
    lm = make_lm(s)
    return build_httproute(lm, OWNER, settings, make_plans(lm, settings))


def httproute_schema(channel: str) -> dict:
    path = CRDS / channel / "gateway.networking.k8s.io_httproutes.yaml"
    crd = next(d for d in yaml.safe_load_all(path.read_text()) if d)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def test_experiment_feedback_reaches_the_version_that_answered():
    """Every front names its version on each answer (x-lmo-version); the Experiment's route
    sends a request naming a version to it, so `POST /v1/feedback` about an answer reaches
    the front that gave it (which accepts only ids it answered)."""
    r = route(spec())
    *header_rules, default = r["spec"]["rules"]
    assert [rule["matches"][0]["headers"][0] for rule in header_rules] == [
        {"type": "Exact", "name": "x-lmo-version", "value": v} for v in ("v1", "v2")]
    assert [rule["matches"][0]["path"]["value"] for rule in r["spec"]["rules"]] == [
        "/ml/chat"] * 3
    assert [[b["name"] for b in rule["backendRefs"]] for rule in header_rules] == [
        ["chat-v1"], ["chat-v2"]]
    assert {b["name"]: b["weight"] for b in default["backendRefs"]} == {"chat-v1": 50,
                                                                       "chat-v2": 50}
    # an abTest header of the user's own is used for those rules instead
    r = route(spec(routing={"abTest": {"header": "x-model"}}))
    assert r["spec"]["rules"][0]["matches"][0]["headers"][0]["name"] == "x-model"


def test_a_canary_route_is_unchanged():
    r = route(spec(rollout={"strategy": "Canary", "analysis": PROM}))
    (rule,) = r["spec"]["rules"]
    assert all("filters" not in b for b in rule["backendRefs"])
    assert [f["type"] for f in rule["filters"]] == ["URLRewrite"]


def test_sticky_renders_session_persistence_only_where_the_cluster_has_it():
    s = spec(routing={"sticky": {"header": "x-user-id"}})
    default = route(s, SESSION)["spec"]["rules"][-1]
    assert default["sessionPersistence"] == {"sessionName": "x-user-id", "type": "Header"}
    assert "sessionPersistence" not in route(s)["spec"]["rules"][-1]


@pytest.mark.parametrize("channel,accepted", [("gateway-api-experimental", True),
                                              ("gateway-api", False)])
def test_the_rendered_route_fits_the_experimental_httproute_schema(channel, accepted):
    r = route(spec(routing={"sticky": {"header": "x-user-id"}}), SESSION)
    schema = httproute_schema(channel)
    rule_schema = schema["properties"]["spec"]["properties"]["rules"]["items"]
    # the standard channel has no such field: the API server would prune it silently
    assert ("sessionPersistence" in rule_schema["properties"]) is accepted
    jsonschema.validate(r, schema)


def test_sticky_condition_says_what_is_missing_and_goes_with_the_field():
    lm = make_lm(spec(routing={"sticky": {"header": "x-user-id"}}))
    conds = sticky_conditions([], lm, OperatorSettings(), 3, NOW)
    c = C.get_condition(conds, C.STICKY)
    assert c["status"] == "False" and c["reason"] == "SessionPersistenceUnavailable"
    assert "experimental channel" in c["message"] and "gatewaySessionPersistence" in c["message"]
    conds = sticky_conditions(conds, lm, SESSION, 3, NOW)
    assert C.get_condition(conds, C.STICKY)["status"] == "True"
    plain = make_lm(spec())
    assert C.get_condition(sticky_conditions(conds, plain, SESSION, 3, NOW), C.STICKY) is None
