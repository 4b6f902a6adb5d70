"""Where a command goes: a local `lmo up` front door, or a LanguageModel on a cluster.

Rules, in order: `--url URL` (a front door or any KServe v2 endpoint); `--local` (the
`lmo up` running in `--work-dir`, an error if none); a NAME given -> the cluster; no NAME
and an `lmo up` running in the work dir -> local; otherwise an error saying both ways.
The cluster is reached with the official `kubernetes` client and the current kubeconfig
context (or the in-cluster service account).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import requests

from lmo.api import GROUP, PLURAL, VERSION
from lmo.errors import UserError
from lmo.upstate import DEFAULT_WORK_DIR, local_url

TIMEOUT = 30.0


def add_target_arguments(parser: argparse.ArgumentParser, name: bool = True) -> None:
    if name:
        parser.add_argument("name", nargs="?", help="LanguageModel name (cluster mode)")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    parser.add_argument("--local", action="store_true", help="talk to the running `lmo up`")
    parser.add_argument("--url", help="front door URL (implies local mode)")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="`lmo up` work dir")
    parser.add_argument("--context", help="kubeconfig context")


@dataclass
class Target:
    url: str | None = None  # local front door
    name: str | None = None  # cluster resource
    namespace: str | None = None
    context: str | None = None

    @property
    def local(self) -> bool:
        return self.url is not None


def resolve(args: argparse.Namespace) -> Target:
    if getattr(args, "url", None):
        return Target(url=args.url.rstrip("/"))
    running = local_url(args.work_dir)
    if args.local:
        if running is None:
            raise UserError(
                f"--local: no `lmo up` is running with work dir {args.work_dir} "
                f"(start one with `lmo up -f FILE`, or pass --url)"
            )
        return Target(url=running)
    name = getattr(args, "name", None)
    if name:
        return Target(name=name, namespace=args.namespace, context=args.context)
    if running is not None:
        return Target(url=running)
    raise UserError(
        "name a LanguageModel on the cluster (lmo status NAME -n NAMESPACE), or start "
        "`lmo up -f FILE` here (then --local, or --url URL)"
    )


# --------------------------------------------------------------------------- local


def local_get(url: str, path: str) -> dict[str, Any]:
    try:
        r = requests.get(url + path, timeout=TIMEOUT)
    except requests.RequestException as err:
        raise UserError(f"{url}: cannot reach the front door ({err.__class__.__name__}); "
                        f"is `lmo up` still running?") from None
    return _json(r, url + path)


def local_post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        r = requests.post(url + path, json=body, timeout=TIMEOUT)
    except requests.RequestException as err:
        raise UserError(f"{url}: cannot reach the front door ({err.__class__.__name__}); "
                        f"is `lmo up` still running?") from None
    return _json(r, url + path)


def _json(r: requests.Response, where: str) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        data = {"error": r.text[:300]}
    if r.status_code >= 400:
        raise UserError(f"{where}: {data.get('error', r.reason)} (HTTP {r.status_code})")
    return data


# --------------------------------------------------------------------------- cluster


def kubeconfig_path() -> str:
    """`$KUBECONFIG` (a `:`-separated list is merged) as it is now, else ~/.kube/config.

    Passed explicitly: the kubernetes package reads `$KUBECONFIG` once, when it is first
    imported, so a process that imported it before the variable was set would otherwise
    ignore it.
    """
    return os.environ.get("KUBECONFIG") or "~/.kube/config"


def _kube(context: str | None):
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    path = kubeconfig_path()
    files = [os.path.expanduser(p) for p in path.split(os.pathsep) if p]
    if any(os.path.isfile(f) for f in files):
        try:
            config.load_kube_config(config_file=path, context=context)
        except (ConfigException, TypeError, ValueError) as err:
            raise UserError(
                f"kubeconfig {path}: {err} (check KUBECONFIG and --context)"
            ) from None
        return client
    try:
        config.load_incluster_config()
    except ConfigException:
        raise UserError(
            "no Kubernetes cluster configured (no kubeconfig, not in a pod): set "
            "KUBECONFIG or --context, or use a local `lmo up` with --local"
        ) from None
    return client


def default_namespace(context: str | None) -> str:
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig_path())
        if context:
            active = next((c for c in contexts if c["name"] == context), active)
        return active["context"].get("namespace") or "default"
    except Exception:  # no kubeconfig: in-cluster or nothing; "default" is the answer
        return "default"


def get_lm(target: Target) -> dict[str, Any]:
    client = _kube(target.context)
    ns = target.namespace or default_namespace(target.context)
    target.namespace = ns
    api = client.CustomObjectsApi()
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, target.name)
    except client.ApiException as err:
        raise _api_error(err, target) from None


def patch_lm(target: Target, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON-patch the LanguageModel (ops usually start with a resourceVersion test)."""
    client = _kube(target.context)
    api = client.CustomObjectsApi()
    try:
        return api.patch_namespaced_custom_object(
            GROUP, VERSION, target.namespace, PLURAL, target.name, ops
        )
    except client.ApiException as err:
        raise _api_error(err, target) from None


def _api_error(err: Any, target: Target) -> UserError:
    where = f"languagemodel {target.namespace}/{target.name}"
    if err.status == 404:
        return UserError(f"{where} not found (check the name and -n NAMESPACE)")
    if err.status in (401, 403):
        return UserError(f"{where}: not allowed ({err.reason}); check your RBAC")
    if err.status in (409, 422):
        return UserError(f"{where} changed while updating it; run the command again")
    body = getattr(err, "body", "") or ""
    return UserError(f"{where}: API server said {err.status} {err.reason} {body[:200]}")
