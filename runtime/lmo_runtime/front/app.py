"""`Front`: one version's client API in front of its Triton server.

On the cluster it runs in every Triton pod (`python3 -m lmo_runtime.front`, Triton's HTTP and
gRPC on the pod's loopback); under `lmo up` the front door picks the version, then hands the
request to that version's `Front.dispatch` in-process. Either way the client sees:

* OpenAI-compatible: `GET /v1/models[/<model>]`, `POST /v1/embeddings` (feature-extraction),
  `POST /v1/completions` (text-generation, streamed as server-sent events ending
  `data: [DONE]`) and `POST /v1/chat/completions` (text-generation with a chat template:
  `spec.chatTemplate`, else the checkpoint's own). A request without max_tokens gets the
  checkpoint's max_new_tokens (generation_config.json), else OpenAI's 16; the sampling
  parameters it omits are the checkpoint's too (applied by the Triton model).
  Errors in OpenAI's shape; an unknown `model` is 404.
* lmo's text API `POST /v1/<task>` `{"text": ..., "top_k": N}`.
* KServe v2 for the public (entry) model only: `/v2/models/<entry>[/versions/<n>]/infer`,
  its metadata and readiness, `generate[_stream]`, `/v2/health/*`. Every other Triton model
  (`<task>_onnx`, the GPT-2 decoder, `feedback`) is unreachable from outside.
* `POST /v1/feedback` (standalone): accepted only for request ids this front answered
  (`answers.AnsweredIds`), then counted by Triton's `feedback` model on loopback.

Every answer carries `x-lmo-version` and `x-lmo-request-id`. Standalone, a client connection
older than `max_connection_age` seconds is closed after its next answer (`Connection: close`):
kube-proxy picks a pod per connection, not per request, so a client that keeps its
connection alive would otherwise stay on one pod for good, and a version that starts serving
through the provider Service (a canary step) would never see that client's requests. The
client reconnects, and each reconnect is a new draw among the Service's pods, as gRPC's
MAX_CONNECTION_AGE does it. The KServe v2 body of a request
passes through untouched (the binary-tensor extension included); it is parsed only when
Triton refused it, to say what is wrong.

Only aiohttp, numpy, tokenizers and (for checkpoint chat templates) jinja2 beside the standard
library: this runs in the Triton image.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from lmo_runtime import answers
from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL
from lmo_runtime.feedback import PATH as FEEDBACK_PATH
from lmo_runtime.front import kserve
from lmo_runtime.front.answers import AnsweredIds, FeedbackError, new_id, parse_report
from lmo_runtime.front.chat import Template, checkpoint_template
from lmo_runtime.front.openai_api import (
    DEFAULT_MAX_TOKENS,
    ApiError,
    CompletionRequest,
    chat_answer,
    chat_request,
    completion_answer,
    completion_request,
    embeddings_answer,
    embeddings_request,
    error_body,
    finish_reason,
    is_openai_path,
    model_object,
    stream_chunk,
    usage,
)
from lmo_runtime.front.wire import ENTRY_MODEL, REQUEST_ID_HEADER, VERSION_HEADER

STREAM_MODEL = "text_generation_stream"
# optional text-API fields of text-generation -> (Triton input, datatype)
GEN_INPUTS = {
    "max_tokens": ("MAX_TOKENS", "INT32"),
    "temperature": ("TEMPERATURE", "FP32"),
    "top_k": ("TOP_K", "INT32"),
    "top_p": ("TOP_P", "FP32"),
    "seed": ("SEED", "INT64"),
    "stop": ("STOP", "BYTES"),
}
_DTYPES = {name: dtype for name, dtype in GEN_INPUTS.values()}
_V2_MODEL = re.compile(r"^/v2/models/(?P<model>[^/]+)(?:/versions/(?P<mv>[^/]+))?"
                       r"(?P<tail>/infer|/ready|/config|/generate|/generate_stream)?$")
# kube-proxy draws a pod per connection: a kept-alive connection is closed after this long
MAX_CONNECTION_AGE_SECONDS = 30.0

Mirror = Callable[[str, bytes, dict[str, str]], None]
# request-scoped settings the `lmo up` front door hands to `Front.dispatch`:
# (seconds, how to say it) for the whole request; a Mirror copying each Triton request
_KEY = getattr(web, "RequestKey", None)  # aiohttp >= 3.12 types request storage keys
TIMEOUT_KEY: Any = _KEY("lmo.timeout", tuple) if _KEY else "lmo.timeout"
MIRROR_KEY: Any = _KEY("lmo.mirror", object) if _KEY else "lmo.mirror"


class Tokens:
    """Token counts for `usage` with the model's own tokenizer (from its repository), and
    what a text-generation model's generation.json says (`generation`)."""

    def __init__(self, repository: Path | None, entry: str):
        self.tokenizer = None
        self.max_length = 0
        self.n_positions = 0
        self.generation: dict[str, Any] = {}
        if repository is None:
            return
        assets = Path(repository) / entry / "1"
        if not (assets / "tokenizer.json").exists():
            return
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(assets / "tokenizer.json"))
        self.tokenizer.no_padding()
        meta = assets / "lmo_model.json"
        if meta.exists():  # BERT: the entry model truncates to max_length
            self.max_length = int(json.loads(meta.read_text()).get("max_length", 0))
            if self.max_length:
                self.tokenizer.enable_truncation(max_length=self.max_length)
        generation = assets / "generation.json"
        if generation.exists():  # decoders: prompt and output within the context
            self.generation = json.loads(generation.read_text())
            self.n_positions = int(self.generation["n_positions"])

    def inputs(self, texts: list[str]) -> int:
        """Tokens the model reads for `texts` (special tokens and truncation included)."""
        if self.tokenizer is None:
            return 0
        return sum(len(e.ids) for e in self.tokenizer.encode_batch(texts))

    def prompt(self, prompt: str, max_tokens: int, add_special_tokens: bool = True) -> int:
        """Prompt tokens a text-generation model reads: the text's, and the BOS the model
        puts first (Llama-style tokenizers) unless the prompt holds its own special tokens
        (the end of a long prompt is kept)."""
        if self.tokenizer is None:
            return 0
        n = len(self.tokenizer.encode(prompt, add_special_tokens=False).ids)
        bos = self.generation.get("add_bos") and self.generation.get("bos_token_id") is not None
        n = max(1, n + (1 if bos and add_special_tokens else 0))
        return min(n, self.n_positions - self.limit(max_tokens)) if self.n_positions else n

    def completion(self, text: str) -> int:
        if self.tokenizer is None or not text:
            return 0
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def limit(self, max_tokens: int) -> int:
        """The tokens a generation may produce: max_tokens within the context."""
        return min(max_tokens, self.n_positions - 1) if self.n_positions else max_tokens


class Front:
    """The client API of one version, in front of the Triton server at `triton_url`."""

    def __init__(self, *, task: str, model: str, version: str, triton_url: str,
                 repository: Path | str | None = None,
                 chat_template: Template | None = None,
                 session: aiohttp.ClientSession | None = None,
                 answered: AnsweredIds | None = None,
                 max_connection_age: float = MAX_CONNECTION_AGE_SECONDS):
        self.task = task
        self.model = model  # the LanguageModel's name: the OpenAI `model`
        self.version = version
        self.triton_url = triton_url.rstrip("/")
        self.entry = ENTRY_MODEL[task]
        self.tokens = Tokens(Path(repository) if repository else None, self.entry)
        # spec.chatTemplate when the LanguageModel sets one, else the checkpoint's own
        tokenizer = self.tokens.tokenizer
        self.chat_template = chat_template or checkpoint_template(
            self.tokens.generation, tokenizer.id_to_token if tokenizer is not None else None)
        # max_tokens of a request that sends none: the checkpoint's max_new_tokens
        defaults = self.tokens.generation.get("defaults") or {}
        self.default_max_tokens = int(defaults.get("max_tokens") or DEFAULT_MAX_TOKENS)
        self.session = session
        self._own_session = session is None
        # standalone: the ids this front answered, for /v1/feedback; None under `lmo up`
        # (the front door remembers ids for every version and counts feedback itself)
        self.answered = answered
        self.created = int(time.time())
        self._tasks: set[asyncio.Task] = set()
        self.max_connection_age = max_connection_age  # 0: connections live as long as clients want
        self._born: dict[object, float] = {}  # client connection -> when it first asked

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self.session is None:
            self.session = new_session()

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._own_session and self.session is not None:
            await self.session.close()

    def app(self) -> web.Application:
        """The standalone aiohttp application (the Triton pod's front)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_response_prepare.append(self.stamp)

        async def opened(_: web.Application) -> None:
            await self.open()

        async def closed(_: web.Application) -> None:
            await self.close()

        app.on_startup.append(opened)
        app.on_cleanup.append(closed)
        return app

    async def stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        """on_response_prepare (standalone): a request id on every answer; ids of answers
        are remembered for /v1/feedback; an old connection is closed after it."""
        self._age_out(request, response)
        if REQUEST_ID_HEADER in response.headers:
            return
        response.headers.setdefault(VERSION_HEADER, self.version)
        remember = (self.answered is not None and response.status < 400
                    and request.method == "POST" and request.path != FEEDBACK_PATH)
        response.headers[REQUEST_ID_HEADER] = (self.answered.remember(self.version)
                                               if remember else new_id())

    def _age_out(self, request: web.Request, response: web.StreamResponse) -> None:
        """Close the client's connection after this answer when it is older than
        `max_connection_age` (see the module docstring)."""
        if not self.max_connection_age or request.protocol is None:
            return
        now = time.monotonic()
        born = self._born.setdefault(request.protocol, now)
        if now - born >= self.max_connection_age:
            del self._born[request.protocol]
            response.force_close()
            # aiohttp >= 3.10 prepares the headers before this hook: say it too
            response.headers["Connection"] = "close"
        elif len(self._born) > 4096:  # connections that closed before their age: forget
            self._born = {c: t for c, t in self._born.items()
                          if now - t < self.max_connection_age}

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Answer one request (any path); the front door calls this after routing."""
        path, method = request.path, request.method
        try:
            handler = self._route(method, path)
            if handler is None:
                raise ApiError(404, f"no {method} {path} here: {self._paths()}")
            response = await handler(request)
        except ApiError as err:
            response = self._error(path, err)
        response.headers.setdefault(VERSION_HEADER, self.version)
        return response

    def _paths(self) -> str:
        return (f"the OpenAI-compatible API is under /v1 (models, {self._openai_endpoint()}), "
                f"the text API at POST /v1/{self.task}, KServe v2 at "
                f"/v2/models/{self.entry}/infer")

    def _openai_endpoint(self) -> str:
        if self.task == "feature-extraction":
            return "embeddings"
        if self.task == "text-generation":
            return "completions, chat/completions"
        return "no OpenAI endpoint for " + self.task

    def _route(self, method: str, path: str) -> Callable[[web.Request], Awaitable[Any]] | None:
        if method == "GET":
            if path == "/v1/models":
                return self.models
            if path.startswith("/v1/models/"):
                return self.one_model
            if path == "/v2/health/live":
                return self.live
            if path == "/v2/health/ready":
                return self.ready
            if path in ("/v2", "/v2/"):
                return self.server_metadata
        match = _V2_MODEL.match(path)
        if match:
            return self._v2_route(method, match)
        if method != "POST":
            return None
        return {
            "/v1/embeddings": self.embeddings,
            "/v1/completions": self.completions,
            "/v1/chat/completions": self.chat,
            FEEDBACK_PATH: self.feedback,
        }.get(path) or (self.text if path.startswith("/v1/") and path.count("/") == 2 else None)

    def _v2_route(self, method: str, match: re.Match) -> Any:
        if match["model"] != self.entry:
            raise ApiError(404, f"model {match['model']!r} is not served here; the public "
                                f"model is {self.entry!r} (/v2/models/{self.entry}/infer)")
        tail = match["tail"] or ""
        if method == "GET" and tail in ("", "/ready", "/config"):
            return self.forward_get
        if method == "POST" and tail == "/infer":
            return self.infer
        if method == "POST" and tail in ("/generate", "/generate_stream"):
            return self.generate
        return None

    def _error(self, path: str, err: ApiError) -> web.Response:
        body = (error_body(err.status, err.message, err.param, err.code)
                if is_openai_path(path) else {"error": err.message})
        return web.json_response(body, status=err.status, headers=err.headers)

    # ------------------------------------------------------------------ Triton

    def _timeout(self, request: web.Request) -> aiohttp.ClientTimeout | None:
        limit = request.get(TIMEOUT_KEY)
        return None if limit is None else aiohttp.ClientTimeout(total=limit[0])

    def _timed_out(self, request: web.Request) -> ApiError:
        seconds, said = request.get(TIMEOUT_KEY) or (0, "")
        return ApiError(504, f"version {self.version} did not answer within {said}")

    def _unreachable(self, err: Exception) -> ApiError:
        return ApiError(503, f"version {self.version} did not answer: {err}")

    def _cut(self, request: web.Request, resp: web.StreamResponse | None,
             err: Exception) -> web.StreamResponse:
        """Triton stopped answering a stream: one that started just ends; otherwise the
        client gets the timeout's 504 or the 503 of an unreachable version."""
        if resp is not None and resp.prepared:
            return resp
        if isinstance(err, asyncio.TimeoutError):
            raise self._timed_out(request)
        raise self._unreachable(err)

    async def _post(self, request: web.Request, path: str, body: bytes,
                    headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """POST to Triton (and to the mirror version, fire-and-forget)."""
        mirror: Mirror | None = request.get(MIRROR_KEY)
        if mirror is not None:
            mirror(path, body, headers)
        assert self.session is not None, "Front.open() first"
        try:
            async with self.session.post(self.triton_url + path, data=body, headers=headers,
                                         timeout=self._timeout(request)) as up:
                data = await up.read()
                return up.status, data, {h: up.headers[h] for h in kserve.RETURN_HEADERS
                                         if h in up.headers}
        except asyncio.TimeoutError:
            raise self._timed_out(request) from None
        except aiohttp.ClientError as err:
            raise self._unreachable(err) from None

    def _refusal(self, status: int, data: bytes) -> ApiError:
        """Triton's refusal of a request the front built, as the client should see it."""
        message = kserve.error_message(data)
        if status == 503 and kserve.queue_refusal(data):
            return ApiError(503, f"version {self.version} is busy: its queue is full or the "
                                 "wait exceeded spec.serving.queue.timeout", None, None,
                            {"Retry-After": "1"})
        if status in (400, 500):  # the model's own refusal of the text (e.g. no [MASK])
            return ApiError(400, message)
        return ApiError(503 if status >= 500 else status, message)

    async def _infer(self, request: web.Request, payload: dict[str, Any]) -> dict[str, np.ndarray]:
        """Ask the entry model; its outputs come back as binary tensors (no JSON of floats
        to write in Triton and parse here)."""
        payload.setdefault("parameters", {})["binary_data_output"] = True
        status, data, headers = await self._post(
            request, f"/v2/models/{self.entry}/infer", json.dumps(payload).encode(),
            {"Content-Type": "application/json"})
        if status != 200:
            raise self._refusal(status, data)
        return kserve.outputs(data, headers.get(kserve.HEADER_LENGTH))

    # ------------------------------------------------------------------ KServe v2

    async def infer(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {h: request.headers[h] for h in kserve.FORWARD_HEADERS if h in request.headers}
        status, data, out = await self._post(request, request.path, body, headers)
        if status >= 400:
            # Triton answers a malformed request with a 500: only then is the body read
            problem = kserve.infer_body_problem(body, request.headers)
            if problem:
                raise ApiError(400, problem)
            if status == 503 and kserve.queue_refusal(data):
                raise self._refusal(status, data)
        return web.Response(status=status, body=data, headers=out)

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """Triton's generate extension on the entry model, streamed back as it comes."""
        body = await request.read()
        headers = {h: request.headers[h] for h in kserve.FORWARD_HEADERS if h in request.headers}
        assert self.session is not None
        resp: web.StreamResponse | None = None
        try:
            async with self.session.post(self.triton_url + request.path, data=body,
                                         headers=headers, timeout=self._timeout(request)) as up:
                if up.status >= 400:
                    problem = kserve.generate_body_problem(body, request.headers)
                    if problem:
                        raise ApiError(400, problem)
                resp = web.StreamResponse(status=up.status, headers={
                    h: up.headers[h] for h in kserve.RETURN_HEADERS if h in up.headers})
                resp.headers[VERSION_HEADER] = self.version
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except (asyncio.TimeoutError, aiohttp.ClientError) as err:
            return self._cut(request, resp, err)

    async def forward_get(self, request: web.Request) -> web.Response:
        assert self.session is not None
        try:
            async with self.session.get(self.triton_url + request.path) as up:
                data = await up.read()
                out = {h: up.headers[h] for h in kserve.RETURN_HEADERS if h in up.headers}
                return web.Response(status=up.status, body=data, headers=out)
        except aiohttp.ClientError as err:
            raise self._unreachable(err) from None

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "lmo", "version": self.version, "extensions": []})

    async def live(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, request: web.Request) -> web.Response:
        """Ready when Triton is (every model of the repository loaded)."""
        assert self.session is not None
        try:
            async with self.session.get(self.triton_url + "/v2/health/ready",
                                        timeout=aiohttp.ClientTimeout(total=5)) as up:
                await up.read()
                return web.Response(status=200 if up.status == 200 else 503)
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return web.Response(status=503)

    # ------------------------------------------------------------------ OpenAI

    async def _json(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as err:
            raise ApiError(400, f"the body is not JSON ({err})") from None

    def _needs(self, task: str, endpoint: str) -> None:
        if self.task != task:
            raise ApiError(400, f"{endpoint} needs a {task} model; {self.model!r} does "
                                f"{self.task}: use POST /v1/{self.task}", "model")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list",
                                  "data": [model_object(self.model, self.created, self.task)]})

    async def one_model(self, request: web.Request) -> web.Response:
        name = request.path.removeprefix("/v1/models/")
        if name != self.model:
            raise ApiError(404, f"the model {name!r} does not exist here; this endpoint serves "
                                f"{self.model!r}", "model", "model_not_found")
        return web.json_response(model_object(self.model, self.created, self.task))

    async def embeddings(self, request: web.Request) -> web.Response:
        ask = embeddings_request(await self._json(request), self.model)
        self._needs("feature-extraction", "/v1/embeddings")
        out = await self._infer(request, {"inputs": [kserve.text_input(ask.texts)]})
        vectors = out["EMBEDDING"].reshape(len(ask.texts), -1)
        return web.json_response(embeddings_answer(self.model, vectors, ask.base64,
                                                   self.tokens.inputs(ask.texts)))

    async def completions(self, request: web.Request) -> web.StreamResponse:
        ask = completion_request(await self._json(request), self.model,
                                 self.default_max_tokens)
        self._needs("text-generation", "/v1/completions")
        return await self._complete(request, ask, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._json(request)
        self._needs("text-generation", "/v1/chat/completions")
        if self.chat_template is None:
            raise ApiError(400, f"{self.model!r} has no chat template: its checkpoint declares "
                                "none (tokenizer_config.json chat_template or "
                                "chat_template.jinja) and spec.chatTemplate is not set; set "
                                "spec.chatTemplate on the LanguageModel to enable "
                                "/v1/chat/completions, or use /v1/completions",
                           "spec.chatTemplate")
        ask = chat_request(body, self.model, self.chat_template, self.default_max_tokens)
        return await self._complete(request, ask, chat=True)

    async def _complete(self, request: web.Request, ask: CompletionRequest,
                        chat: bool) -> web.StreamResponse:
        answer_id = ("chatcmpl-" if chat else "cmpl-") + new_id()
        if ask.stream:
            return await self._stream(request, ask, answer_id, chat)
        n = len(ask.prompts)
        inputs = [kserve.text_input(ask.prompts)] + [
            kserve.column(name, _DTYPES[name], value, n) for name, value in ask.params.items()]
        payload: dict[str, Any] = {"inputs": inputs}
        if not ask.add_special_tokens:
            payload["parameters"] = {"add_special_tokens": False}
        out = await self._infer(request, payload)
        texts = [str(t) for t in out["TEXT_OUTPUT"].reshape(-1)]
        limit = self.tokens.limit(ask.max_tokens)
        counts = [self.tokens.completion(t) for t in texts]
        reasons = [finish_reason(c, limit) for c in counts]
        use = usage(sum(self.tokens.prompt(p, ask.max_tokens, ask.add_special_tokens)
                        for p in ask.prompts), sum(counts))
        if chat:
            return web.json_response(chat_answer(answer_id, self.model, texts[0], reasons[0], use))
        return web.json_response(completion_answer(answer_id, self.model, texts, reasons, use))

    async def _stream(self, request: web.Request, ask: CompletionRequest, answer_id: str,
                      chat: bool) -> web.StreamResponse:
        """Server-sent events from Triton's decoupled stream model, one chunk per piece."""
        stream_body: dict[str, Any] = {"TEXT": ask.prompts[0], **ask.params}
        if not ask.add_special_tokens:
            stream_body["parameters"] = {"add_special_tokens": False}
        body = json.dumps(stream_body).encode()
        assert self.session is not None
        resp: web.StreamResponse | None = None
        pieces: list[str] = []

        async def send(event: Any) -> None:
            data = event if isinstance(event, str) else json.dumps(event)
            await resp.write(f"data: {data}\n\n".encode())  # type: ignore[union-attr]

        try:
            async with self.session.post(
                f"{self.triton_url}/v2/models/{STREAM_MODEL}/generate_stream", data=body,
                headers={"Content-Type": "application/json"}, timeout=self._timeout(request),
            ) as up:
                if up.status != 200:
                    raise self._refusal(up.status, await up.read())
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "Cache-Control": "no-cache",
                                                   VERSION_HEADER: self.version})
                await resp.prepare(request)
                if chat:
                    await send(stream_chunk(answer_id, self.model, chat, None, None, True))
                async for line in up.content:
                    if not line.startswith(b"data:"):
                        continue
                    event = json.loads(line[5:])
                    if "error" in event:
                        await send({"error": error_body(500, str(event["error"]))["error"]})
                        break
                    piece = event.get("TEXT_OUTPUT")
                    if isinstance(piece, list):
                        piece = "".join(map(str, piece))
                    if piece:
                        pieces.append(piece)
                        await send(stream_chunk(answer_id, self.model, chat, piece, None))
                text = "".join(pieces)
                completion = self.tokens.completion(text)
                reason = finish_reason(completion, self.tokens.limit(ask.max_tokens))
                last = stream_chunk(answer_id, self.model, chat, None, reason)
                if ask.include_usage:
                    last["usage"] = usage(self.tokens.prompt(ask.prompts[0], ask.max_tokens,
                                                             ask.add_special_tokens),
                                          completion)
                await send(last)
                await send("[DONE]")
                await resp.write_eof()
                return resp
        except (asyncio.TimeoutError, aiohttp.ClientError) as err:
            return self._cut(request, resp, err)

    # ------------------------------------------------------------------ text API

    async def text(self, request: web.Request) -> web.Response:
        task = request.path.removeprefix("/v1/")
        if task != self.task:
            raise ApiError(404, f"this model does its task at /v1/{self.task}, not /v1/{task}")
        try:
            payload = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 'body must be JSON such as {"text": "hello"}') from None
        texts = payload.get("text") if isinstance(payload, dict) else None
        single = isinstance(texts, str)
        if single:
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, 'field "text" must be a string or a list of strings')
        request_body: dict[str, Any] = {"inputs": [kserve.text_input(texts)]}
        if self.task == "text-generation":
            for key, (name, dtype) in GEN_INPUTS.items():
                if key in payload:
                    problem = kserve.typed_problem(key, payload[key], dtype)
                    if problem:
                        raise ApiError(400, problem)
                    request_body["inputs"].append(kserve.column(name, dtype, payload[key],
                                                                len(texts)))
        elif "top_k" in payload:
            top_k = payload["top_k"]
            if (self.task not in answers.TOP_K_TASKS or isinstance(top_k, bool)
                    or not isinstance(top_k, int) or top_k < 1):
                raise ApiError(400, 'field "top_k" must be an integer >= 1 (fill-mask and '
                                    f"text-classification only), got {json.dumps(top_k)}")
            request_body["parameters"] = {"top_k": top_k}
        out = await self._infer(request, request_body)
        outputs = [{"name": name, "shape": list(value.shape), "data": value.reshape(-1).tolist()}
                   for name, value in out.items()]
        items = [answers.text_answer(self.task, item)
                 for item in answers.per_item(outputs, len(texts))]
        result = ({"version": self.version, **items[0]} if single
                  else {"version": self.version, "results": items})
        return web.json_response(result)

    # ------------------------------------------------------------------ feedback

    async def feedback(self, request: web.Request) -> web.Response:
        """Outcome report about an answer of this front, counted by Triton's feedback model."""
        if self.answered is None:
            raise ApiError(404, "feedback is taken by the front door here")
        raw = await request.read()
        try:
            request_id, value = parse_report(json.loads(raw) if raw else None)
            self.answered.take(request_id)
        except ValueError as err:
            status = err.status if isinstance(err, FeedbackError) else 400
            raise ApiError(status, str(err)) from None
        body = json.dumps({"inputs": [
            {"name": "score", "shape": [1], "datatype": "FP32", "data": [value]},
            {"name": "requestId", "shape": [1], "datatype": "BYTES", "data": [request_id]}]})
        status, data, _ = await self._post(request, f"/v2/models/{FEEDBACK_MODEL}/infer",
                                           body.encode(), {"Content-Type": "application/json"})
        if status != 200:
            raise self._refusal(status, data)
        return web.json_response({"version": self.version, "success": value})


def new_session() -> aiohttp.ClientSession:
    """The pooled client session to Triton (bodies pass through untouched)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
    )
