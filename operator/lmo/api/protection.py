"""spec.protection: API keys, rate limit, circuit breaker, timeout."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from lmo.api.base import GATEWAY_DURATION, Rule, SecretRef, _Model, cel_rules, rules_validator


class ApiKeys(_Model):
    secret_ref: SecretRef = Field(
        description="Secret whose data keys are client ids and whose values are their API "
        "keys. Clients send Authorization: Bearer <key>."
    )


class Auth(_Model):
    api_keys: ApiKeys = Field(
        description="API-key authentication: no key -> 401, an unknown key -> 403 (Envoy "
        "Gateway answers 401 for both)."
    )


_RATE_RULES = (
    Rule("!has(self.burst) || self.burst >= self.requestsPerSecond",
         "spec.protection.rateLimit.burst must be at least requestsPerSecond", ".burst",
         lambda r: r.burst is not None and r.burst < r.requests_per_second),
)


class RateLimit(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_RATE_RULES))

    requests_per_second: int = Field(
        ge=1, le=1_000_000, description="Sustained requests per second admitted (token refill)."
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Bucket size: requests admitted at once after a quiet spell "
        "(default requestsPerSecond). Beyond the rate the client gets 429 with Retry-After.",
    )
    per_client: bool = Field(
        default=False,
        description="One bucket per client id (needs auth.apiKeys), else one for the route.",
    )

    _rules = rules_validator(_RATE_RULES)

    @property
    def bucket(self) -> int:
        return self.burst if self.burst is not None else self.requests_per_second


class CircuitBreaker(_Model):
    max_pending_requests: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="Requests in flight per version; one more gets a fast 503 with "
        "Retry-After.",
    )
    consecutive_errors: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="5xx answers (or no answer) in a row that eject a version for "
        "ejectionTime; its traffic goes to the other versions meanwhile, then one probe "
        "request decides whether it is back.",
    )
    ejection_time: str = Field(
        default="30s",
        pattern=GATEWAY_DURATION,
        description="How long an ejected version takes no requests (e.g. 30s).",
    )


class Protection(_Model):
    timeout: str | None = Field(
        default=None,
        pattern=GATEWAY_DURATION,
        description="Longest a whole request may take (e.g. 30s, 1m30s, 500ms); beyond it "
        "the client gets 504. On the cluster it is the HTTPRoute rules' timeouts.request "
        "(standard Gateway API), under lmo up the front door's.",
    )
    auth: Auth | None = Field(
        default=None,
        description="Who may call (needs routing.policies: EnvoyGateway on the cluster).",
    )
    rate_limit: RateLimit | None = Field(
        default=None,
        description="Token bucket over the whole route or per client (needs routing.policies: "
        "EnvoyGateway on the cluster).",
    )
    circuit_breaker: CircuitBreaker | None = Field(
        default=None,
        description="Per-version pending limit and ejection of a failing version (needs "
        "routing.policies: EnvoyGateway or Istio on the cluster).",
    )
