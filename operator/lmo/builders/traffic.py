"""Routing children: the HTTPRoute `<lm>` (provider GatewayAPI) or the Service `<lm>` (provider
Service), plus the replica arithmetic the Service provider routes by, and `status.endpoint`.

Every LanguageModel gets its own path prefix `/<namespace>/<name>` on the shared listener
(stripped by a URLRewrite ReplacePrefixMatch before the request reaches the version's
front), so two models on one Gateway never claim the same requests; its clients' base URL
is `status.endpoint` (`http://<gateway>/<namespace>/<name>`, OpenAI-compatible at
`<endpoint>/v1`). Only the pods' front containers are behind the route: Triton's own ports
are on the pods' loopback, so internal models are unreachable.

GatewayAPI routes exactly: weighted backendRefs on the per-version Services, header rules
for A/B tests, a RequestMirror filter for shadow traffic. The Service provider can only
split by pod count: one Service selects the ready Triton pods of every version that gets
traffic, so a version's share is its replicas over all routed replicas
(`service_replicas` documents the arithmetic). Which versions get traffic is the pod label
`lmo.dev/routed`, part of the pod template: a version going from 0% to some traffic, or
back, rolls its pods (surge first, so it keeps serving meanwhile). A rollback under the
Service provider therefore takes one pod start to drain the candidate; under GatewayAPI it
is immediate.
"""

from __future__ import annotations

from datetime import datetime

from lmo import conditions as C
from lmo import labels as L
from lmo.api import VERSION_HEADER, LanguageModel, RoutingProvider, Strategy
from lmo.builders.base import Owner, VersionPlan, owner_reference
from lmo.builders.triton import HTTP_PORT, service_ports
from lmo.conditions import Reason
from lmo.settings import OperatorSettings

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"


def routed(plans: list[VersionPlan]) -> list[VersionPlan]:
    """Plans that receive weighted traffic: servable (a Deployment exists) and traffic > 0."""
    return [p for p in plans if p.serve_uri is not None and p.traffic > 0]


def service_replicas(lm: LanguageModel, plans: list[VersionPlan]) -> dict[str, int]:
    """Replicas per servable version when provider Service approximates the traffic weights.

    The routed versions share a pool of `serving.replicas x (number of routed versions)`
    pods (as many as GatewayAPI would run), apportioned by traffic with the largest
    remainder method: each version gets floor(pool x traffic / total), and the pods left
    over go to the largest fractional parts (ties: spec order). A routed version then gets
    at least one pod, taken from the version with the most (ties: the one with less traffic,
    then the later one), so more traffic never means fewer pods. Example:
    replicas 2, traffic 90/10 -> pool 4 -> 3.6/0.4 -> 4/0 -> 3/1, i.e. 75%/25% routed.
    Versions with traffic 0 run serving.replicas like under GatewayAPI: they are out of the
    shared Service (reachable through `<lm>-<version>`) and ready when a rollout gives them
    traffic; a rollout that wants them gone says so with bounds (see build_children).
    """
    per_version = lm.spec.serving.replicas
    out = {p.name: per_version for p in plans if p.serve_uri is not None}
    active = routed(plans)
    if not active or per_version == 0:
        return out
    pool = per_version * len(active)
    total = sum(p.traffic for p in active)
    share = {p.name: pool * p.traffic // total for p in active}
    left = pool - sum(share.values())
    order = sorted(range(len(active)), key=lambda i: (-(pool * active[i].traffic % total), i))
    for i in order[:left]:
        share[active[i].name] += 1
    for p in active:
        if share[p.name] == 0:
            # the donor has the most pods; among equals the least traffic, then the later one,
            # so a version with more traffic never ends up with fewer pods
            donor = max(
                enumerate(active), key=lambda iq: (share[iq[1].name], -iq[1].traffic, iq[0])
            )[1]
            share[donor.name] -= 1
            share[p.name] = 1
    out.update(share)
    return out


def _parent_ref(lm: LanguageModel, settings: OperatorSettings) -> dict:
    ref = lm.spec.routing.parent_ref
    out = {"group": GATEWAY_GROUP, "kind": "Gateway"}
    if ref is not None:
        out["name"] = ref.name
        if ref.namespace:
            out["namespace"] = ref.namespace
        if ref.section_name:
            out["sectionName"] = ref.section_name
    else:
        out["name"] = settings.gateway_name
        if settings.gateway_namespace:
            out["namespace"] = settings.gateway_namespace
    return out


def _backend(lm_name: str, version: str, weight: int | None = None) -> dict:
    out: dict = {"name": f"{lm_name}-{version}", "port": HTTP_PORT}
    if weight is not None:
        out["weight"] = weight
    return out


def route_prefix(lm: LanguageModel) -> str:
    """`/<namespace>/<name>`: the LanguageModel's own path prefix on a shared listener, or ""
    with routing.hostname (the model has the whole host)."""
    if lm.spec.routing.hostname:
        return ""
    return f"/{lm.metadata.namespace or 'default'}/{lm.metadata.name}"


def _match(prefix: str, headers: list[dict] | None = None) -> dict:
    out: dict = {"path": {"type": "PathPrefix", "value": prefix or "/"}}
    if headers:
        out["headers"] = headers
    return out


def is_experiment(lm: LanguageModel) -> bool:
    r = lm.spec.rollout
    return r is not None and r.strategy == Strategy.EXPERIMENT.value


def build_httproute(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plans: list[VersionPlan]
) -> dict:
    """The HTTPRoute `<lm>` (gateway.networking.k8s.io/v1).

    Rules: with abTest, one rule per servable version matching `<header>: <version>` (exact)
    that sends to that version only, whatever its weight; then the default rule with a
    weighted backendRef per routed version (weight = traffic; 0% versions are left out).
    When nothing is routable the default rule has no backends: the Gateway answers 500 and
    the reconciler's conditions say why. mirror adds a RequestMirror filter copying
    `percent` of the default rule's requests to that version (the field is left out at
    100%, which Gateway API releases before percentage mirroring also understand), unless
    that version is the only weighted backend (after a promotion, say): the gateway would
    copy every request of that version to itself, doubling its load for nothing.

    Every rule matches the path prefix `/<namespace>/<name>` only and strips it (URLRewrite
    ReplacePrefixMatch `/`), so each LanguageModel on a shared listener owns its requests;
    with routing.hostname the route matches that host and every path instead.

    Experiment: the version rules use `x-lmo-version` when abTest is unset, so a feedback
    report (`POST /v1/feedback` naming the version that answered, which every answer of a
    front names) reaches that version's front. routing.sticky adds header
    sessionPersistence to the weighted rule when the operator setting
    gatewaySessionPersistence says the cluster has it (`sticky_conditions` says so either
    way).

    The filter is on the rule, so while the mirror version also carries weight (a canary
    step) the gateway copies `percent` of its own requests to it too: a rule-level filter
    cannot tell backends apart, and a RequestMirror on each other backendRef instead is
    "Implementation-specific" in Gateway API (a gateway without it may reject the route),
    so lmo keeps the portable form.
    """
    routing = lm.spec.routing
    lm_name = lm.metadata.name
    servable = [p for p in plans if p.serve_uri is not None]
    prefix = route_prefix(lm)
    rules: list[dict] = []
    experiment = is_experiment(lm)
    header = routing.ab_test.header if routing.ab_test else (VERSION_HEADER if experiment else None)
    if header is not None:
        for p in servable:
            rules.append({
                "matches": [_match(prefix, [{"type": "Exact", "name": header, "value": p.name}])],
                "backendRefs": [_backend(lm_name, p.name)],
            })
    weighted = routed(plans)
    default: dict = {"matches": [_match(prefix)],
                     "backendRefs": [_backend(lm_name, p.name, p.traffic) for p in weighted]}
    if routing.sticky is not None and settings.gateway_session_persistence:
        # Gateway API experimental channel (GEP-1619): the gateway pins a client to the
        # backend it first got, through the header named here
        default["sessionPersistence"] = {"sessionName": routing.sticky.header, "type": "Header"}
    mirror = routing.mirror
    if (
        mirror is not None
        and any(p.name == mirror.version for p in servable)
        and [p.name for p in weighted] != [mirror.version]  # it would mirror to itself
    ):
        request_mirror: dict = {"backendRef": _backend(lm_name, mirror.version)}
        if mirror.percent < 100:
            request_mirror["percent"] = mirror.percent
        default["filters"] = [{"type": "RequestMirror", "requestMirror": request_mirror}]
    rules.append(default)
    if prefix:
        strip = {"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}
        for rule in rules:
            rule["filters"] = [strip, *rule.get("filters", [])]
    protection = lm.spec.protection
    if protection is not None and protection.timeout is not None:
        for rule in rules:  # every rule: a header-routed request has the same limit
            rule["timeouts"] = {"request": protection.timeout}

    spec: dict = {"parentRefs": [_parent_ref(lm, settings)]}
    hostnames = ([routing.hostname] if routing.hostname else []) + [
        h for h in routing.hostnames if h != routing.hostname]
    if hostnames:
        spec["hostnames"] = hostnames
    spec["rules"] = rules
    return {
        "apiVersion": HTTPROUTE_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": lm_name,
            "namespace": owner.namespace,
            "labels": L.labels(lm_name, component=L.ROUTER),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def sticky_conditions(conditions: list[dict], lm: LanguageModel, settings: OperatorSettings,
                      generation: int | None, now: datetime) -> list[dict]:
    """status.conditions with `Sticky` saying whether spec.routing.sticky is rendered on the
    cluster (never silently dropped), or without it when sticky is not asked for."""
    sticky = lm.spec.routing.sticky
    if sticky is None:
        return [c for c in conditions if c.get("type") != C.STICKY]
    if settings.gateway_session_persistence:
        return C.set_condition(
            conditions, C.STICKY, C.TRUE, Reason.SESSION_PERSISTENCE,
            f"the HTTPRoute's weighted rule keeps each client on one version with header "
            f"session persistence ({sticky.header})", generation, now)
    return C.set_condition(
        conditions, C.STICKY, C.FALSE, Reason.SESSION_PERSISTENCE_UNAVAILABLE,
        f"spec.routing.sticky ({sticky.header}) is not applied: HTTPRoute sessionPersistence "
        "is in the Gateway API experimental channel only; install its HTTPRoute CRD and a "
        "gateway that implements header session persistence, then set the operator setting "
        "gatewaySessionPersistence: true (chart value settings.gatewaySessionPersistence). "
        "Until then each request follows the weights on its own", generation, now)


def build_provider_service(lm: LanguageModel, owner: Owner) -> dict:
    """The Service `<lm>` over the routed Triton pods of every version (provider Service)."""
    lm_name = lm.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": lm_name,
            "namespace": owner.namespace,
            "labels": L.labels(lm_name, component=L.ROUTER),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {**L.selector(lm_name), L.ROUTED: "true"},
            "ports": service_ports(metrics=False),
        },
    }


def build_route(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plans: list[VersionPlan]
) -> list[dict]:
    """The routing child for spec.routing.provider."""
    if lm.spec.routing.provider == RoutingProvider.SERVICE.value:
        return [build_provider_service(lm, owner)]
    return [build_httproute(lm, owner, settings, plans)]


def endpoint(lm: LanguageModel, settings: OperatorSettings) -> str:
    """`status.endpoint`: the clients' base URL (OpenAI-compatible at `<endpoint>/v1`, the
    text API at `<endpoint>/v1/<task>`, KServe v2 at `<endpoint>/v2`).

    GatewayAPI: http://<routing.hostname> when set; else http://<first hostname that is not a
    wildcard, else settings.gateway_address, else <gateway>.<gateway namespace>>
    /<namespace>/<name>. Service: http://<lm>.<ns>.svc:8000.
    """
    namespace = lm.metadata.namespace or "default"
    routing = lm.spec.routing
    if routing.provider == RoutingProvider.SERVICE.value:
        return f"http://{lm.metadata.name}.{namespace}.svc:{HTTP_PORT}"
    concrete = [h for h in [routing.hostname or "", *routing.hostnames]
                if h and not h.startswith("*")]
    if concrete:
        host = concrete[0]
    elif settings.gateway_address:
        host = settings.gateway_address
    else:
        ref = _parent_ref(lm, settings)
        host = f"{ref['name']}.{ref.get('namespace', namespace)}"
    return f"http://{host}{route_prefix(lm)}"
