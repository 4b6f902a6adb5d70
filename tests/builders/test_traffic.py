"""Routing: the HTTPRoute rules, the provider-Service replica arithmetic and status.endpoint."""

from __future__ import annotations

import pytest

from lmo.builders import build_children, endpoint
from lmo.builders.traffic import build_httproute, service_replicas
from lmo.settings import OperatorSettings

from .conftest import OWNER, by_kind, make_lm, make_plans


def _versions(traffic: dict[str, int]) -> list[dict]:
    return [
        {"name": n, "checkpoint": {"uri": f"s3://m/{n}/"}, "traffic": t} for n, t in traffic.items()
    ]


def _route(spec: dict, settings: OperatorSettings | None = None, **plan_kw) -> dict:
    settings = settings or OperatorSettings()
    lm = make_lm(spec)
    return build_httproute(lm, OWNER, settings, make_plans(lm, settings, **plan_kw))


PREFIX = {"path": {"type": "PathPrefix", "value": "/ml/chat"}}
STRIP = {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                       "replacePrefixMatch": "/"}}}


def _weights(rule: dict) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in rule["backendRefs"]}


def test_weighted_default_rule():
    route = _route({})
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "chat"
    (rule,) = route["spec"]["rules"]
    assert _weights(rule) == {"chat-v1": 90, "chat-v2": 10}
    assert all(b["port"] == 8000 for b in rule["backendRefs"])
    # the model's own path prefix, stripped before its fronts see the request
    assert rule["matches"] == [PREFIX] and rule["filters"] == [STRIP]
    assert "hostnames" not in route["spec"]


def test_zero_traffic_version_left_out():
    route = _route({"versions": _versions({"v1": 100, "v2": 0})})
    assert _weights(route["spec"]["rules"][-1]) == {"chat-v1": 100}


def test_unservable_version_left_out_even_with_traffic():
    # a reconciler never routes to a version without pods; the builder double-checks
    route = _route({}, serving={"v1"})
    assert _weights(route["spec"]["rules"][-1]) == {"chat-v1": 90}


def test_nothing_servable_routes_nowhere():
    route = _route({}, serving=set(), convert={"v1", "v2"}, traffic={})
    assert route["spec"]["rules"] == [{"matches": [PREFIX], "backendRefs": [],
                                       "filters": [STRIP]}]


def test_ab_test_header_rules_first():
    route = _route(
        {"versions": _versions({"v1": 100, "v2": 0}), "routing": {"abTest": {"header": "x-model"}}}
    )
    rules = route["spec"]["rules"]
    assert len(rules) == 3
    for rule, version in zip(rules[:2], ["v1", "v2"], strict=True):
        assert rule["matches"] == [
            {**PREFIX, "headers": [{"type": "Exact", "name": "x-model", "value": version}]}
        ]
        assert rule["filters"] == [STRIP]
        assert rule["backendRefs"] == [{"name": f"chat-{version}", "port": 8000}]
    assert _weights(rules[2]) == {"chat-v1": 100}


@pytest.mark.parametrize("percent, expected", [(20, {"percent": 20}), (100, {})])
def test_mirror_filter(percent, expected):
    route = _route({"routing": {"mirror": {"version": "v2", "percent": percent}}})
    rule = route["spec"]["rules"][-1]
    assert rule["filters"] == [
        STRIP,
        {
            "type": "RequestMirror",
            "requestMirror": {"backendRef": {"name": "chat-v2", "port": 8000}, **expected},
        }
    ]


def test_mirror_to_unservable_version_left_out():
    route = _route({"routing": {"mirror": {"version": "v2"}}}, serving={"v1"}, traffic={"v1": 100})
    assert route["spec"]["rules"][-1]["filters"] == [STRIP]


def test_no_mirror_when_the_mirror_version_takes_all_traffic():
    """After a promotion the mirror version is the only backend: mirroring would send each
    of its requests to it a second time."""
    spec = {"versions": _versions({"v1": 0, "v2": 100}), "routing": {"mirror": {"version": "v2"}}}
    rule = _route(spec)["spec"]["rules"][-1]
    assert _weights(rule) == {"chat-v2": 100} and rule["filters"] == [STRIP]
    # sharing the weight with another version, it still gets the copies
    shared = _route(spec, traffic={"v1": 50, "v2": 50})["spec"]["rules"][-1]
    assert [f["type"] for f in shared["filters"]] == ["URLRewrite", "RequestMirror"]


def test_parent_ref_from_spec_or_settings():
    route = _route(
        {
            "routing": {
                "parentRef": {"name": "gw", "namespace": "gateways", "sectionName": "https"},
                "hostnames": ["chat.example.com"],
            }
        }
    )
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gw",
            "namespace": "gateways",
            "sectionName": "https",
        }
    ]
    assert route["spec"]["hostnames"] == ["chat.example.com"]
    default = _route({}, OperatorSettings(gateway_name="edge", gateway_namespace="infra"))
    assert default["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "infra",
        }
    ]


@pytest.mark.parametrize(
    "replicas, traffic, expected",
    [
        (1, {"v1": 100}, {"v1": 1}),
        (2, {"v1": 90, "v2": 10}, {"v1": 3, "v2": 1}),  # pool 4: 3.6/0.4 -> 4/0 -> 3/1
        (5, {"v1": 50, "v2": 50}, {"v1": 5, "v2": 5}),
        (3, {"v1": 70, "v2": 20, "v3": 10}, {"v1": 6, "v2": 2, "v3": 1}),  # pool 9: 6.3/1.8/0.9
        (1, {"v1": 34, "v2": 33, "v3": 33}, {"v1": 1, "v2": 1, "v3": 1}),
        (2, {"v1": 100, "v2": 0}, {"v1": 2, "v2": 2}),  # a 0% version stays warm, full size
        (0, {"v1": 60, "v2": 40}, {"v1": 0, "v2": 0}),
        (4, {"v1": 75, "v2": 25}, {"v1": 6, "v2": 2}),  # pool 8: exact
    ],
)
def test_service_replica_arithmetic(replicas, traffic, expected):
    lm = make_lm(
        {
            "versions": _versions(traffic),
            "routing": {"provider": "Service"},
            "serving": {"replicas": replicas},
        }
    )
    plans = make_plans(lm, OperatorSettings())
    got = service_replicas(lm, plans)
    assert got == expected
    routed = [n for n, t in traffic.items() if t > 0]
    if replicas:
        assert sum(got[n] for n in routed) == replicas * len(routed)
        assert all(got[n] >= 1 for n in routed)


def test_provider_service_children():
    settings = OperatorSettings()
    lm = make_lm(
        {
            "versions": _versions({"v1": 100, "v2": 0}),
            "routing": {"provider": "Service"},
            "serving": {"replicas": 2},
        }
    )
    children = build_children(lm, OWNER, settings, make_plans(lm, settings))
    assert by_kind(children, "HTTPRoute") == []
    shared = next(s for s in by_kind(children, "Service") if s["metadata"]["name"] == "chat")
    assert shared["spec"]["selector"] == {
        "lmo.dev/model": "chat",
        "app.kubernetes.io/component": "triton",
        "lmo.dev/routed": "true",
    }
    deps = {d["metadata"]["name"]: d for d in by_kind(children, "Deployment")}
    routed = {
        n: d["spec"]["template"]["metadata"]["labels"]["lmo.dev/routed"] for n, d in deps.items()
    }
    assert routed == {"chat-v1": "true", "chat-v2": "false"}
    assert {n: d["spec"]["replicas"] for n, d in deps.items()} == {"chat-v1": 2, "chat-v2": 2}
    # the routed label is not in the immutable selector: flipping it only rolls the pods
    assert "lmo.dev/routed" not in deps["chat-v1"]["spec"]["selector"]["matchLabels"]


def test_gateway_pods_carry_no_routed_label(settings):
    lm = make_lm()
    children = build_children(lm, OWNER, settings, make_plans(lm, settings))
    for dep in by_kind(children, "Deployment"):
        assert "lmo.dev/routed" not in dep["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize(
    "spec, settings, expected",
    [
        (
            {"routing": {"hostnames": ["*.example.com", "chat.example.com"]}},
            {},
            "http://chat.example.com/ml/chat",
        ),
        (
            {},
            {"gateway_address": "gw.example.com:8080"},
            "http://gw.example.com:8080/ml/chat",
        ),
        (
            {},
            {"gateway_name": "edge", "gateway_namespace": "infra"},
            "http://edge.infra/ml/chat",
        ),
        ({"routing": {"parentRef": {"name": "gw"}}}, {}, "http://gw.ml/ml/chat"),
        (
            {"task": "feature-extraction", "routing": {"hostnames": ["e.x"]}},
            {},
            "http://e.x/ml/chat",
        ),
        ({"routing": {"provider": "Service"}}, {}, "http://chat.ml.svc:8000"),
    ],
)
def test_endpoint(spec, settings, expected):
    assert endpoint(make_lm(spec), OperatorSettings(**settings)) == expected


def _splits(n: int, step: int, total: int = 100):
    """Every way to give n versions traffic in multiples of `step` summing to `total`."""
    if n == 1:
        yield (total,)
        return
    for first in range(0, total + 1, step):
        for rest in _splits(n - 1, step, total - first):
            yield (first, *rest)


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_service_replica_invariants_over_all_splits(replicas):
    """For every split: the pool is used exactly, routed versions get >= 1 pod, and more
    traffic never gets fewer pods."""
    checked = 0
    for n, step in ((2, 1), (3, 5), (4, 10)):
        for split in _splits(n, step):
            traffic = {f"v{i}": t for i, t in enumerate(split)}
            lm = make_lm(
                {
                    "versions": _versions(traffic),
                    "routing": {"provider": "Service"},
                    "serving": {"replicas": replicas},
                }
            )
            got = service_replicas(lm, make_plans(lm, OperatorSettings()))
            routed = [v for v, t in traffic.items() if t > 0]
            assert sum(got[v] for v in routed) == replicas * len(routed), (split, got)
            assert all(got[v] >= 1 for v in routed), (split, got)
            for a in routed:
                for b in routed:
                    if traffic[a] > traffic[b]:
                        assert got[a] >= got[b], (split, got)
            checked += 1
    assert checked > 300


def test_protection_timeout_is_every_rules_request_timeout():
    route = _route({"routing": {"abTest": {"header": "x-lmo-version"}}, "protection": {"timeout": "1m30s"}})
    rules = route["spec"]["rules"]
    assert len(rules) == 3 and all(r["timeouts"] == {"request": "1m30s"} for r in rules)
    assert all("timeouts" not in r for r in _route({})["spec"]["rules"])


def test_protection_timeout_is_refused_with_a_plain_service():
    from lmo.api import SpecError

    with pytest.raises(SpecError, match="spec.protection.timeout needs provider: GatewayAPI"):
        make_lm({"routing": {"provider": "Service"}, "protection": {"timeout": "30s"}})
    with pytest.raises(SpecError, match="protection.timeout"):
        make_lm({"protection": {"timeout": "1.5s"}})  # not a Gateway API duration


def _element_prefix(prefix: str, path: str) -> bool:
    """Gateway API PathPrefix: a match on whole path elements ("/a/b" matches "/a/b/c",
    never "/a/bc")."""
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def test_two_models_on_one_gateway_get_disjoint_matches():
    """Two LanguageModels of one task on the same Gateway, no hostname: each route claims
    only its own prefix, so no request can match both (before, both matched every path and
    the Gateway gave everything to the older route)."""
    settings = OperatorSettings()
    routes = []
    for name in ("emb-a", "emb-ab"):
        lm = make_lm({"task": "feature-extraction", "routing": {"parentRef": {"name": "gw"}}},
                     name=name)
        routes.append(build_httproute(lm, OWNER, settings, make_plans(lm, settings)))
    a, b = ({m["path"]["value"] for r in route["spec"]["rules"] for m in r["matches"]}
            for route in routes)
    assert a == {"/ml/emb-a"} and b == {"/ml/emb-ab"}
    for path in ("/ml/emb-a/v1/embeddings", "/ml/emb-ab/v1/embeddings", "/ml/emb-a",
                 "/v1/embeddings", "/ml/emb-abc/v1/models"):
        claimed = [p for p in (*a, *b) if _element_prefix(p, path)]
        assert len(claimed) <= 1, (path, claimed)
    assert [_element_prefix(p, "/ml/emb-ab/v1/models") for p in ("/ml/emb-a", "/ml/emb-ab")] == [
        False, True]
    assert {endpoint(make_lm({"task": "feature-extraction"}, name=n), settings)
            for n in ("emb-a", "emb-ab")} == {"http://lmo-gateway.ml/ml/emb-a",
                                             "http://lmo-gateway.ml/ml/emb-ab"}


def test_a_model_with_its_own_hostname_takes_every_path_of_that_host():
    route = _route({"routing": {"hostname": "chat.example.com", "hostnames": ["c.example.com"]}})
    assert route["spec"]["hostnames"] == ["chat.example.com", "c.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert "filters" not in rule  # nothing to strip
    lm = make_lm({"routing": {"hostname": "chat.example.com"}})
    assert endpoint(lm, OperatorSettings(gateway_address="gw:8080")) == "http://chat.example.com"
