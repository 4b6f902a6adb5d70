"""The local front door: the cluster's traffic rules and protection in front of each
version's front component.

Per request the door does what the cluster's gateway does: check the API key and the rate
limit (`lmo.protect`), pick a version (`Router`: weights, the A/B header, sticky clients),
keep the circuit breaker's count, apply spec.protection.timeout and send a mirrored copy.
Then it hands the request in-process to that version's `lmo_runtime.front.app.Front`, the
same code the cluster runs in every Triton pod: OpenAI-compatible `/v1/models`,
`/v1/embeddings`, `/v1/completions`, `/v1/chat/completions`, the text API `/v1/<task>`
and KServe v2 for the public model (the binary-tensor extension included, so
`tritonclient.http` works unchanged).

Served by the door itself:
* `POST /v1/feedback` and `GET /lmo/metrics`: outcome reports about answers (each carries
  `x-lmo-request-id`) and their per-version counts (`lmo.local.feedback`).
* `GET /v2/health/live|ready`: the door is up; every version with traffic is ready.
* `GET /lmo/status`, `POST /lmo/traffic` `{"weights": {"v1": 90, "v2": 10}}`: the admin
  API behind `lmo status --local`, `set-traffic`, `promote` and `rollback`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from lmo.api import VERSION_HEADER
from lmo.errors import UserError
from lmo.local.controller import Controller
from lmo.local.secrets import api_keys
from lmo.protect import Gate, Refusal

from lmo_runtime.front.chat import ChatTemplate
from lmo_runtime.front.app import MIRROR_KEY, TIMEOUT_KEY, Front, new_session
from lmo_runtime.front.kserve import generate_body_problem, infer_body_problem
from lmo_runtime.front.openai_api import error_body, is_openai_path
from lmo_runtime.feedback import PATH as FEEDBACK_PATH

log = logging.getLogger("lmo.up")

__all__ = ["FrontDoor", "generate_body_problem", "infer_body_problem"]


class FrontDoor:
    """aiohttp application around a `Controller`; `start()` binds, `stop()` closes."""

    def __init__(self, controller: Controller, secrets: dict[str, dict[str, str]] | None = None):
        self.controller = controller
        # spec.protection (lmo.protect): API keys from `secrets` (Secret name -> data)
        self.secrets = secrets or {}
        self._gate: Gate | None = None
        self.session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        # version -> (its Triton URL, the spec's chat template, its front)
        self._fronts: dict[str, tuple[str, Any, Front]] = {}
        self.port = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024,
                                   middlewares=[self._protect])
        r = self.app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        # outcome feedback (lmo.local.feedback): a request id on every answer
        self.app.on_response_prepare.append(controller.feedback.stamp)
        r.add_post(FEEDBACK_PATH, controller.feedback.handle)
        r.add_get("/lmo/metrics", controller.feedback.serve_metrics)
        r.add_get("/lmo/status", self.status)
        r.add_post("/lmo/traffic", self.traffic)
        r.add_route("*", "/{tail:.*}", self.route)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.session = new_session()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._runner:
            await self._runner.cleanup()
        if self.session:
            await self.session.close()

    # ------------------------------------------------------------------ protection

    @property
    def gate(self) -> Gate:
        """The rules of the current spec.protection (rebuilt when an edit changes it)."""
        protection = self.controller.spec.protection
        gate = self._gate
        if gate is None or gate.protection is not protection:  # every request: identity first
            if gate is not None and gate.protection == protection:
                gate.protection = protection  # an edit elsewhere in the spec: keep the state
            else:
                self._gate = gate = Gate(protection, api_keys(protection, self.secrets))
        return gate

    @web.middleware
    async def _protect(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """API key and rate limit before anything else on the data plane (the admin API
        under /lmo and the health probes stay open, as on the cluster)."""
        path = request.path
        if path.startswith("/lmo/") or path.startswith("/v2/health"):
            return await handler(request)
        verdict = self.gate.check(request.headers.get("Authorization"), time.monotonic())
        if isinstance(verdict, Refusal):
            return _refused(verdict, path)
        return await handler(request)

    def _admit(self, version: str, path: str) -> web.Response | None:
        refusal = self.gate.breaker.admit(version, time.monotonic())
        return None if refusal is None else _refused(refusal, path, version)

    def _done(self, version: str, status: int) -> None:
        self.gate.breaker.done(version, status < 500, time.monotonic())

    # ------------------------------------------------------------------ routing

    def _choose(self, request: web.Request):
        router = self.controller.router
        value = request.headers.get(router.header) if router.header else None
        sticky = request.headers.get(router.sticky) if router.sticky else None
        try:
            choice = router.choose(value, sticky)
            # a version ejected by the circuit breaker takes no requests: its share goes to
            # the others meanwhile (the weighted order moves on); a request naming it in the
            # header, or one finding every version out, gets the breaker's 503
            breaker, now = self.gate.breaker, time.monotonic()
            tries = len(router.weights)
            while not choice.by_header and tries > 0 and breaker.ejected(choice.version, now):
                choice, tries = router.choose(value), tries - 1
            return choice
        except LookupError as err:
            raise web.HTTPServiceUnavailable(
                text=json.dumps(_error_body(request.path, 503, str(err))),
                content_type="application/json") from None

    def front(self, version: str) -> Front:
        """The front component of `version` (rebuilt when its Triton server was restarted
        or an edit changed the chat template)."""
        backend = self.controller.backends[version]
        spec = self.controller.spec
        template = spec.chat_template
        kept = self._fronts.get(version)
        if kept is not None and kept[0] == backend.url and kept[1] is template:
            return kept[2]
        front = Front(task=spec.task, model=self.controller.lm.metadata.name, version=version,
                      triton_url=backend.url, repository=backend.artifact.repository,
                      chat_template=chat_template(spec), session=self.session)
        self._fronts[version] = (backend.url, template, front)
        return front

    async def route(self, request: web.Request) -> web.StreamResponse:
        """Everything else: pick the version, hand the request to its front."""
        choice = self._choose(request)
        refused = self._admit(choice.version, request.path)
        if refused is not None:
            return refused
        if self.gate.timeout is not None:
            # spec.protection.timeout for the whole request, as the HTTPRoute's timeouts.request
            said = f"{self.controller.spec.protection.timeout} (spec.protection.timeout)"
            request[TIMEOUT_KEY] = (self.gate.timeout, said)
        if choice.mirror:
            mirror = choice.mirror
            request[MIRROR_KEY] = lambda path, body, head: self._mirror(mirror, path, body, head)
        status = 502
        try:
            response = await self.front(choice.version).dispatch(request)
            status = response.status
            # Triton's queue policy turned it away (Retry-After): a busy version, not a
            # broken one, or overload would eject healthy versions
            if status == 503 and "Retry-After" in response.headers:
                status = 429
            return response
        finally:
            backend = self.controller.backends.get(choice.version)
            if backend is not None:
                if status >= 400:
                    backend.errors += 1
                else:
                    backend.answered += 1
            self._done(choice.version, status)

    def _mirror(self, version: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Fire-and-forget copy of a Triton request to the mirror version (its answer is
        read and dropped)."""

        async def send() -> None:
            backend = self.controller.backends[version]
            assert self.session is not None
            try:
                async with self.session.post(backend.url + path, data=body, headers=headers) as up:
                    await up.read()
                backend.mirrored += 1
            except aiohttp.ClientError:
                backend.errors += 1

        task = asyncio.create_task(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        """Ready when every version that should take traffic can answer."""
        c = self.controller
        wanted = [v for v, w in c.router.weights.items() if w > 0]
        ok = bool(wanted) and all(c.backends.get(v) and c.backends[v].ready for v in wanted)
        return web.Response(status=200 if ok else 503)

    # ------------------------------------------------------------------ admin

    async def status(self, request: web.Request) -> web.Response:
        out = self.controller.status()
        protection = self.gate.summary(time.monotonic())
        if protection:
            out["protection"] = protection
        return web.json_response(out)

    async def traffic(self, request: web.Request) -> web.Response:
        try:
            payload = await request.json()
            weights = {str(k): int(v) for k, v in payload["weights"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return _error(400, 'body must be JSON such as {"weights": {"v1": 90, "v2": 10}}')
        try:
            self.controller.set_traffic(weights)
        except UserError as err:
            return _error(400, str(err))
        return web.json_response(self.controller.status())

def _error_body(path: str, status: int, message: str) -> dict[str, Any]:
    """OpenAI's error shape on the OpenAI paths, {"error": message} elsewhere."""
    return error_body(status, message) if is_openai_path(path) else {"error": message}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refused(refusal: Refusal, path: str, version: str | None = None) -> web.Response:
    headers = refusal.headers()
    if version is not None:
        headers[VERSION_HEADER] = version
    return web.json_response(_error_body(path, refusal.status, refusal.message),
                             status=refusal.status, headers=headers)


def chat_template(spec: Any) -> ChatTemplate | None:
    """spec.chatTemplate as the front takes it (None: /v1/chat/completions answers 400)."""
    template = spec.chat_template
    return None if template is None else ChatTemplate.from_dict(template.to_front())
