"""spec.routing: provider, A/B header, sticky sessions, mirroring."""

from __future__ import annotations

from pydantic import Field

from lmo.api.base import DNS_LABEL, MAX_VERSION_NAME, VERSION_HEADER, _Model
from lmo.api.enums import PolicyProvider, RoutingProvider


class ParentRef(_Model):
    name: str = Field(description="Name of the Gateway the HTTPRoute attaches to.")
    namespace: str | None = Field(default=None, description="Namespace of the Gateway.")
    section_name: str | None = Field(default=None, description="Listener name on the Gateway.")


class AbTest(_Model):
    header: str = Field(
        default=VERSION_HEADER,
        pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$",
        max_length=256,
        description="HTTP header naming a version: a request carrying it goes to that "
        "version; other requests follow the weights.",
    )


class Sticky(_Model):
    header: str = Field(
        pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$",
        max_length=256,
        description="HTTP header identifying a user (e.g. x-user-id): requests with the same "
        "value go to the same version, and the users split as the weights say. On the "
        "cluster it becomes the HTTPRoute's header-based sessionPersistence (experimental "
        "Gateway API CRDs); under lmo up the value is hashed into the weight buckets.",
    )


class Mirror(_Model):
    version: str = Field(
        description="Version that receives a copy of requests.",
        pattern=DNS_LABEL,
        max_length=MAX_VERSION_NAME,
    )
    percent: int = Field(
        default=100, ge=1, le=100, description="Share of requests copied (responses discarded)."
    )


class Routing(_Model):
    provider: RoutingProvider = Field(
        default=RoutingProvider.GATEWAY_API,
        description="GatewayAPI: one HTTPRoute with weighted backends, header matches "
        "and a RequestMirror filter. Service: one Service over all versions, traffic "
        "approximated by replica counts (no header A/B, no mirror).",
    )
    parent_ref: ParentRef | None = Field(
        default=None, description="Gateway the HTTPRoute attaches to (GatewayAPI)."
    )
    hostname: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
        description="The model's own host name (e.g. chat.example.com): its HTTPRoute "
        "matches that host and every path. Without it the model gets the path prefix "
        "/<namespace>/<name> on the Gateway's shared listener (stripped before its pods), "
        "so models on one Gateway never collide. status.endpoint is the base URL either way.",
    )
    hostnames: list[str] = Field(
        default_factory=list, max_length=16,
        description="More hostnames the HTTPRoute matches (the path prefix still applies "
        "unless hostname is set).",
    )
    ab_test: AbTest | None = Field(
        default=None, description="Route requests naming a version in a header to it."
    )
    mirror: Mirror | None = Field(default=None, description="Shadow traffic to one version.")
    sticky: Sticky | None = Field(
        default=None,
        description="Send the same user (a header value) to the same version, consistent "
        "with the weights: what an Experiment needs so one user sees one version.",
    )
    policies: PolicyProvider = Field(
        default=PolicyProvider.NONE,
        description="Which gateway's own policies carry spec.protection beyond the standard "
        "HTTPRoute timeout. None: standard objects only (API keys, rate limits and the "
        "circuit breaker are refused). EnvoyGateway: a BackendTrafficPolicy (rate limit, "
        "circuit breaker, passive health check) and a SecurityPolicy (API keys) on the "
        "HTTPRoute. Istio: a DestinationRule per version (circuit breaker) and an "
        "AuthorizationPolicy; Istio has no API-key auth or local rate limit as a policy.",
    )
    network_policy: bool = Field(
        default=True,
        description="A NetworkPolicy per LanguageModel: only the gateway's namespace, the "
        "operator and the metrics scraper reach its Triton pods (selectors are Helm values).",
    )
