"""The OpenAI-compatible request and answer shapes (pure functions, no I/O).

Requests are checked here field by field; a bad one raises `ApiError` naming the field and
what to send instead, which the front answers in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`) with the status code the OpenAI SDK maps
to its exceptions (400 BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429
RateLimitError, 503 InternalServerError).
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmo_runtime.front.chat import Template

# OpenAI's error "type" per HTTP status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}
OPENAI_PATHS = ("/v1/models", "/v1/embeddings", "/v1/completions", "/v1/chat/completions")
MAX_STOP = 1  # the text_generation model takes one STOP string per row
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (unless the checkpoint says)


class ApiError(Exception):
    """A request the front answers with `status` (OpenAI's error shape on OpenAI paths)."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PATHS)


def error_body(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"),
                      "param": param, "code": code}}


def model_object(name: str, created: int, task: str) -> dict[str, Any]:
    """An OpenAI model object; `task` (lmo's) tells clients which endpoints it serves."""
    return {"id": name, "object": "model", "created": created, "owned_by": "lmo", "task": task}


def _object(body: Any, example: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object such as {example}")
    return body


def check_model(body: dict[str, Any], name: str) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f'field "model" is required: send "model": "{name}"', "model")
    if model != name:
        raise ApiError(404, f"the model {model!r} does not exist here; this endpoint serves "
                            f"{name!r} (GET /v1/models lists it)", "model", "model_not_found")


def _unsupported(body: dict[str, Any], fields: dict[str, Any]) -> None:
    """Fields lmo does not implement are refused unless they hold their no-op value."""
    for key, neutral in fields.items():
        if key in body and body[key] is not None and body[key] != neutral:
            raise ApiError(400, f'field "{key}" is not supported by lmo (send it as '
                                f'{neutral!r} or leave it out)', key)


def _number(body: dict[str, Any], key: str, low: float, high: float,
            integer: bool = False, low_open: bool = False) -> Any:
    value = body.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ApiError(400, f'field "{key}" must be {"an integer" if integer else "a number"}, '
                            f"got {value!r}", key)
    if value < low or value > high or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ApiError(400, f'field "{key}" must be in {bound}, got {value!r}', key)
    return value


# ---------------------------------------------------------------------- embeddings


@dataclass
class EmbeddingsRequest:
    texts: list[str]
    base64: bool


def _texts(body: dict[str, Any], key: str) -> list[str]:
    """A field holding a string or a non-empty list of strings, as a list."""
    value = body.get(key)
    texts = [value] if isinstance(value, str) else value
    if (not isinstance(texts, list) or not texts
            or not all(isinstance(t, str) for t in texts)):
        raise ApiError(400, f'field "{key}" must be a string or a non-empty list of strings '
                            "(token arrays are not supported: send the text)", key)
    return texts


def embeddings_request(body: Any, name: str) -> EmbeddingsRequest:
    body = _object(body, f'{{"model": "{name}", "input": "hello"}}')
    check_model(body, name)
    texts = _texts(body, "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise ApiError(400, f'field "encoding_format" must be "float" or "base64", got {fmt!r}',
                       "encoding_format")
    _unsupported(body, {"dimensions": None})
    return EmbeddingsRequest(texts, fmt == "base64")


def embeddings_answer(name: str, vectors: np.ndarray, as_base64: bool,
                      prompt_tokens: int) -> dict[str, Any]:
    data = []
    for i, row in enumerate(np.asarray(vectors, dtype="<f4")):
        embedding: Any = (base64.b64encode(row.tobytes()).decode("ascii") if as_base64
                          else row.tolist())
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {"object": "list", "data": data, "model": name,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


# ---------------------------------------------------------------------- completions


@dataclass
class CompletionRequest:
    prompts: list[str]
    max_tokens: int
    stream: bool
    include_usage: bool = False
    params: dict[str, Any] = field(default_factory=dict)  # Triton input name -> value
    add_special_tokens: bool = True  # False: the prompt holds its special tokens (BOS)


def _sampling(body: dict[str, Any], name: str, stop_default: str | None = None,
              tokens_key: str = "max_tokens", default_max_tokens: int = DEFAULT_MAX_TOKENS,
              ) -> tuple[int, dict[str, Any], bool, bool]:
    """(max_tokens, Triton inputs, stream, include_usage) shared by both endpoints; a request
    without max_tokens gets `default_max_tokens` (the checkpoint's max_new_tokens, else
    OpenAI's 16); the other sampling parameters it omits are the model's defaults (the
    checkpoint's generation config)."""
    check_model(body, name)
    _unsupported(body, {"n": 1, "logprobs": None, "echo": False, "best_of": 1,
                        "suffix": None, "logit_bias": None, "tools": None,
                        "response_format": None, "presence_penalty": 0,
                        "frequency_penalty": 0})
    max_tokens = body.get(tokens_key)
    if max_tokens is None and tokens_key != "max_tokens":
        max_tokens = body.get("max_tokens")
        tokens_key = "max_tokens"
    max_tokens = _number(body, tokens_key, 1, 1 << 20, integer=True) or default_max_tokens
    params: dict[str, Any] = {"MAX_TOKENS": max_tokens}
    temperature = _number(body, "temperature", 0, 2)
    if temperature is not None:
        params["TEMPERATURE"] = float(temperature)
    top_k = _number(body, "top_k", 0, 1 << 20, integer=True)  # lmo's extension, as vLLM's
    if top_k is not None:
        params["TOP_K"] = top_k
    top_p = _number(body, "top_p", 0, 1, low_open=True)
    if top_p is not None:
        params["TOP_P"] = float(top_p)
    seed = _number(body, "seed", -(1 << 63), (1 << 63) - 1, integer=True)
    if seed is not None:
        params["SEED"] = int(seed)
    stop = body.get("stop")
    if isinstance(stop, list):
        if len(stop) > MAX_STOP or not all(isinstance(s, str) for s in stop):
            raise ApiError(400, 'field "stop": lmo takes one stop string (a string or a list '
                                f"of one), got {stop!r}", "stop")
        stop = stop[0] if stop else None
    if stop is not None and not isinstance(stop, str):
        raise ApiError(400, f'field "stop" must be a string, got {stop!r}', "stop")
    stop = stop if stop is not None else stop_default
    if stop:
        params["STOP"] = stop
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f'field "stream" must be true or false, got {stream!r}', "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, 'field "stream_options" must be an object', "stream_options")
    return max_tokens, params, stream, bool(options.get("include_usage"))


def completion_request(body: Any, name: str,
                       default_max_tokens: int = DEFAULT_MAX_TOKENS) -> CompletionRequest:
    body = _object(body, f'{{"model": "{name}", "prompt": "Once upon a time"}}')
    max_tokens, params, stream, usage = _sampling(body, name,
                                                  default_max_tokens=default_max_tokens)
    prompts = _texts(body, "prompt")
    if stream and len(prompts) != 1:
        raise ApiError(400, 'field "prompt": a streamed completion takes one prompt', "prompt")
    return CompletionRequest(prompts, max_tokens, stream, usage, params)


def chat_request(body: Any, name: str, template: Template,
                 default_max_tokens: int = DEFAULT_MAX_TOKENS) -> CompletionRequest:
    body = _object(body, f'{{"model": "{name}", "messages": [{{"role": "user", '
                         '"content": "Hello"}]}')
    max_tokens, params, stream, usage = _sampling(body, name, template.stop,
                                                  tokens_key="max_completion_tokens",
                                                  default_max_tokens=default_max_tokens)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, 'field "messages" must be a non-empty list of '
                            '{"role": ..., "content": ...}', "messages")
    clean = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"messages[{i}].role must be system, user or assistant, "
                                f"got {role!r}", f"messages[{i}].role")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text"
                       and isinstance(p.get("text"), str) for p in content):
                raise ApiError(400, f"messages[{i}].content: only text parts are supported",
                               f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{i}].content must be a string",
                           f"messages[{i}].content")
        clean.append({"role": role, "content": content})
    try:
        prompt = template.render(clean)
    except ValueError as err:  # the checkpoint's template refused (raise_exception)
        raise ApiError(400, str(err), "messages") from None
    return CompletionRequest([prompt], max_tokens, stream, usage, params,
                             template.add_special_tokens)


def finish_reason(completion_tokens: int, max_tokens: int) -> str:
    """"length" when the model ran out of tokens, else "stop" (end of text or a stop string)."""
    return "length" if completion_tokens >= max_tokens else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_answer(answer_id: str, name: str, texts: list[str], reasons: list[str],
                      use: dict[str, int]) -> dict[str, Any]:
    return {"id": answer_id, "object": "text_completion", "created": int(time.time()),
            "model": name, "choices": [
                {"index": i, "text": t, "logprobs": None, "finish_reason": r}
                for i, (t, r) in enumerate(zip(texts, reasons))],
            "usage": use}


def chat_answer(answer_id: str, name: str, text: str, reason: str,
                use: dict[str, int]) -> dict[str, Any]:
    return {"id": answer_id, "object": "chat.completion", "created": int(time.time()),
            "model": name, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "logprobs": None, "finish_reason": reason}],
            "usage": use}


def stream_chunk(answer_id: str, name: str, chat: bool, piece: str | None,
                 reason: str | None, first: bool = False) -> dict[str, Any]:
    """One server-sent event of a streamed (chat) completion."""
    if chat:
        delta: dict[str, Any] = {}
        if first:
            delta["role"] = "assistant"
        if piece:
            delta["content"] = piece
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": reason}
        kind = "text_completion"
    return {"id": answer_id, "object": kind, "created": int(time.time()), "model": name,
            "choices": [choice]}
