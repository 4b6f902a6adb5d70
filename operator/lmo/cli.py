"""The `lmo` command: one entry point, one module per subcommand.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`; it is imported
only when its command runs, so `lmo --help` stays fast and `lmo render` needs no torch.
Errors a user can fix (`lmo.errors.UserError`, `lmo.api.SpecError`) print one readable
message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("lmo_runtime.cli", "convert a checkpoint into a Triton model repository"),
    "up": ("lmo.local.up", "run a LanguageModel on this machine with a real Triton server"),
    "render": ("lmo.render", "print every manifest the operator would create, offline"),
    "operator": ("lmo.operator_main", "run the operator against the current kubeconfig"),
    "status": ("lmo.commands.status", "show versions, phases, traffic and the last analysis"),
    "infer": ("lmo.commands.infer", "send text to a model and print the answer"),
    "logs": ("lmo.commands.logs", "print the sampled request/response records (payload logs)"),
    "generate": ("lmo.commands.generate", "generate text (streamed) from a text-generation model"),
    "promote": ("lmo.commands.traffic", "move all traffic to a version"),
    "rollback": ("lmo.commands.traffic", "move all traffic back to the stable version"),
    "set-traffic": ("lmo.commands.traffic", "set traffic weights, e.g. v1=90 v2=10"),
}


def build_parser(load: bool = True) -> argparse.ArgumentParser:
    from lmo import __version__

    parser = argparse.ArgumentParser(
        prog="lmo",
        description="Serve language models on Triton: convert, route, roll out, autoscale.",
    )
    parser.add_argument("--version", action="version", version=f"lmo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module, _name=name)
        if load and name == _requested(sys.argv):
            mod = importlib.import_module(module)
            adder = getattr(mod, f"add_{name.replace('-', '_')}_arguments", None) or mod.add_arguments
            adder(p)
    return parser


def _requested(argv: list[str]) -> str | None:
    for a in argv[1:]:
        if not a.startswith("-"):
            return a
    return None


def main(argv: list[str] | None = None) -> int:
    from lmo.api import SpecError
    from lmo.errors import UserError

    if argv is not None:
        sys.argv = ["lmo", *argv]
    parser = build_parser()
    args = parser.parse_args()
    try:
        mod = importlib.import_module(args._module)
        runner = getattr(mod, f"run_{args._name.replace('-', '_')}", None) or mod.run
        return int(runner(args) or 0)
    except (UserError, SpecError) as err:
        print(f"lmo {args._name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
