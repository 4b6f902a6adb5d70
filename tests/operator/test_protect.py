"""lmo.protect: the rules of spec.protection with a driven clock (no sleeping, no chance)."""

from __future__ import annotations

import pytest

from lmo.api import LanguageModelSpec, Protection
from lmo.protect import Breaker, Gate, KeyTable, Refusal, TokenBucket

KEYS = {"alice": "k-alice-0123456789", "bob": "k-bob-9876543210"}


def test_keys_missing_unknown_and_known() -> None:
    table = KeyTable(KEYS)
    for header in (None, "", "   "):
        r = table.client(header)
        assert isinstance(r, Refusal) and r.status == 401
    r = table.client("Basic abc")
    assert isinstance(r, Refusal) and r.status == 401
    r = table.client("Bearer not-a-key")
    assert isinstance(r, Refusal) and r.status == 403
    assert table.client("Bearer k-alice-0123456789") == "alice"
    assert table.client("bearer  k-bob-9876543210 ") == "bob"


def test_refusals_never_carry_a_key() -> None:
    table = KeyTable(KEYS)
    for header in ("Bearer k-alice-0123456789x", "Bearer wrong", "Token k-bob-9876543210"):
        r = table.client(header)
        assert isinstance(r, Refusal)
        assert "k-alice" not in r.message and "k-bob" not in r.message
        assert "wrong" not in r.message


def test_token_bucket_admits_burst_then_the_rate() -> None:
    b = TokenBucket(rate=10.0, size=20.0)
    admitted = sum(b.take(0.0) == 0.0 for _ in range(50))
    assert admitted == 20
    wait = b.take(0.0)
    assert 0.09 < wait <= 0.1  # one token every 1/10 s
    # over 10 s of steady demand at 100/s: 10/s get through
    admitted = sum(b.take(t / 100) == 0.0 for t in range(1, 1001))
    assert admitted in (99, 100)  # float steps of 1/100 s


def test_gate_rate_per_client_and_for_the_route() -> None:
    spec = {"requestsPerSecond": 2, "burst": 2, "perClient": True}
    p = Protection.model_validate({"auth": {"apiKeys": {"secretRef": {"name": "k"}}},
                                   "rateLimit": spec})
    gate = Gate(p, KEYS)
    a, b = "Bearer " + KEYS["alice"], "Bearer " + KEYS["bob"]
    assert [gate.check(a, 0.0) for _ in range(2)] == ["alice", "alice"]
    r = gate.check(a, 0.0)
    assert isinstance(r, Refusal) and r.status == 429 and r.retry_after == 1
    assert "client alice" in r.message and KEYS["alice"] not in r.message
    assert gate.check(b, 0.0) == "bob"  # bob has his own bucket
    assert gate.check(a, 0.5) == "alice"  # one token back after 1/2 s
    shared = Gate(Protection.model_validate({"rateLimit": {"requestsPerSecond": 1}}))
    assert shared.check(None, 0.0) is None
    r = shared.check(None, 0.1)
    assert isinstance(r, Refusal) and r.status == 429 and "this model" in r.message


def test_gate_auth_comes_before_the_rate() -> None:
    p = Protection.model_validate({"auth": {"apiKeys": {"secretRef": {"name": "k"}}},
                                   "rateLimit": {"requestsPerSecond": 1}})
    gate = Gate(p, KEYS)
    for _ in range(5):  # refused clients use no tokens
        assert gate.check(None, 0.0).status == 401  # type: ignore[union-attr]
        assert gate.check("Bearer nope", 0.0).status == 403  # type: ignore[union-attr]
    assert gate.check("Bearer " + KEYS["bob"], 0.0) == "bob"


def test_breaker_pending_limit() -> None:
    br = Breaker(max_pending=2, threshold=None, ejection=30)
    assert br.admit("v1", 0) is None and br.admit("v1", 0) is None
    r = br.admit("v1", 0)
    assert r is not None and r.status == 503 and r.retry_after == 1
    assert br.admit("v2", 0) is None  # per version
    br.done("v1", True, 0)
    assert br.admit("v1", 0) is None


def test_breaker_ejects_after_consecutive_errors_and_probes_once() -> None:
    br = Breaker(max_pending=None, threshold=3, ejection=30)
    for i in range(2):
        assert br.admit("v1", i) is None
        br.done("v1", False, i)
    assert br.admit("v1", 2) is None
    br.done("v1", True, 2)  # a success resets the count
    for i in range(3):
        assert not br.ejected("v1", 3 + i)
        assert br.admit("v1", 3 + i) is None
        br.done("v1", False, 3 + i)
    assert br.ejected("v1", 5) and br.state(5) == {"v1": "ejected"}
    r = br.admit("v1", 10)
    assert r is not None and r.status == 503 and r.retry_after == 25
    # after ejectionTime: exactly one probe
    assert not br.ejected("v1", 35.1)
    assert br.admit("v1", 35.1) is None
    assert br.ejected("v1", 35.2)
    assert br.admit("v1", 35.2).status == 503  # type: ignore[union-attr]
    br.done("v1", False, 36)  # the probe failed: out for another ejectionTime
    assert br.ejected("v1", 60) and not br.ejected("v1", 66.1)
    assert br.admit("v1", 66.1) is None
    br.done("v1", True, 66.2)  # the probe succeeded: back
    assert br.state(67) == {"v1": "closed"}
    assert br.admit("v1", 67) is None and br.admit("v1", 67) is None


def _spec(**over):
    base = {"task": "feature-extraction",
            "versions": [{"name": "v1", "checkpoint": {"uri": "file:///m"}}]}
    base.update(over)
    return base


@pytest.mark.parametrize("over, needle", [
    ({"protection": {"auth": {"apiKeys": {"secretRef": {"name": "k"}}}}},
     "spec.protection.auth needs spec.routing.policies: EnvoyGateway"),
    ({"protection": {"rateLimit": {"requestsPerSecond": 5}}, "routing": {"policies": "Istio"}},
     "spec.protection.rateLimit needs spec.routing.policies: EnvoyGateway"),
    ({"protection": {"circuitBreaker": {"consecutiveErrors": 5}}},
     "spec.protection.circuitBreaker needs spec.routing.policies: EnvoyGateway or Istio"),
    ({"protection": {"rateLimit": {"requestsPerSecond": 5, "perClient": True}},
      "routing": {"policies": "EnvoyGateway"}},
     "perClient needs spec.protection.auth"),
    ({"protection": {"rateLimit": {"requestsPerSecond": 5, "burst": 10}},
      "routing": {"policies": "EnvoyGateway"}},
     "burst must equal requestsPerSecond"),
    ({"protection": {"rateLimit": {"requestsPerSecond": 5, "burst": 2}}},
     "burst must be at least requestsPerSecond"),
    ({"routing": {"policies": "Istio", "provider": "Service"}},
     "spec.routing.policies needs provider: GatewayAPI"),
    ({"serving": {"queue": {"maxSize": 8}, "batching": {"maxBatchSize": 0}}},
     "spec.serving.queue needs spec.serving.batching.maxBatchSize > 0"),
])
def test_what_a_gateway_cannot_do_is_refused(over, needle) -> None:
    with pytest.raises(ValueError, match=needle.replace(".", r"\.").replace("(", r"\(")):
        LanguageModelSpec.model_validate(_spec(**over))


def test_what_each_gateway_can_do_is_accepted() -> None:
    LanguageModelSpec.model_validate(_spec(
        protection={"auth": {"apiKeys": {"secretRef": {"name": "k"}}},
                    "rateLimit": {"requestsPerSecond": 5, "perClient": True},
                    "circuitBreaker": {"maxPendingRequests": 8, "consecutiveErrors": 3},
                    "timeout": "30s"},
        routing={"policies": "EnvoyGateway"}, serving={"queue": {"maxSize": 8, "timeout": "2s"}}))
    LanguageModelSpec.model_validate(_spec(
        protection={"circuitBreaker": {"consecutiveErrors": 3}, "timeout": "5s"},
        routing={"policies": "Istio"}))
