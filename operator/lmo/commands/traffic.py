"""`lmo promote V`, `lmo rollback`, `lmo set-traffic v1=90 v2=10`.

On a cluster they patch `spec.versions[].traffic` of the LanguageModel (a merge patch
carrying the resourceVersion read, so a concurrent edit makes the API server refuse it
rather than be overwritten); locally they call the front door's `POST /lmo/traffic`, which
changes the running spec the same way (until the file is edited again).

The weights of an automated rollout (Canary, BlueGreen) are decided by the rollout, not by
the traffic fields, so these commands also set `spec.rollout.strategy: Manual`: a person
taking over the traffic stops the automation, and says so.

Error messages do not repeat the command's name: the CLI prints them as
`lmo set-traffic: error: <message>`.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from lmo.api import RolloutPhase
from lmo.commands.target import (
    add_target_arguments,
    get_lm,
    local_get,
    local_post,
    patch_lm,
    resolve,
)
from lmo.errors import UserError
from lmo.weights import MANUAL_NOTE, hands_over, parse_assignments, summary, traffic_change


def add_promote_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("version", help="version that gets 100%% of the traffic")
    add_target_arguments(parser, name=False)
    parser.add_argument("name", nargs="?", help="LanguageModel name (cluster mode)")


def add_rollback_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)


def add_set_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "lmo set-traffic [NAME] VERSION=PERCENT [VERSION=PERCENT ...] [options]"
    parser.add_argument("weights", nargs="+", metavar="VERSION=PERCENT",
                        help="e.g. `chat v1=90 v2=10` on a cluster, `v1=90 v2=10` locally "
                        "(versions not named get 0)")
    add_target_arguments(parser, name=False)


def run_promote(args: argparse.Namespace) -> int:
    return _apply(args, lambda versions, status: _all_to(args.version, versions), "promote")


def run_rollback(args: argparse.Namespace) -> int:
    return _apply(args, lambda versions, status: _all_to(rollback_version(versions, status),
                                                          versions), "rollback")


def run_set_traffic(args: argparse.Namespace) -> int:
    args.name = None
    if args.weights and "=" not in args.weights[0]:
        args.name, args.weights = args.weights[0], args.weights[1:]
    if not args.weights:
        raise UserError("give the weights, e.g. v1=90 v2=10")
    return _apply(args, lambda versions, status: parse_assignments(args.weights, versions),
                  "set-traffic")


def _all_to(version: str, versions: list[str]) -> dict[str, int]:
    if version not in versions:
        raise UserError(f"version {version!r} is not one of {', '.join(versions)}")
    return {v: 100 if v == version else 0 for v in versions}


# How a Succeeded rollout named the version it replaced before status.rollout.previous
# existed (lmo.rollout, `promote`): "<new> serves all traffic (previous: <old>)".
_PREVIOUS = re.compile(r"\(previous: ([^()\s]+)\)")


def rollback_version(versions: list[str], status: dict[str, Any]) -> str:
    """The version `lmo rollback` sends all traffic to.

    While a rollout runs (or after it rolled back), that is `status.rollout.stable`: the
    version serving before the candidate. After a Succeeded rollout the candidate *is* the
    stable, so going back means the version that was stable before it
    (`status.rollout.previous`; the message of rollouts recorded before that field); when
    that is missing (or the version was removed from spec.versions) nothing is guessed and
    the command asks for `lmo promote VERSION`.
    Without a rollout status: the first listed version.
    """
    rollout = status.get("rollout") or {}
    stable = rollout.get("stable")
    if rollout.get("phase") != RolloutPhase.SUCCEEDED.value:
        return stable if stable in versions else versions[0]
    m = _PREVIOUS.search(rollout.get("message") or "")
    previous = rollout.get("previous") or (m.group(1) if m else None)
    if previous in versions:
        return previous
    why = (f"the version it replaced, {previous}, is no longer in spec.versions" if previous
           else "status.rollout does not record which version served before it")
    raise UserError(
        f"the rollout to {stable or 'the candidate'} succeeded and {why}; send all "
        f"traffic to the version you want with `lmo promote VERSION` (versions: "
        f"{', '.join(versions)})"
    )


def _apply(args: argparse.Namespace, weights_for, what: str) -> int:
    target = resolve(args)
    if target.local:
        status = local_get(target.url, "/lmo/status")
        versions = [v["name"] for v in status.get("versions", [])]
        weights = weights_for(versions, status)
        new = local_post(target.url, "/lmo/traffic", {"weights": weights})
        print(f"{what}: {status.get('name')} now routes {new.get('trafficSummary')} "
              f"(local, until {status.get('name')}'s file is edited)")
        return 0
    obj = get_lm(target)
    versions = [v["name"] for v in obj["spec"]["versions"]]
    weights = weights_for(versions, obj.get("status") or {})
    patch = traffic_patch(obj, weights)
    patch_lm(target, patch)
    note = f" ({MANUAL_NOTE})" if hands_over((obj["spec"].get("rollout") or {}).get("strategy")) else ""
    print(f"{what}: languagemodel {target.namespace}/{target.name} traffic "
          f"{summary(weights)}{note}")
    return 0


def traffic_patch(obj: dict[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    """The merge patch that sets every version's traffic (`lmo.weights.traffic_change`),
    carrying the resourceVersion read so a concurrent edit is refused, not overwritten."""
    patch: dict[str, Any] = {"spec": traffic_change(obj["spec"], weights)}
    version = obj["metadata"].get("resourceVersion")
    if version is not None:
        patch["metadata"] = {"resourceVersion": version}
    return patch
