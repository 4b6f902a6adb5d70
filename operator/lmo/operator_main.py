"""`lmo operator`: run the LanguageModel operator against the current kubeconfig (or in-cluster).

The Helm chart runs it as the operator Deployment's command; locally it runs against
whatever `kubectl` points at. Settings come from `LMO_*` environment variables
(`lmo.settings.OperatorSettings`), logging from LMO_LOG_FORMAT (json|text).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import threading

from lmo.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], metavar="NS",
        help="watch this namespace (repeatable; glob patterns like 'ml-*' allowed)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch every namespace (default)"
    )
    parser.add_argument(
        "--peering", metavar="NAME", default=None,
        help="coordinate with other replicas through this KopfPeering (default: standalone)",
    )
    parser.add_argument(
        "--liveness", metavar="URL", default=None,
        help="serve a liveness probe, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None,
        metavar="N", help="port of /metrics (default LMO_METRICS_PORT or 8080; 0 disables)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def ensure_login_name() -> None:
    """Kopf names its identity after `getpass.getuser()`, which raises KeyError for a uid that
    /etc/passwd does not list: lmo's images run as such uids (the chart's 65532, any uid a
    platform assigns). Give it a name through the environment it reads first."""
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["USER"] = f"uid-{os.getuid()}"


def run(args: argparse.Namespace, stop_flag: threading.Event | None = None) -> int:
    import kopf

    from lmo import handlers, logs, metrics

    runtime = handlers.Runtime()  # validates LMO_* settings before connecting
    try:
        logs.configure(runtime.settings.log_format, verbose=args.verbose)
    except ValueError as err:
        raise UserError(str(err)) from None
    port = runtime.settings.metrics_port if args.metrics_port is None else args.metrics_port
    if port:
        metrics.serve(port)
    namespaces = list(args.namespace)
    ensure_login_name()
    asyncio.run(
        kopf.operator(
            registry=kopf.get_default_registry(),
            settings=handlers.kopf_settings(args.peering),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(lmo=runtime),
            stop_flag=stop_flag,
        )
    )
    return 0
