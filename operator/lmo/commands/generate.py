"""`lmo generate PROMPT`: generated text, printed piece by piece as the server streams it.

Speaks the OpenAI-compatible `POST /v1/completions` (streamed as server-sent events), the
same in `lmo up` and on the cluster (`status.endpoint`); `--no-stream` asks for the whole
text at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lmo.api import VERSION_HEADER
from lmo.commands.infer import endpoint, post, served_model
from lmo.commands.target import add_target_arguments
from lmo.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="text to continue")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stop", help="stop when this text is generated")
    parser.add_argument("--no-stream", action="store_true", help="one answer, not a stream")
    parser.add_argument("--name", help="LanguageModel name (cluster mode: uses status.endpoint)")
    parser.add_argument("--version", dest="pin", metavar="VERSION",
                        help="ask this version (sent in the A/B header)")
    parser.add_argument("--header", default=VERSION_HEADER, help="A/B header name")
    add_target_arguments(parser, name=False)


def completion(args: argparse.Namespace, model: str, stream: bool) -> dict[str, Any]:
    """The /v1/completions body of the given flags (top_k is lmo's extension)."""
    body: dict[str, Any] = {"model": model, "prompt": args.prompt, "max_tokens": args.max_tokens,
                            "stream": stream}
    for flag in ("temperature", "top_k", "top_p", "seed", "stop"):
        value = getattr(args, flag)
        if value is not None:
            body[flag] = value
    return body


def stream(url: str, body: dict[str, Any], headers: dict[str, str], out=None) -> str | None:
    """Print each streamed piece as it arrives (to `out`, default the sys.stdout of the call,
    not of the import); returns the version that answered."""
    out = sys.stdout if out is None else out
    r = post(url, "/v1/completions", body, headers, stream=True)
    with r:
        for line in r.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise UserError(f"{url}: generation failed: {event['error'].get('message')}")
            out.write(event["choices"][0]["text"])
            out.flush()
        return r.headers.get(VERSION_HEADER)


def run(args: argparse.Namespace) -> int:
    url, task = endpoint(args)
    model, served_task = served_model(url)
    if (task or served_task) != "text-generation":
        raise UserError(f"this model does {task or served_task}, not text-generation; "
                        "use `lmo infer`")
    headers = {args.header: args.pin} if args.pin else {}
    if args.no_stream:
        r = post(url, "/v1/completions", completion(args, model, False), headers)
        print(args.prompt + r.json()["choices"][0]["text"])
        version = r.headers.get(VERSION_HEADER)
    else:
        sys.stdout.write(args.prompt)
        version = stream(url, completion(args, model, True), headers)
        sys.stdout.write("\n")
    if version:
        print(f"(answered by {version})", file=sys.stderr)
    return 0
