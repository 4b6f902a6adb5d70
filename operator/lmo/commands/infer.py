"""`lmo infer TEXT...`: send text to a model's endpoint and print the answer.

Speaks lmo's text API (`POST /v1/<task>` `{"text": [...], "top_k": N}`), served the same by
`lmo up` and by every version's front on the cluster (`status.endpoint`). The answer line
says which version gave it (the `x-lmo-version` header).
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from lmo.api import VERSION_HEADER
from lmo.commands.target import TIMEOUT, add_target_arguments, get_lm, resolve
from lmo.errors import UserError
from lmo_runtime import answers
from lmo_runtime.front.wire import ENTRY_MODEL



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help="input text(s), one request with all of them")
    parser.add_argument("--name", help="LanguageModel name (cluster mode: uses status.endpoint)")
    parser.add_argument("--version", dest="pin", metavar="VERSION",
                        help="ask this version (sent in the A/B header, x-lmo-version)")
    parser.add_argument("--header", default=VERSION_HEADER, help="A/B header name")
    parser.add_argument("--task", choices=sorted(ENTRY_MODEL), help="skip task discovery")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="text-classification: the K best labels (default all); fill-mask: "
                             "K candidates per mask (default 5)")
    add_target_arguments(parser, name=False)


def base_url(endpoint: str) -> str:
    """The server URL in front of `/v1/...` and `/v2/...`.

    `status.endpoint` is the client's base URL (`http://GATEWAY/<namespace>/<name>`, or
    `http://HOST` with routing.hostname; `lmo.builders.traffic.endpoint`); `--url` may also
    name an OpenAI base URL (`.../v1`) or a KServe model URL (`.../v2/models/<entry>`).
    Everything from the first `/v1` or `/v2` path segment on is cut off (a path prefix
    before it, as the shared-listener routes have, is kept).
    """
    parts = urlsplit(endpoint.strip())
    segments = parts.path.rstrip("/").split("/")
    for api in ("v1", "v2"):
        if api in segments:
            segments = segments[: segments.index(api)]
    return urlunsplit((parts.scheme, parts.netloc, "/".join(segments), "", "")).rstrip("/")


def endpoint(args: argparse.Namespace) -> tuple[str, str | None]:
    """(base URL, task or None) of the model the command talks to."""
    target = resolve(args)
    if target.local:
        return base_url(target.url), None
    obj = get_lm(target)
    url = (obj.get("status") or {}).get("endpoint")
    if not url:
        raise UserError(f"languagemodel {target.namespace}/{target.name} has no status.endpoint "
                        f"yet (is it Ready? `lmo status {target.name}`); or pass --url")
    return base_url(url), obj["spec"]["task"]


def served_model(url: str) -> tuple[str, str]:
    """(the model's name, its task) from the endpoint's `GET /v1/models`."""
    try:
        r = requests.get(url + "/v1/models", timeout=TIMEOUT)
        model = r.json()["data"][0] if r.status_code == 200 else None
    except (requests.RequestException, ValueError, KeyError, IndexError) as err:
        raise UserError(f"{url}: cannot reach the endpoint ({err.__class__.__name__})") from None
    if not model or model.get("task") not in ENTRY_MODEL:
        raise UserError(f"{url}/v1/models: not an lmo endpoint (HTTP {r.status_code}); "
                        "pass --task, or check --url")
    return model["id"], model["task"]


def post(url: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
         stream: bool = False) -> requests.Response:
    """POST JSON; a refusal becomes a UserError with the server's own message."""
    try:
        r = requests.post(url + path, json=body, headers=headers or {}, stream=stream,
                          timeout=TIMEOUT * 4)
    except requests.RequestException as err:
        raise UserError(f"{url}: cannot reach the endpoint ({err.__class__.__name__})") from None
    if r.status_code != 200:
        try:
            error = r.json().get("error", r.reason)
        except ValueError:
            error = r.text[:300] or r.reason
        if isinstance(error, dict):  # OpenAI's shape
            error = error.get("message")
        raise UserError(f"{url}{path}: {error} (HTTP {r.status_code})")
    return r


def infer(url: str, task: str, texts: list[str], headers: dict[str, str] | None = None,
          top_k: int | None = None) -> tuple[dict[str, Any], str | None]:
    """One text-API request; (answer JSON, version that answered or None)."""
    body: dict[str, Any] = {"text": texts}
    if top_k is not None:
        body["top_k"] = top_k
    r = post(url, f"/v1/{task}", body, headers)
    return r.json(), r.headers.get(VERSION_HEADER)


def run(args: argparse.Namespace) -> int:
    url, task = endpoint(args)
    task = args.task or task or served_model(url)[1]
    headers = {args.header: args.pin} if args.pin else {}
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_k is not None and task not in answers.TOP_K_TASKS:
        raise UserError(f"--top-k applies to {' and '.join(answers.TOP_K_TASKS)}, not {task}")
    answer, version = infer(url, task, list(args.text), headers, args.top_k)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    by = f"[{version}] " if version else ""
    for text, item in zip(args.text, answer["results"]):
        prefix = f"{text!r}: " if len(args.text) > 1 else ""
        print(f"{by}{prefix}{answers.describe(task, item)}")
    return 0
