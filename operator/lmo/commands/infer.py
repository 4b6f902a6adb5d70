"""`lmo infer TEXT...`: send text to a model's endpoint and print the answer.

Speaks KServe v2 JSON (`POST /v2/models/<entry>/infer`), so it works against a local
front door, a cluster endpoint (`status.endpoint`) or a Triton server itself. The answer
line says which version gave it (the `x-lmo-version` header) when the endpoint tells.
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
from lmo_runtime.manifest import ENTRY_MODEL



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="+", help="input text(s), one request with all of them")
    parser.add_argument("--name", help="LanguageModel name (cluster mode: uses status.endpoint)")
    parser.add_argument("--version", dest="pin", metavar="VERSION",
                        help="ask this version (sent in the A/B header, x-lmo-version)")
    parser.add_argument("--header", default=VERSION_HEADER, help="A/B header name")
    parser.add_argument("--task", choices=sorted(ENTRY_MODEL), help="skip task discovery")
    parser.add_argument("--json", action="store_true", help="print the raw KServe v2 answer")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="text-classification: the K best labels (default all); fill-mask: "
                             "K candidates per mask (default 5)")
    add_target_arguments(parser, name=False)


def base_url(endpoint: str) -> str:
    """The server URL in front of `/v2/...` that the KServe v2 paths are appended to.

    `status.endpoint` is the model's URL under GatewayAPI (`http://HOST/v2/models/<entry>`,
    see `lmo.builders.traffic.endpoint`) and a bare server URL under the Service provider
    (`http://<lm>.<ns>.svc:8000`); `--url` may be either too. Everything from the first
    `/v2` path segment on is cut off, so both give the URL requests are built on (a path
    prefix before `/v2`, as some gateways add, is kept).
    """
    parts = urlsplit(endpoint.strip())
    segments = parts.path.rstrip("/").split("/")
    if "v2" in segments:
        segments = segments[: segments.index("v2")]
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


def discover_task(url: str) -> str:
    """The task behind an endpoint: lmo's admin API, else Triton's repository index."""
    try:
        r = requests.get(url + "/lmo/status", timeout=TIMEOUT)
        if r.status_code == 200:
            return r.json()["task"]
        r = requests.post(url + "/v2/repository/index", json={}, timeout=TIMEOUT)
        if r.status_code == 200:
            names = {m.get("name") for m in r.json()}
            for task, entry in ENTRY_MODEL.items():
                if entry in names:
                    return task
    except (requests.RequestException, ValueError, KeyError) as err:
        raise UserError(f"{url}: cannot reach the endpoint ({err.__class__.__name__})") from None
    raise UserError(f"{url}: cannot tell which task it serves; pass --task")


def infer(url: str, task: str, texts: list[str], headers: dict[str, str] | None = None,
          extra: dict[str, tuple[str, Any]] | None = None,
          parameters: dict[str, Any] | None = None) -> tuple[dict[str, Any], str | None]:
    """One KServe v2 request; (answer JSON, version that answered or None)."""
    inputs = [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES", "data": texts}]
    for name, (dtype, value) in (extra or {}).items():
        inputs.append({"name": name, "shape": [len(texts), 1], "datatype": dtype,
                       "data": [value] * len(texts)})
    model = ENTRY_MODEL[task]
    body: dict[str, Any] = {"inputs": inputs}
    if parameters:
        body["parameters"] = parameters
    try:
        r = requests.post(f"{url}/v2/models/{model}/infer", json=body,
                          headers=headers or {}, timeout=TIMEOUT * 4)
    except requests.RequestException as err:
        raise UserError(f"{url}: cannot reach the endpoint ({err.__class__.__name__})") from None
    try:
        body = r.json()
    except ValueError:
        body = {"error": r.text[:300]}
    if r.status_code != 200:
        raise UserError(f"{url}/v2/models/{model}/infer: {body.get('error', r.reason)} "
                        f"(HTTP {r.status_code})")
    return body, r.headers.get(VERSION_HEADER)


def per_item(answer: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Split a batched KServe answer into one {output: value} dict per input."""
    return answers.per_item(answer.get("outputs", []), n)


def run(args: argparse.Namespace) -> int:
    url, task = endpoint(args)
    task = args.task or task or discover_task(url)
    headers = {args.header: args.pin} if args.pin else {}
    if args.top_k is not None and args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if args.top_k is not None and task not in answers.TOP_K_TASKS:
        raise UserError(f"--top-k applies to {' and '.join(answers.TOP_K_TASKS)}, not {task}")
    params = {"top_k": args.top_k} if args.top_k is not None else None
    answer, version = infer(url, task, list(args.text), headers, parameters=params)
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    by = f"[{version}] " if version else ""
    for text, item in zip(args.text, per_item(answer, len(args.text))):
        prefix = f"{text!r}: " if len(args.text) > 1 else ""
        print(f"{by}{prefix}{answers.describe(task, item)}")
    return 0
