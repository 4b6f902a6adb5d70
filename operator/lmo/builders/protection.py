"""spec.protection and routing.networkPolicy as the cluster's own objects (pure).

Standard objects first: the request timeout is the HTTPRoute's `timeouts.request`
(lmo.builders.traffic), the queue policy is in each version's config.pbtxt (the
conversion), and the NetworkPolicy `<lm>` lets only the Gateway's namespace, the operator and
the metrics scraper reach the Triton pods. Beyond that each gateway has its own policies:

* EnvoyGateway: BackendTrafficPolicy `<lm>` on the HTTPRoute (local rate limit, per client
  through the client id SecurityPolicy forwards; circuit breaker; passive health check =
  outlier ejection) and SecurityPolicy `<lm>` (API keys from the Secret).
* Istio: DestinationRule `<lm>-<version>` per version Service (connection pool + outlier
  detection) and AuthorizationPolicy `<lm>` on the Triton pods (only the peers of the
  NetworkPolicy). What Istio lacks (API keys from a Secret, a local rate limit as a policy) is
  refused by the spec's CEL rules, never dropped here.
"""

from __future__ import annotations

from lmo import labels as L
from lmo.api import LanguageModel, PolicyProvider, RoutingProvider
from lmo.builders.base import Owner, VersionPlan, owner_reference
from lmo.builders.triton import HTTP_PORT, METRICS_PORT
from lmo.settings import OperatorSettings

ENVOY_GATEWAY_API_VERSION = "gateway.envoyproxy.io/v1alpha1"
ISTIO_NETWORKING_API_VERSION = "networking.istio.io/v1"
ISTIO_SECURITY_API_VERSION = "security.istio.io/v1"
# The header Envoy Gateway's API-key filter fills with the client id (the Secret's data key);
# the per-client rate limit keys its buckets on it.
CLIENT_HEADER = "x-lmo-client"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


def _meta(lm: LanguageModel, owner: Owner, name: str) -> dict:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": L.labels(lm.metadata.name, component=L.ROUTER),
        "ownerReferences": [owner_reference(owner)],
    }


def _route_ref(lm: LanguageModel) -> list[dict]:
    return [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute",
             "name": lm.metadata.name}]


def gateway_namespace(lm: LanguageModel, owner: Owner, settings: OperatorSettings) -> str:
    ref = lm.spec.routing.parent_ref
    if ref is not None:
        return ref.namespace or owner.namespace
    return settings.gateway_namespace or owner.namespace


def _ns(name: str) -> dict:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def build_network_policy(lm: LanguageModel, owner: Owner, settings: OperatorSettings) -> dict:
    """NetworkPolicy `<lm>`: ingress to the LanguageModel's Triton pods from the gateway
    (inference ports), the operator (inference and metrics) and the scraper (metrics)."""
    gateway = settings.gateway_peers or [_ns(gateway_namespace(lm, owner, settings))]
    operator_peer = {"podSelector": {"matchLabels": dict(settings.operator_pod_labels)}}
    if settings.operator_namespace:
        operator_peer.update(_ns(settings.operator_namespace))
    serving = [{"protocol": "TCP", "port": HTTP_PORT}]  # the front; Triton is on loopback
    metrics = [{"protocol": "TCP", "port": METRICS_PORT}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(lm, owner, lm.metadata.name),
        "spec": {
            "podSelector": {"matchLabels": L.selector(lm.metadata.name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": gateway, "ports": serving},
                {"from": [operator_peer], "ports": serving + metrics},
                {"from": list(settings.metrics_peers), "ports": metrics},
            ],
        },
    }


def build_envoy_policies(lm: LanguageModel, owner: Owner) -> list[dict]:
    """BackendTrafficPolicy and SecurityPolicy `<lm>` on the HTTPRoute (what is asked)."""
    p = lm.spec.protection
    if p is None:
        return []
    out: list[dict] = []
    traffic: dict = {}
    if p.rate_limit is not None:
        rule: dict = {"limit": {"requests": p.rate_limit.requests_per_second, "unit": "Second"}}
        if p.rate_limit.per_client:
            rule["clientSelectors"] = [{"headers": [{"name": CLIENT_HEADER, "type": "Distinct"}]}]
        traffic["rateLimit"] = {"local": {"rules": [rule]}}
    cb = p.circuit_breaker
    if cb is not None and cb.max_pending_requests is not None:
        traffic["circuitBreaker"] = {"maxPendingRequests": cb.max_pending_requests}
    if cb is not None and cb.consecutive_errors is not None:
        traffic["healthCheck"] = {"passive": {
            "consecutive5XxErrors": cb.consecutive_errors,
            "baseEjectionTime": cb.ejection_time,
            "interval": "1s",
            # one Triton pod per version is common: let it go all the same
            "maxEjectionPercent": 100,
        }}
    if traffic:
        out.append({
            "apiVersion": ENVOY_GATEWAY_API_VERSION,
            "kind": "BackendTrafficPolicy",
            "metadata": _meta(lm, owner, lm.metadata.name),
            "spec": {"targetRefs": _route_ref(lm), **traffic},
        })
    if p.auth is not None:
        out.append({
            "apiVersion": ENVOY_GATEWAY_API_VERSION,
            "kind": "SecurityPolicy",
            "metadata": _meta(lm, owner, lm.metadata.name),
            "spec": {
                "targetRefs": _route_ref(lm),
                "apiKeyAuth": {
                    "credentialRefs": [{"group": "", "kind": "Secret",
                                        "name": p.auth.api_keys.secret_ref.name}],
                    "extractFrom": [{"headers": ["Authorization"]}],
                    "forwardClientIDHeader": CLIENT_HEADER,
                    "sanitize": True,  # the key never reaches Triton (or its logs)
                },
            },
        })
    return out


def build_istio_policies(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plans: list[VersionPlan]
) -> list[dict]:
    """A DestinationRule per served version (circuit breaker) and, with networkPolicy, an
    AuthorizationPolicy admitting the NetworkPolicy's peers' namespaces only."""
    out: list[dict] = []
    p = lm.spec.protection
    cb = p.circuit_breaker if p is not None else None
    if cb is not None:
        for plan in plans:
            if plan.serve_uri is None:
                continue
            name = f"{lm.metadata.name}-{plan.name}"
            policy: dict = {}
            if cb.max_pending_requests is not None:
                policy["connectionPool"] = {"http": {
                    "http1MaxPendingRequests": cb.max_pending_requests}}
            if cb.consecutive_errors is not None:
                policy["outlierDetection"] = {
                    "consecutive5xxErrors": cb.consecutive_errors,
                    "interval": "1s",
                    "baseEjectionTime": cb.ejection_time,
                    "maxEjectionPercent": 100,
                }
            out.append({
                "apiVersion": ISTIO_NETWORKING_API_VERSION,
                "kind": "DestinationRule",
                "metadata": {**_meta(lm, owner, name),
                             "labels": L.labels(lm.metadata.name, plan.name, L.ROUTER)},
                "spec": {"host": f"{name}.{owner.namespace}.svc.cluster.local",
                         "trafficPolicy": policy},
            })
    if lm.spec.routing.network_policy:
        namespaces = sorted({gateway_namespace(lm, owner, settings),
                             *([settings.operator_namespace] if settings.operator_namespace
                               else [])})
        out.append({
            "apiVersion": ISTIO_SECURITY_API_VERSION,
            "kind": "AuthorizationPolicy",
            "metadata": _meta(lm, owner, lm.metadata.name),
            "spec": {
                "selector": {"matchLabels": L.selector(lm.metadata.name)},
                "action": "ALLOW",
                "rules": [
                    {"from": [{"source": {"namespaces": namespaces}}]},
                    # the scraper (often outside the mesh) reads metrics only
                    {"to": [{"operation": {"ports": [str(METRICS_PORT)]}}]},
                ],
            },
        })
    return out


def build_protection(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plans: list[VersionPlan]
) -> list[dict]:
    """Every protection child of `lm`, in a deterministic order."""
    out: list[dict] = []
    if lm.spec.routing.network_policy and lm.spec.routing.provider != RoutingProvider.SERVICE.value:
        # provider Service: clients reach the Service directly, from anywhere; no policy can
        # tell them apart from strangers, so none is made (docs/protection.md)
        out.append(build_network_policy(lm, owner, settings))
    policies = lm.spec.routing.policies
    if policies == PolicyProvider.ENVOY_GATEWAY.value:
        out.extend(build_envoy_policies(lm, owner))
    elif policies == PolicyProvider.ISTIO.value:
        out.extend(build_istio_policies(lm, owner, settings, plans))
    return out
