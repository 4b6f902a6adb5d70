"""`lmo status [NAME]`: versions, phases, traffic, replicas, rollout and last analysis.

The same table for a cluster resource (its `.status`) and a local `lmo up` (its
`/lmo/status`, which has the `LanguageModelStatus` shape plus a `local` block).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from lmo.commands.target import add_target_arguments, get_lm, local_get, resolve


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")


def run(args: argparse.Namespace) -> int:
    target = resolve(args)
    if target.local:
        status = local_get(target.url, "/lmo/status")
        name, task, where = status.get("name", "?"), status.get("task", "?"), "lmo up"
    else:
        obj = get_lm(target)
        status = dict(obj.get("status") or {})
        spec = obj.get("spec") or {}
        name, task = obj["metadata"]["name"], spec.get("task", "?")
        where = f"namespace {target.namespace}"
        status.setdefault("name", name)
        status.setdefault("task", task)
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    render(status, name, task, where, Console())
    return 0


def render(status: dict[str, Any], name: str, task: str, where: str, console: Console) -> None:
    """Print the status as a header line, a versions table, rollout and analysis lines."""
    ready = _condition(status, "Ready")
    endpoint = status.get("endpoint") or "-"
    console.print(
        f"[bold]{name}[/bold]  {task}  ({where})  endpoint {endpoint}"
        + (f"  Ready={ready}" if ready else f"  ready versions {status.get('readyVersions', '-')}")
    )
    table = Table(show_edge=False, header_style="bold")
    for col in ("VERSION", "PHASE", "TRAFFIC", "REPLICAS", "PRECISION", "SCORE", "SIZE",
                "MESSAGE"):
        table.add_column(col, justify="right" if col in ("TRAFFIC", "SCORE", "SIZE") else "left")
    backends = (status.get("local") or {}).get("backends", {})
    for v in status.get("versions") or []:
        art = v.get("artifact") or {}
        size = art.get("sizeBytes")
        extra = ""
        if v["name"] in backends:
            b = backends[v["name"]]
            extra = f"answered {b.get('answered', 0)}"
            if b.get("mirrored"):
                extra += f", mirrored {b['mirrored']}"
            if b.get("errors"):
                extra += f", errors {b['errors']}"
        phase = v.get("phase", "?")
        colour = {"Ready": "green", "Failed": "red"}.get(phase, "yellow")
        table.add_row(
            v["name"],
            f"[{colour}]{phase}[/{colour}]",
            f"{v.get('traffic', 0)}%",
            f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}",
            str(art.get("precision") or "-"),
            "-" if art.get("score") is None else f"{art['score']:.4f}",
            "-" if not size else f"{size / 1e6:.1f} MB",
            "; ".join(x for x in (v.get("message") or "", extra) if x),
        )
    console.print(table)
    rollout = status.get("rollout") or {}
    if rollout.get("phase") or rollout.get("candidate"):
        console.print(
            f"rollout: {rollout.get('phase', '-')}  step {rollout.get('step', 0)}  "
            f"candidate {rollout.get('candidate') or '-'}  stable {rollout.get('stable') or '-'}"
            + (f"  {rollout['message']}" if rollout.get("message") else "")
        )
    analysis = rollout.get("lastAnalysis")
    if analysis:
        m = analysis.get("measurements") or {}
        nums = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                         for k, v in m.items())
        console.print(f"last analysis: [bold]{analysis.get('verdict', '?')}[/bold]"
                      f" (step {analysis.get('step', '-')}, {analysis.get('time', '-')}) {nums}")
        for reason in analysis.get("reasons") or []:
            console.print(f"  - {reason}")
    local = status.get("local") or {}
    if local.get("abTestHeader") or local.get("mirror"):
        m = local.get("mirror") or {}
        console.print(
            "routing: "
            + (f"header {local['abTestHeader']} picks a version" if local.get("abTestHeader")
               else "")
            + (f"; mirror {m.get('percent')}% to {m.get('version')}" if m else "")
        )
    for e in local.get("events") or []:
        console.print(f"  {e['time']}  {e['type']:<7} {e['reason']}: {e['message']}")


def _condition(status: dict[str, Any], type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None
