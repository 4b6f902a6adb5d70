"""The local front door: KServe v2 over HTTP, with the cluster's traffic rules.

Clients talk to it exactly as they would to Triton (`/v2/models/<entry>/infer`, the
binary-tensor extension included, so `tritonclient.http` works unchanged) or to the
cluster's HTTPRoute. Per request it does only what routing needs: read one header, pick a
version (`Router`), forward the body bytes untouched over one pooled `aiohttp.ClientSession`
and add `x-lmo-version` to the answer. A mirrored copy is sent in the background and its
answer discarded.

Also served:
* `POST /v1/<task>` `{"text": "..."}`: a JSON convenience for people and curl.
* `POST /v2/models/<m>/generate[_stream]`: Triton's generate extension (streamed as it
  comes), used by `lmo generate`.
* `POST /v1/feedback` and `GET /lmo/metrics`: outcome reports about answers (each carries
  `x-lmo-request-id`) and their per-version counts (`lmo.local.feedback`).
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

from lmo_runtime import answers
from lmo_runtime.feedback import PATH as FEEDBACK_PATH
from lmo_runtime.manifest import ENTRY_MODEL

log = logging.getLogger("lmo.up")

# Request headers Triton needs to read the body; everything else stays at the door.
_FORWARD = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding", "Accept-Encoding")
_RETURN = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding")
# Optional inputs of the text_generation model accepted by POST /v1/text-generation.
_GEN_INPUTS = {
    "max_tokens": ("MAX_TOKENS", "INT32"),
    "temperature": ("TEMPERATURE", "FP32"),
    "top_k": ("TOP_K", "INT32"),
    "top_p": ("TOP_P", "FP32"),
    "seed": ("SEED", "INT64"),
    "stop": ("STOP", "BYTES"),
}


class FrontDoor:
    """aiohttp application around a `Controller`; `start()` binds, `stop()` closes."""

    def __init__(self, controller: Controller, secrets: dict[str, dict[str, str]] | None = None):
        self.controller = controller
        # spec.protection (lmo.protect): API keys from `secrets` (Secret name -> data)
        self.secrets = secrets or {}
        self._gate: Gate | None = None
        self.entry = ENTRY_MODEL[controller.spec.task]
        self.session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024,
                                   middlewares=[self._protect])
        r = self.app.router
        r.add_post("/v2/models/{model}/infer", self.infer)
        r.add_post("/v2/models/{model}/versions/{mv}/infer", self.infer)
        r.add_post("/v2/models/{model}/generate", self.generate)
        r.add_post("/v2/models/{model}/generate_stream", self.generate)
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2/{tail:.*}", self.forward_get)
        r.add_get("/v2", self.forward_get)
        # outcome feedback (lmo.local.feedback): a request id on every answer
        self.app.on_response_prepare.append(controller.feedback.stamp)
        r.add_post(FEEDBACK_PATH, controller.feedback.handle)
        r.add_get("/lmo/metrics", controller.feedback.serve_metrics)
        r.add_post("/v1/{task}", self.v1)
        r.add_get("/lmo/status", self.status)
        r.add_post("/lmo/traffic", self.traffic)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
            auto_decompress=False,
            # Forward the client's Accept-Encoding only: bodies pass through untouched.
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )
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
            return _refused(verdict)
        return await handler(request)

    def _admit(self, version: str) -> web.Response | None:
        refusal = self.gate.breaker.admit(version, time.monotonic())
        return None if refusal is None else _refused(refusal, version)

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
                text=json.dumps({"error": str(err)}), content_type="application/json"
            ) from None

    async def infer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        choice = self._choose(request)
        headers = {h: request.headers[h] for h in _FORWARD if h in request.headers}
        if choice.mirror:
            self._mirror(choice.mirror, request.rel_url.path, body, headers)
        resp = await self._forward(choice.version, request.rel_url.path, body, headers)
        # Triton answers a malformed request with a 500: only then is the body read here, so
        # a well-formed request costs the door nothing more
        problem = infer_body_problem(body, request.headers) if resp.status >= 400 else None
        return _error(400, problem) if problem else resp

    async def _forward(
        self, version: str, path: str, body: bytes, headers: dict[str, str]
    ) -> web.Response:
        backend = self.controller.backends[version]
        assert self.session is not None
        refused = self._admit(version)
        if refused is not None:
            return refused
        status, data = 502, b""
        try:
            async with self.session.post(backend.url + path, data=body, headers=headers,
                                         timeout=self._timeout()) as up:
                data = await up.read()
                out = {h: up.headers[h] for h in _RETURN if h in up.headers}
                status = up.status
        except asyncio.TimeoutError:
            status = 504
            return self._timed_out(version)
        except aiohttp.ClientError as err:
            backend.errors += 1
            return web.json_response(
                {"error": f"version {version} did not answer: {err}"},
                status=502,
                headers={VERSION_HEADER: version},
            )
        finally:
            self._done(version, _blame(status, data, lambda: infer_body_problem(body, headers)))
        if status == 503 and _queue_refusal(data):
            # Triton's queue policy (spec.serving.queue) turned it away: say so, and when
            # to come back
            return _refused(Refusal(503, f"version {version} is busy: its queue is full or "
                                         "the wait exceeded spec.serving.queue.timeout", 1),
                            version)
        if status >= 400:
            backend.errors += 1
        else:
            backend.answered += 1
        out[VERSION_HEADER] = version
        return web.Response(status=status, body=data, headers=out)

    def _timeout(self) -> aiohttp.ClientTimeout | None:
        """spec.protection.timeout for the whole request, as the HTTPRoute's timeouts.request
        (parsed once, with the rest of the protection, by the Gate)."""
        seconds = self.gate.timeout
        return None if seconds is None else aiohttp.ClientTimeout(total=seconds)

    def _timed_out(self, version: str) -> web.Response:
        self.controller.backends[version].errors += 1
        timeout = self.controller.spec.protection.timeout  # type: ignore[union-attr]
        return web.json_response(
            {"error": f"version {version} did not answer within {timeout} "
                      "(spec.protection.timeout)"},
            status=504, headers={VERSION_HEADER: version},
        )

    def _mirror(self, version: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        """Fire-and-forget copy to the mirror version (its answer is read and dropped)."""

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

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """Triton's generate extension, streamed back chunk by chunk (SSE for _stream)."""
        body = await request.read()
        choice = self._choose(request)
        backend = self.controller.backends[choice.version]
        headers = {h: request.headers[h] for h in _FORWARD if h in request.headers}
        assert self.session is not None
        resp: web.StreamResponse | None = None
        refused = self._admit(choice.version)
        if refused is not None:
            return refused
        status = 502
        try:
            async with self.session.post(
                backend.url + request.rel_url.path, data=body, headers=headers,
                timeout=self._timeout(),
            ) as up:
                status = up.status
                if up.status >= 400:  # as for infer: the body is read only when Triton refused it
                    problem = generate_body_problem(body, request.headers)
                    if problem:
                        backend.errors += 1
                        return _error(400, problem)
                resp = web.StreamResponse(
                    status=up.status,
                    headers={
                        **{h: up.headers[h] for h in _RETURN if h in up.headers},
                        VERSION_HEADER: choice.version,
                    },
                )
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                backend.answered += 1
                return resp
        except asyncio.TimeoutError:
            status = 504
            if resp is not None and resp.prepared:  # the stream started: it just ends
                return resp
            return self._timed_out(choice.version)
        except aiohttp.ClientError as err:
            status = 502
            backend.errors += 1
            return web.json_response(
                {"error": f"version {choice.version} did not answer: {err}"}, status=502
            )
        finally:
            self._done(choice.version,
                       _blame(status, b"", lambda: generate_body_problem(body, headers)))

    async def forward_get(self, request: web.Request) -> web.Response:
        """Metadata and other reads go to a ready version (the one weights pick)."""
        choice = self._choose(request)
        backend = self.controller.backends[choice.version]
        assert self.session is not None
        try:
            async with self.session.get(backend.url + request.rel_url.path) as up:
                data = await up.read()
                out = {h: up.headers[h] for h in _RETURN if h in up.headers}
                return web.Response(
                    status=up.status, body=data, headers={**out, VERSION_HEADER: choice.version}
                )
        except aiohttp.ClientError as err:
            return web.json_response({"error": str(err)}, status=502)

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        """Ready when every version that should take traffic can answer."""
        c = self.controller
        wanted = [v for v, w in c.router.weights.items() if w > 0]
        ok = bool(wanted) and all(c.backends.get(v) and c.backends[v].ready for v in wanted)
        return web.Response(status=200 if ok else 503)

    # ------------------------------------------------------------------ JSON for humans

    async def v1(self, request: web.Request) -> web.Response:
        task = request.match_info["task"]
        if task != self.controller.spec.task:
            return _error(
                404, f"this model does its task at /v1/{self.controller.spec.task}, not /v1/{task}"
            )
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, 'body must be JSON such as {"text": "hello"}')
        texts = payload.get("text") if isinstance(payload, dict) else None
        single = isinstance(texts, str)
        if single:
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(400, 'field "text" must be a string or a list of strings')
        inputs = [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES",
                   "data": list(texts)}]
        if task == "text-generation":
            for key, (name, dtype) in _GEN_INPUTS.items():
                if key in payload:
                    problem = _typed_problem(key, payload[key], dtype)
                    if problem:
                        return _error(400, problem)
                    inputs.append({"name": name, "shape": [len(texts), 1], "datatype": dtype,
                                   "data": [payload[key]] * len(texts)})
        request_body: dict[str, Any] = {"inputs": inputs}
        if task in answers.TOP_K_TASKS and "top_k" in payload:
            k = payload["top_k"]
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                return _error(400, f'field "top_k" must be an integer >= 1, got {json.dumps(k)}')
            request_body["parameters"] = {"top_k": k}
        body = json.dumps(request_body).encode()
        choice = self._choose(request)
        path = f"/v2/models/{self.entry}/infer"
        headers = {"Content-Type": "application/json"}
        if choice.mirror:
            self._mirror(choice.mirror, path, body, headers)
        resp = await self._forward(choice.version, path, body, headers)
        if resp.status != 200:
            return resp
        answer = json.loads(resp.body)  # type: ignore[arg-type]
        items = [answers.text_answer(task, item)
                 for item in answers.per_item(answer.get("outputs", []), len(texts))]
        result = {"version": choice.version, **items[0]} if single else {
            "version": choice.version, "results": items}
        return web.json_response(result, headers={VERSION_HEADER: choice.version})

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

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refused(refusal: Refusal, version: str | None = None) -> web.Response:
    headers = refusal.headers()
    if version is not None:
        headers[VERSION_HEADER] = version
    return web.json_response({"error": refusal.message}, status=refusal.status,
                             headers=headers)


def _blame(status: int, answer: bytes, body_problem: Any) -> int:
    """The status a circuit breaker should count: a 5xx only when the version failed. Triton
    answers a malformed body with a 500 too (the client's fault), and its queue policy turns
    requests away with a 503 under load (a busy version, not a broken one): both count as
    answered, or overload and bad clients would eject healthy versions."""
    if status < 500 or status in (502, 504):
        return status
    if status == 503 and _queue_refusal(answer):
        return 429
    return 400 if body_problem() else status


def _queue_refusal(body: bytes) -> bool:
    """Whether Triton's 503 is its queue policy's rejection (queue full or timed out)."""
    text = body[:2048].decode("utf-8", "replace").lower()
    return "queue" in text or "timeout expired" in text


_EXAMPLE_INFER = ('{"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", '
                  '"data": ["hello"]}]}')


_EXAMPLE_GENERATE = '{"text_input": "Once upon a time", "max_tokens": 16}'


_COMPRESSED = object()


def _json_body(body: bytes, headers: Any, example: str) -> tuple[Any, str | None]:
    """(the parsed JSON, None), or (None, why it is not JSON); (_COMPRESSED, None) for a
    compressed body, which Triton decompresses and judges itself. With the binary tensor
    extension only the JSON header (`Inference-Header-Content-Length` bytes) is read."""
    if headers.get("Content-Encoding", "identity") != "identity":
        return _COMPRESSED, None
    length = headers.get("Inference-Header-Content-Length")
    head = body[: int(length)] if length and length.isdigit() else body
    try:
        return json.loads(head), None
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"body is not JSON ({err}); send a request such as {example}"


def generate_body_problem(body: bytes, headers: Any) -> str | None:
    """What is wrong with a request to Triton's generate extension, or None."""
    payload, problem = _json_body(body, headers, _EXAMPLE_GENERATE)
    if problem or payload is _COMPRESSED or isinstance(payload, dict):
        return problem
    return f"body must be a JSON object such as {_EXAMPLE_GENERATE}"


def infer_body_problem(body: bytes, headers: Any) -> str | None:
    """What is wrong with a KServe v2 inference request Triton refused (it answers a
    malformed one with a 500), or None (well formed, or compressed)."""
    payload, problem = _json_body(body, headers, _EXAMPLE_INFER)
    if problem or payload is _COMPRESSED:
        return problem
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        return f'body must be a JSON object with an "inputs" list, such as {_EXAMPLE_INFER}'
    for i, tensor in enumerate(payload["inputs"]):
        if not isinstance(tensor, dict):
            return f"inputs[{i}] must be an object with name, shape, datatype and data"
        missing = [k for k in ("name", "shape", "datatype") if k not in tensor]
        if missing:
            return f"inputs[{i}] lacks {', '.join(missing)}"
        shape = tensor["shape"]
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            return f"inputs[{i}].shape must be a list of non-negative integers, got {shape!r}"
        binary = isinstance(tensor.get("parameters"), dict) and "binary_data_size" in tensor["parameters"]
        if "data" not in tensor and not binary:
            return f"inputs[{i}] ({tensor['name']}) lacks data"
    return None


def _typed_problem(key: str, value: Any, dtype: str) -> str | None:
    """Whether an optional /v1/text-generation field has the type its tensor needs."""
    if dtype in ("INT32", "INT64"):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif dtype == "FP32":
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    else:
        ok, want = isinstance(value, str), "a string"
    return None if ok else f'field "{key}" must be {want}, got {json.dumps(value)}'
