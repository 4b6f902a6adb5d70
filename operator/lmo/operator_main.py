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
from typing import Any

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
        "--leader-election", metavar="LEASE", default=None,
        help="run Kopf only while holding this coordination.k8s.io Lease in the operator's "
        "namespace (LMO_OPERATOR_NAMESPACE); other replicas wait as standbys",
    )
    parser.add_argument(
        "--lease-duration", type=float, default=None, metavar="S",
        help="seconds a silent leader keeps the Lease before a standby takes it (default 10)",
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
    settings = handlers.kopf_settings(args.peering)

    def operator(stop: asyncio.Event | threading.Event | None) -> Any:
        return kopf.operator(
            registry=kopf.get_default_registry(),
            settings=settings,
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=args.peering is None,
            peering_name=args.peering,
            liveness_endpoint=args.liveness,
            memo=kopf.Memo(lmo=runtime),
            stop_flag=stop,
        )

    if not args.leader_election:
        asyncio.run(operator(stop_flag))
        return 0
    if args.peering:
        raise UserError("--leader-election and --peering exclude each other: choose one")
    lease_namespace = runtime.settings.operator_namespace
    if not lease_namespace:
        raise UserError("--leader-election needs the operator's namespace for its Lease: "
                        "set LMO_OPERATOR_NAMESPACE (the chart does)")
    return asyncio.run(_elected(args, runtime, settings, lease_namespace, operator, stop_flag))


async def _elected(args: argparse.Namespace, runtime: Any, settings: Any, namespace: str,
                   operator: Any, stop_flag: threading.Event | None) -> int:
    """Wait for the Lease as a standby, then run Kopf while holding it (lmo.leader)."""
    import logging
    import socket
    import uuid

    import kopf

    from lmo import leader

    log = logging.getLogger("lmo.leader")
    info = runtime.connection or kopf.login_via_client(logger=log, settings=settings)
    runtime.identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"  # in its User-Agents
    kube = runtime.client(info)  # the Lease's: it too logs in again when answered 401
    elector = leader.Elector(kube, namespace, args.leader_election, runtime.identity,
                             duration=args.lease_duration or leader.DURATION)
    runtime.leading = elector.leading
    stop = asyncio.Event()
    if threading.current_thread() is threading.main_thread():
        # a standby stops cleanly on SIGTERM (whatever its parent left as the disposition);
        # once leading, Kopf installs its own handlers, which stop it the same way
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    if stop_flag is not None:  # a caller's threading.Event (tests) stops the standby too
        loop = asyncio.get_running_loop()
        threading.Thread(target=lambda: (stop_flag.wait(), loop.call_soon_threadsafe(stop.set)),
                         daemon=True).start()
    try:
        standby = await leader.serve_standby_health(args.liveness)
        try:
            acquired = asyncio.ensure_future(elector.acquire())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({acquired, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not acquired.done():
                acquired.cancel()
                return 0
        finally:
            if standby is not None:
                await standby.cleanup()
        running = asyncio.ensure_future(operator(stop))
        holding = asyncio.ensure_future(elector.hold())
        await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():  # another replica leads now: stop, and restart as a standby
            stop.set()
            await running
            return 1
        holding.cancel()
        running.result()
        await elector.release()
        return 0
    finally:
        await kube.close()
