"""`lmo generate PROMPT`: generated text, printed token by token as the server streams it.

Streaming uses Triton's generate extension on the decoupled model
`text_generation_stream` (`POST /v2/models/text_generation_stream/generate_stream`,
Server-Sent Events, one event per token); the local front door passes the stream through
unchanged. `--no-stream` asks `text_generation` for the whole text at once.
"""

from __future__ import annotations

import argparse
import json
import sys

import requests

from lmo.api import VERSION_HEADER
from lmo.commands.infer import endpoint, infer, per_item
from lmo.commands.target import TIMEOUT, add_target_arguments
from lmo.errors import UserError

STREAM_MODEL = "text_generation_stream"


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


def parameters(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """The optional inputs of the text_generation models that were given."""
    out: dict[str, tuple[str, object]] = {"MAX_TOKENS": ("INT32", args.max_tokens)}
    for flag, name, dtype in (("temperature", "TEMPERATURE", "FP32"), ("top_k", "TOP_K", "INT32"),
                              ("top_p", "TOP_P", "FP32"), ("seed", "SEED", "INT64"),
                              ("stop", "STOP", "BYTES")):
        value = getattr(args, flag)
        if value is not None:
            out[name] = (dtype, value)
    return out


def stream(url: str, prompt: str, params: dict[str, tuple[str, object]],
           headers: dict[str, str], out=None) -> str | None:
    """Print each streamed piece as it arrives (to `out`, default the sys.stdout of the call,
    not of the import); returns the version that answered."""
    out = sys.stdout if out is None else out
    body = {"TEXT": prompt, **{k: v for k, (_, v) in params.items()}}
    try:
        r = requests.post(f"{url}/v2/models/{STREAM_MODEL}/generate_stream", json=body,
                          headers=headers, stream=True, timeout=TIMEOUT * 4)
    except requests.RequestException as err:
        raise UserError(f"{url}: cannot reach the endpoint ({err.__class__.__name__})") from None
    with r:
        if r.status_code != 200:
            try:
                detail = r.json().get("error", r.reason)
            except ValueError:
                detail = r.text[:300]
            raise UserError(f"{url}: streaming generation failed: {detail} (HTTP "
                            f"{r.status_code}); try --no-stream")
        for line in r.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[len("data:"):].strip())
            if "error" in event:
                raise UserError(f"{url}: generation failed: {event['error']}")
            piece = event.get("TEXT_OUTPUT")
            if isinstance(piece, list):
                piece = "".join(map(str, piece))
            if piece:
                out.write(piece)
                out.flush()
        return r.headers.get(VERSION_HEADER)


def run(args: argparse.Namespace) -> int:
    url, task = endpoint(args)
    if task not in (None, "text-generation"):
        raise UserError(f"this model does {task}, not text-generation; use `lmo infer`")
    headers = {args.header: args.pin} if args.pin else {}
    params = parameters(args)
    if args.no_stream:
        answer, version = infer(url, "text-generation", [args.prompt], headers, params)
        print(args.prompt + str(per_item(answer, 1)[0].get("TEXT_OUTPUT", "")))
    else:
        sys.stdout.write(args.prompt)
        version = stream(url, args.prompt, params, headers)
        sys.stdout.write("\n")
    if version:
        print(f"(answered by {version})", file=sys.stderr)
    return 0
