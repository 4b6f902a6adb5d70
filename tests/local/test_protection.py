"""spec.protection at the front door of `lmo up`, over stand-in Triton servers (aiohttp apps
that fail or stall on demand: faults a real Triton won't produce when asked). The real
`lmo up` with real Triton is tests/local/test_protection_up.py."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from lmo.api import parse as parse_lm
from lmo.errors import UserError
from lmo.local.controller import Backend, Controller
from lmo.local.frontdoor import FrontDoor
from lmo.local.secrets import api_keys, env_name, load_file
from tests.local.conftest import serving_app

KEYS = {"alice": "sk-alice-5f0c2e", "bob": "sk-bob-91aa7d"}
GOOD = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]}
INFER = "/v2/models/text_classification/infer"


class StandIn:
    """A Triton stand-in: answers 200, or 500 while `failing`, after `delay` seconds."""

    def __init__(self) -> None:
        self.failing = False
        self.delay = 0.0
        self.calls = 0
        self.app = web.Application()
        self.app.router.add_post("/v2/models/{m}/infer", self.infer)

    async def infer(self, request: web.Request) -> web.Response:
        self.calls += 1
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failing:
            return web.json_response({"error": "model crashed"}, status=500)
        return web.json_response({"outputs": []})


def _lm(protection: dict, versions: list[tuple[str, int]], policies: str = "EnvoyGateway"):
    return parse_lm({
        "apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "m"},
        "spec": {"task": "text-classification", "protection": protection,
                 "routing": {"policies": policies, "abTest": {}},
                 "versions": [{"name": n, "traffic": w, "checkpoint": {"uri": f"s3://m/{n}/"}}
                              for n, w in versions]}})


class Door:
    def __init__(self, lm, servers: dict[str, StandIn], secrets=None):
        self.lm, self.servers, self.secrets = lm, servers, secrets
        self.stack = []

    async def __aenter__(self):
        backends = {}
        for name, server in self.servers.items():
            ctx = serving_app(server.app)
            port = await ctx.__aenter__()
            self.stack.append(ctx)
            artifact = SimpleNamespace(directory=Path("/nonexistent"),
                                       repository=Path("/nonexistent"), spec_key="k",
                                       manifest=SimpleNamespace(summary=lambda uri: {"uri": uri}))
            backends[name] = Backend(name, f"http://127.0.0.1:{port}", "", "", artifact)
        self.controller = Controller(self.lm, backends=backends)
        for name in backends:
            self.controller.set_ready(name, True)
        self.door = FrontDoor(self.controller, self.secrets)
        self.url = f"http://127.0.0.1:{await self.door.start()}"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.door.stop()
        for ctx in reversed(self.stack):
            await ctx.__aexit__(None, None, None)

    async def post(self, key: str | None = None, **headers) -> tuple[int, dict, dict]:
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.session.post(self.url + INFER, json=GOOD, headers=headers) as r:
            return r.status, dict(r.headers), await r.json()


AUTH = {"auth": {"apiKeys": {"secretRef": {"name": "chat-keys"}}}}


async def test_api_keys_401_403_and_no_key_in_any_log(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    lm = _lm(AUTH, [("v1", 100)])
    async with Door(lm, {"v1": StandIn()}, {"chat-keys": KEYS}) as d:
        status, _, body = await d.post()
        assert status == 401 and "Bearer" in body["error"]
        status, _, body = await d.post("sk-mallory-000")
        assert status == 403 and body == {"error": "unknown API key"}
        for key in KEYS.values():
            status, headers, _ = await d.post(key)
            assert status == 200 and headers["x-lmo-version"] == "v1"
        # the admin API and the health probe stay open, as on the cluster
        async with d.session.get(d.url + "/v2/health/live") as r:
            assert r.status == 200
        assert d.servers["v1"].calls == 2
        async with d.session.get(d.url + "/lmo/status") as r:
            assert (await r.json())["protection"] == {"apiKeys": 2}
    text = caplog.text + str(d.controller.status())
    for key in [*KEYS.values(), "sk-mallory-000"]:
        assert key not in text


async def test_rate_limit_429_with_retry_after_per_client() -> None:
    lm = _lm({**AUTH, "rateLimit": {"requestsPerSecond": 2, "perClient": True}}, [("v1", 100)])
    async with Door(lm, {"v1": StandIn()}, {"chat-keys": KEYS}) as d:
        got = [(await d.post(KEYS["alice"]))[0] for _ in range(3)]
        assert got[:2] == [200, 200] and got[2] == 429
        status, headers, body = await d.post(KEYS["alice"])
        assert status == 429 and headers["Retry-After"] == "1"
        assert "client alice" in body["error"] and "spec.protection.rateLimit" in body["error"]
        assert (await d.post(KEYS["bob"]))[0] == 200  # bob's bucket is his own


async def test_max_pending_gives_fast_503() -> None:
    slow = StandIn()
    slow.delay = 1.0
    lm = _lm({"circuitBreaker": {"maxPendingRequests": 2}}, [("v1", 100)], policies="Istio")
    async with Door(lm, {"v1": slow}) as d:
        results = await asyncio.gather(*(d.post() for _ in range(5)))
        statuses = sorted(r[0] for r in results)
        assert statuses == [200, 200, 503, 503, 503]
        refused = [r for r in results if r[0] == 503]
        assert all(r[1]["Retry-After"] == "1" and r[1]["x-lmo-version"] == "v1" for r in refused)
        assert "maxPendingRequests" in refused[0][2]["error"]
        assert slow.calls == 2


async def test_failing_version_is_ejected_then_probed_back() -> None:
    v1, v2 = StandIn(), StandIn()
    v2.failing = True
    lm = _lm({"circuitBreaker": {"consecutiveErrors": 3, "ejectionTime": "1s"}},
             [("v1", 50), ("v2", 50)])
    async with Door(lm, {"v1": v1, "v2": v2}) as d:
        seen = [await d.post() for _ in range(20)]
        failures = [s for s in seen if s[0] == 500]
        assert len(failures) == 3  # ejected on the third error in a row
        assert v2.calls == 3
        # while out, its share goes to v1; naming it in the header gets the breaker's 503
        assert all(s[0] == 200 and s[1]["x-lmo-version"] == "v1" for s in seen[-10:])
        status, headers, body = await d.post(**{"x-lmo-version": "v2"})
        assert status == 503 and int(headers["Retry-After"]) >= 1 and "ejected" in body["error"]
        v2.failing = False  # the version recovers; after ejectionTime one probe brings it back
        await asyncio.sleep(1.2)
        after = [await d.post() for _ in range(10)]
        assert {s[1]["x-lmo-version"] for s in after} == {"v1", "v2"}
        assert all(s[0] == 200 for s in after)
        async with d.session.get(d.url + "/lmo/status") as r:
            shown = (await r.json())["protection"]
        assert shown["breaker"] == {"v1": "closed", "v2": "closed"}


async def test_malformed_bodies_never_eject_a_version() -> None:
    broken = StandIn()
    broken.failing = True  # Triton answers a malformed body with a 500
    lm = _lm({"circuitBreaker": {"consecutiveErrors": 2}}, [("v1", 100)])
    async with Door(lm, {"v1": broken}) as d:
        for _ in range(5):
            async with d.session.post(d.url + INFER, data=b"garbage") as r:
                assert r.status == 400
        assert d.door.gate.breaker.state(0) == {"v1": "closed"}


def test_secrets_file_and_environment(tmp_path) -> None:
    f = tmp_path / "secrets.yaml"
    f.write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: chat-keys}\n"
                 "data: {alice: c2stYWxpY2UtNWYwYzJl}\nstringData: {bob: sk-bob-91aa7d}\n")
    secrets = load_file(f)
    assert secrets == {"chat-keys": KEYS}
    p = _lm(AUTH, [("v1", 100)]).spec.protection
    assert api_keys(p, secrets) == KEYS
    env = {env_name("chat-keys"): '{"carol": "sk-carol"}'}
    assert env_name("chat-keys") == "LMO_SECRET_CHAT_KEYS"
    assert api_keys(p, {}, env) == {"carol": "sk-carol"}
    with pytest.raises(UserError, match="spec.protection.auth.apiKeys.secretRef.name: Secret "
                                        "'chat-keys' not found; give it with --secrets FILE"):
        api_keys(p, {}, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Secret\nmetadata: {name: k}\ndata: {alice: 'not base64!'}\n")
    with pytest.raises(UserError, match="data.alice of Secret k is not base64") as err:
        load_file(bad)
    assert "not base64!" not in str(err.value).replace("is not base64", "")


def test_the_example_carries_its_secret_beside_the_model() -> None:
    from lmo.api import load_file as load_models

    example = Path(__file__).resolve().parents[2] / "examples" / "protected.yaml"
    (lm,) = load_models(example)  # the Secret document is not a LanguageModel
    secrets = load_file(example, only_secrets=False)
    assert set(api_keys(lm.spec.protection, secrets)) == {"alice", "bob"}
    with pytest.raises(UserError, match="expected kind: Secret"):
        load_file(example)  # --secrets takes Secrets only
