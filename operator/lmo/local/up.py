"""`lmo up -f FILE`: run a LanguageModel on this machine.

1. Parse the file with `lmo.api.load_file` (the same checks and messages as the cluster).
2. Convert every version with `lmo_runtime.convert` (progress bars; the conversion cache
   lives under the work dir, so a second `lmo up` starts in seconds).
3. Start one real Triton server per version, each on its own repository, exactly as the
   cluster runs one Deployment per version. One server per version (rather than one server
   with renamed models) keeps every artifact byte-identical to what the cluster serves, keeps
   the entry model name the same for all versions (routing stays transparent to clients) and
   gives per-version metrics for canary analysis without relabelling.
4. Serve the front door (`lmo.local.frontdoor`) on localhost: KServe v2 plus `/v1/<task>`,
   with the cluster's routing rules. Print the endpoint and a curl to paste.
5. Watch the file: traffic, routing and rollout edits apply at once; a new or changed
   version is converted and started in the background, then routed. A Triton server that
   exits is restarted (as a Deployment restarts a crashed pod). Ctrl-C or SIGTERM stops
   the front door and every Triton server it started.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from lmo.api import LanguageModel, SpecError, load_file
from lmo.builders import conversion_request
from lmo.builders.payloads import payload_env
from lmo.conditions import NORMAL, WARNING, Reason
from lmo.errors import UserError
from lmo.local.controller import Backend, Controller
from lmo.local.frontdoor import FrontDoor
from lmo.local.secrets import api_keys
from lmo.local.secrets import load_file as load_secrets
from lmo.upstate import DEFAULT_WORK_DIR, remove_state, write_state
from lmo.local.versions import (
    Artifact,
    ServerFlavour,
    convert_version,
    default_threads,
    local_request,
    server_flavour,
)
from lmo_runtime.manifest import ENTRY_MODEL
from lmo_runtime.payloads import SHIPPED_NAME

log = logging.getLogger("lmo.up")
# Triton's p99 latency summary, as the cluster's pods export it (lmo.builders.triton):
# lmo status reads it from /metrics
SUMMARY_LATENCIES = "--metrics-config=summary_latencies=true"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, help="YAML file with a LanguageModel")
    parser.add_argument("--port", type=int, default=8080, help="front door port (0: any free)")
    parser.add_argument("--host", default="127.0.0.1", help="front door address")
    parser.add_argument(
        "--work-dir", default=DEFAULT_WORK_DIR, help="artifacts, conversion cache, logs, state"
    )
    parser.add_argument(
        "--cache-dir", help="conversion cache, shareable between work dirs (default: "
        "<work-dir>/cache)"
    )
    parser.add_argument(
        "--no-watch", action="store_true", help="do not apply edits of the file while running"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--secrets", metavar="FILE",
        help="YAML with v1 Secret documents the spec names (e.g. the API keys of "
        "spec.protection.auth); else LMO_SECRET_<NAME> holds a Secret's data as JSON",
    )


def _load_one(path: Path) -> LanguageModel:
    if not path.is_file():
        raise UserError(f"-f {path}: no such file")
    models = load_file(path)
    if len(models) > 1:
        names = ", ".join(m.metadata.name for m in models)
        raise UserError(f"-f {path}: lmo up serves one LanguageModel per file (found {names})")
    return models[0]


class Fleet:
    """The Triton servers of one LanguageModel: one per version, keyed by artifact."""

    def __init__(self, lm_name: str, work_dir: Path, base_dir: Path, flavour: ServerFlavour,
                 progress: bool, cache_dir: Path):
        self.lm_name = lm_name
        self.cache_dir = cache_dir
        self.work_dir = work_dir
        self.base_dir = base_dir
        self.flavour = flavour
        self.progress = progress
        self.servers: dict[str, Any] = {}  # version -> TritonServer
        self.keys: dict[str, str] = {}  # version -> artifact key it serves
        # version -> the Triton environment it runs with (payload logging, see payload_env)
        self.env: dict[str, dict[str, str]] = {}
        self._retired: list[Any] = []  # replaced servers, stopped once traffic moved off
        # One change of the servers at a time (file edits vs restarts after a crash).
        self.lock = asyncio.Lock()

    def artifacts(self, lm: LanguageModel, only: list[str] | None = None) -> dict[str, Artifact]:
        """Convert (or reuse) the artifacts of the named versions (all when None)."""
        out = {}
        for v in lm.spec.versions:
            if only is not None and v.name not in only:
                continue
            request = local_request(lm.spec, v, self.base_dir, self.flavour)
            _say(f"version {v.name}: {v.checkpoint.uri} -> {request.precision} "
                 f"({request.backend} backend), key {request.short_key()}")
            artifact = convert_version(v.name, request, self.work_dir, self.cache_dir,
                                       progress=self.progress)
            artifact = dataclasses.replace(
                artifact, spec_key=conversion_request(lm.spec, v).key()
            )
            score = artifact.manifest.score
            _say(f"version {v.name}: artifact ready"
                 + (f", {score.metric} {score.value:.4f}" if score else "")
                 + f", precision {artifact.manifest.precision}")
            out[v.name] = artifact
            self.env[v.name] = payload_env(lm.spec, lm.metadata.name, v.name)
            if self.env[v.name] and not any(artifact.repository.glob(f"*/*/{SHIPPED_NAME}")):
                _say(f"version {v.name}: its artifact was converted before payload logging "
                     f"existed, so spec.logging.payloads does nothing for it; remove "
                     f"{artifact.directory} and the conversion cache entry "
                     f"{artifact.manifest.key[:12]}... to convert it again")
        return out

    def changed(self, lm: LanguageModel) -> list[str]:
        """Versions whose artifact or payload logging would differ from what is served (or
        that are new)."""
        return [
            v.name
            for v in lm.spec.versions
            if self.keys.get(v.name) != local_request(lm.spec, v, self.base_dir, self.flavour).key()
            or self.env.get(v.name) != payload_env(lm.spec, lm.metadata.name, v.name)
        ]

    def start(self, artifacts: dict[str, Artifact]) -> dict[str, Backend]:
        """Start one server per artifact, in parallel; each is ready when this returns."""
        from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL
        from lmo_runtime.triton.server import TritonServer, TritonError, list_models

        logs = self.work_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        servers = {
            # the front door takes feedback itself (lmo.local.feedback): no feedback model
            name: TritonServer(a.repository,
                               models=[m for m in list_models(a.repository)
                                       if m != FEEDBACK_MODEL],
                               log_path=logs / f"{self.lm_name}-{name}.log",
                               env=self.env.get(name), extra_args=[SUMMARY_LATENCIES])
            for name, a in artifacts.items()
        }
        started: dict[str, Any] = {}
        errors = []
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(servers)))
        futures = {pool.submit(s.start): name for name, s in servers.items()}
        try:
            for fut in concurrent.futures.as_completed(futures):
                name = futures[fut]
                try:
                    fut.result()
                    started[name] = servers[name]
                except TritonError as err:
                    errors.append(f"version {name}: Triton did not start: {err}")
        except BaseException:
            # Ctrl-C (SIGTERM arrives as KeyboardInterrupt too) or an unexpected error while
            # servers start. None is in self.servers yet, and each runs in its own session,
            # so nothing else would stop them: stop every one, started or still starting.
            _stop_starting(list(servers.values()), list(futures))
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            for s in started.values():
                s.stop()
            raise UserError("\n".join(errors))
        backends = {}
        for name, s in started.items():
            old = self.servers.pop(name, None)
            if old is not None:
                self._retired.append(old)
            self.servers[name] = s
            self.keys[name] = artifacts[name].manifest.key
            backends[name] = Backend(name, s.url, s.grpc_url, s.metrics_url, artifacts[name])
            _say(f"version {name}: Triton ready at {s.url} (gRPC {s.grpc_url})")
        return backends

    def retire(self, names: list[str]) -> None:
        for name in names:
            server = self.servers.pop(name, None)
            self.keys.pop(name, None)
            if server is not None:
                server.stop()

    def stop_retired(self) -> None:
        while self._retired:
            self._retired.pop().stop()

    def stop(self) -> None:
        self.retire(list(self.servers))
        self.stop_retired()


def _stop_starting(servers: list[Any], futures: list[concurrent.futures.Future]) -> None:
    """Stop servers whose `start()` may still be running in other threads.

    A start that is waiting for readiness fails soon after its process is stopped; one that
    had not spawned its process yet may spawn it after a stop, so stop again until every
    start has returned.
    """
    while True:
        for s in servers:
            s.stop()
        _, pending = concurrent.futures.wait(futures, timeout=0.5)
        if not pending:
            break
    for s in servers:
        s.stop()


def _say(msg: str) -> None:
    print(f"lmo up: {msg}", flush=True)


def curl_example(url: str, task: str) -> str:
    body = {"text": "The quick brown fox jumps over the lazy dog."}
    if task == "fill-mask":
        body = {"text": "Paris is the [MASK] of France."}
    elif task == "text-generation":
        body = {"text": "Once upon a time", "max_tokens": 16}
    return (f"curl -s {url}/v1/{task} -H 'content-type: application/json' "
            f"-d '{json.dumps(body)}'")


def lmo_command() -> str:
    """The `lmo` to type for the follow-up commands: a full path, found without a PATH.

    It is the one installed next to this Python (after `make up`, .venv/bin/lmo, which a
    bare `lmo` does not find unless the virtualenv is activated); without one (run as
    `python -m lmo.cli`), this Python with `-m lmo.cli`.
    """
    exe = Path(sys.executable).parent / "lmo"
    if exe.is_file():
        return shlex.quote(str(exe.absolute()))
    return f"{shlex.quote(sys.executable)} -m lmo.cli"


def banner(url: str, task: str) -> str:
    """What `lmo up` prints once it serves: a curl to paste, the OpenAI base URL, the KServe
    endpoint, and the next command spelled with the full path of `lmo` (`lmo_command`)."""
    return (f"\n  {curl_example(url, task)}\n"
            f"  OpenAI-compatible (base_url): {url}/v1\n"
            f"  KServe v2 / tritonclient: {url}  model {ENTRY_MODEL[task]}\n"
            f"  {lmo_command()} status --local    |    Ctrl-C to stop\n")


def run(args: argparse.Namespace) -> int:
    default_threads()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lmo up: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    path = Path(args.file).resolve()
    work_dir = Path(args.work_dir).resolve()
    lm = _load_one(path)
    secrets = load_secrets(path, only_secrets=False)  # Secret documents beside the model
    if getattr(args, "secrets", None):
        secrets.update(load_secrets(args.secrets))
    api_keys(lm.spec.protection, secrets)  # a missing Secret is said before any conversion
    args.secret_data = secrets
    _check_port(args.host, args.port)
    flavour = server_flavour()
    _say(f"{lm.metadata.name}: {lm.spec.task}, {len(lm.spec.versions)} version(s); "
         f"{flavour.describe()}")
    # SIGTERM during conversion or server start: unwind like Ctrl-C so nothing is left.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cache_dir = Path(args.cache_dir).resolve() if args.cache_dir else work_dir / "cache"
    fleet = Fleet(lm.metadata.name, work_dir, path.parent, flavour, progress=not args.quiet,
                  cache_dir=cache_dir)
    try:
        backends = fleet.start(fleet.artifacts(lm))
        controller = Controller(lm, backends)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(controller, fleet, args, path, work_dir))
    except KeyboardInterrupt:
        _say("interrupted")
    finally:
        fleet.stop()
        remove_state(work_dir)
    _say("stopped")
    return 0


def _check_port(host: str, port: int) -> None:
    """Fail before converting anything when the front door's port is taken."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise UserError(
                f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); pick "
                f"another port or --port 0 for any free one"
            ) from None


def _loop_factory():
    """uvloop when installed (the `local` extra): the front door's per-request cost halves."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


async def _serve(controller: Controller, fleet: Fleet, args: argparse.Namespace, path: Path,
                 work_dir: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    door = FrontDoor(controller, args.secret_data)
    try:
        port = await door.start(args.host, args.port)
    except OSError as err:
        raise UserError(
            f"--port {args.port}: cannot listen on {args.host}:{args.port} ({err.strerror}); "
            f"pick another port or --port 0 for any free one"
        ) from None
    url = f"http://{args.host}:{port}"
    controller.endpoint = url
    await controller.start()
    write_state(work_dir, {"pid": os.getpid(), "url": url, "name": controller.lm.metadata.name,
                           "file": str(path), "task": controller.spec.task})
    task = controller.spec.task
    _say(f"{controller.lm.metadata.name} is serving at {url}  "
         f"(traffic {controller.status()['trafficSummary']})")
    print(banner(url, task), flush=True)
    tasks = [asyncio.create_task(_supervise(controller, fleet)),
             asyncio.create_task(controller.recent.run(controller))]
    if not args.no_watch:
        tasks.append(asyncio.create_task(_watch(path, controller, fleet, args.secret_data)))
    try:
        await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await controller.stop()
        await door.stop()


async def _supervise(controller: Controller, fleet: Fleet, every: float = 2.0) -> None:
    """Restart a Triton server that exited, as a Deployment restarts a crashed pod."""
    while True:
        await asyncio.sleep(every)
        for name, server in list(fleet.servers.items()):
            proc = server.process
            if proc is not None and proc.poll() is None:
                continue
            backend = controller.backends.get(name)
            if backend is None:
                continue
            code = None if proc is None else proc.returncode
            controller.set_ready(name, False)
            controller.event(WARNING, Reason.TRITON_EXITED,
                             f"version {name}: Triton exited (code {code}); restarting. Log tail:"
                             f" {server.log_tail(5)}")
            async with fleet.lock:
                if fleet.servers.get(name) is not server:
                    continue  # replaced by a file edit meanwhile
                try:
                    new = await asyncio.to_thread(fleet.start, {name: backend.artifact})
                except UserError as err:
                    controller.event(WARNING, Reason.TRITON_RESTART_FAILED, str(err))
                    continue
                controller.add_backends(new)
                await asyncio.to_thread(fleet.stop_retired)


async def _watch(path: Path, controller: Controller, fleet: Fleet,
                 secrets: dict[str, dict[str, str]] | None = None) -> None:
    """Apply edits of the file: routing at once, new or changed versions after conversion."""
    last = path.stat().st_mtime_ns
    while True:
        await asyncio.sleep(1.0)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        if mtime == last:
            continue
        last = mtime
        try:
            lm = _load_one(path)
            api_keys(lm.spec.protection, secrets or {})
        except (SpecError, UserError) as err:
            controller.event(WARNING, Reason.INVALID_SPEC, f"{path.name} not applied: {err}")
            continue
        async with fleet.lock:
            await _apply(path, lm, controller, fleet)


async def _apply(path: Path, lm: LanguageModel, controller: Controller, fleet: Fleet) -> None:
    """Make the running servers and routing match an edited file."""
    try:
        changed = fleet.changed(lm)
        if changed:
            controller.event(NORMAL, Reason.CONVERTING, f"versions {', '.join(changed)}")
            controller.converting = set(changed)
            try:
                artifacts = await asyncio.to_thread(fleet.artifacts, lm, changed)
                new = await asyncio.to_thread(fleet.start, artifacts)
            finally:
                controller.converting = set()
            controller.add_backends(new)
        gone = [n for n in controller.backends if n not in {v.name for v in lm.spec.versions}]
        controller.set_spec(lm.spec)
        controller.remove_backends(gone)
        await asyncio.to_thread(fleet.retire, gone)
        await asyncio.to_thread(fleet.stop_retired)
        controller.event(NORMAL, Reason.SPEC_APPLIED,
                         f"{path.name} applied (traffic {controller.status()['trafficSummary']})")
    except (SpecError, UserError) as err:
        controller.event(WARNING, Reason.APPLY_FAILED, f"{path.name} not applied: {err}")
