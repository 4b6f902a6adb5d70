"""`python3 -m lmo_runtime.front`: the front of one version in its Triton pod.

Listens on --host/--port (the pod's http port) and talks to Triton on --triton (its HTTP
port on the pod's loopback). Settings may come from the environment instead
(LMO_TASK, LMO_MODEL, LMO_VERSION, LMO_CHAT_TEMPLATE as JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from lmo_runtime.front.answers import DEFAULT_CAPACITY, AnsweredIds
from lmo_runtime.front.app import MAX_CONNECTION_AGE_SECONDS, Front
from lmo_runtime.front.chat import ChatTemplate
from lmo_runtime.front.wire import ENTRY_MODEL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python3 -m lmo_runtime.front", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default=env("LMO_TASK"), choices=sorted(ENTRY_MODEL))
    p.add_argument("--model", default=env("LMO_MODEL"),
                   help="the LanguageModel's name: the OpenAI `model` clients send")
    p.add_argument("--version", default=env("LMO_VERSION"), help="this version's name")
    p.add_argument("--triton", default="http://127.0.0.1:8080", help="Triton's HTTP URL")
    p.add_argument("--repository", default="/models", help="the model repository (tokenizer)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--chat-template", default=env("LMO_CHAT_TEMPLATE"),
                   help="JSON of spec.chatTemplate (enables /v1/chat/completions)")
    p.add_argument("--feedback-ids", type=int, default=DEFAULT_CAPACITY,
                   help="answers remembered for /v1/feedback (bounded memory)")
    p.add_argument("--max-connection-age", type=float, default=MAX_CONNECTION_AGE_SECONDS,
                   metavar="S", help="close a client connection after its first answer past "
                   "this age, so kube-proxy spreads kept-alive clients over the pods again "
                   "(0: never)")
    args = p.parse_args(argv)
    for name in ("task", "model", "version"):
        if not getattr(args, name):
            p.error(f"--{name} (or LMO_{name.upper()}) is required")
    return args


def build(args: argparse.Namespace) -> Front:
    template = None
    if args.chat_template:
        template = ChatTemplate.from_dict(json.loads(args.chat_template))
    return Front(task=args.task, model=args.model, version=args.version,
                 triton_url=args.triton, repository=Path(args.repository),
                 chat_template=template, answered=AnsweredIds(args.feedback_ids),
                 max_connection_age=args.max_connection_age)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        import uvloop  # optional: faster event loop where installed

        uvloop.install()
    except ImportError:
        pass
    front = build(args)
    print(f"lmo front: {args.model}/{args.version} ({args.task}) on {args.host}:{args.port} "
          f"-> {args.triton}", file=sys.stderr, flush=True)
    web.run_app(front.app(), host=args.host, port=args.port, access_log=None,
                print=None, shutdown_timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
