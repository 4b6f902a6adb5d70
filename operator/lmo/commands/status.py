"""`lmo status [NAME]`: versions, phases, traffic, replicas, rollout and last analysis.

The same table for a cluster resource (its `.status`) and a local `lmo up` (its
`/lmo/status`, which has the `LanguageModelStatus` shape plus a `local` block).

Every text that comes from the status (messages, reasons, Events, names) is escaped before
Rich prints it: Rich reads `[...]` as markup, and would drop `[v2]` from a message or stop
at a `[/path]` it cannot match.
Step numbers are shown 1-based, "step 2/4", as the rollout's messages and Events say them;
status.rollout.step itself stays the 0-based index into spec.rollout.steps.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmo import conditions as C
from lmo.api import Phase, Rollout, Strategy
from lmo.commands import vitals
from lmo.commands.target import add_target_arguments, get_lm, local_get, resolve
from lmo.decide.experiment import report_lines as experiment_lines
from lmo.decide.vocabulary import step_label


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("-o", "--output", choices=["table", "json"], default="table")
    parser.add_argument("--prometheus", help="Prometheus URL for the last minute's numbers "
                        "(default: spec.rollout.analysis.prometheusUrl)")


def run(args: argparse.Namespace) -> int:
    target = resolve(args)
    if target.local:
        status = local_get(target.url, "/lmo/status")
        name, task, where = status.get("name", "?"), status.get("task", "?"), "lmo up"
        rollout_spec = (status.get("local") or {}).get("rollout")
    else:
        obj = get_lm(target)
        status = dict(obj.get("status") or {})
        spec = obj.get("spec") or {}
        name, task = obj["metadata"]["name"], spec.get("task", "?")
        rollout_spec = spec.get("rollout")
        where = f"namespace {target.namespace}"
        status.setdefault("name", name)
        status.setdefault("task", task)
        url = args.prometheus or ((rollout_spec or {}).get("analysis") or {}).get("prometheusUrl")
        status["lastMinute"], note = vitals.cluster_last_minute(
            url, target.namespace, name, [v["name"] for v in spec.get("versions") or []])
        if note:
            status["lastMinuteNote"] = note
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    render(status, name, task, where, Console(), rollout_spec)
    return 0


def openai_base_url(endpoint: str) -> str:
    """What an OpenAI client's base_url is for status.endpoint (the same in both runtimes)."""
    return endpoint.rstrip("/") + "/v1"


def render(status: dict[str, Any], name: str, task: str, where: str, console: Console,
           rollout_spec: dict[str, Any] | None = None) -> None:
    """Print the status as a header line, a versions table, rollout and analysis lines.

    `rollout_spec` (spec.rollout, camelCase) gives the number of steps for "step N/M".
    """
    ready = _condition(status, C.READY)
    endpoint = status.get("endpoint") or "-"
    console.print(
        f"[bold]{escape(name)}[/bold]  "
        + escape(f"{task}  ({where})  endpoint {endpoint}"
                 + (f"  Ready={ready}" if ready
                    else f"  ready versions {status.get('readyVersions', '-')}"))
    )
    if status.get("endpoint"):
        console.print(escape(f"OpenAI base URL: {openai_base_url(status['endpoint'])}"))
    console.print(_versions_table(status))
    minute = status.get("lastMinute")
    if minute is None:
        minute = (status.get("local") or {}).get("lastMinute")
    if minute is not None:
        for line in vitals.lines(minute, [v["name"] for v in status.get("versions") or []]):
            console.print(escape(line))
        if status.get("lastMinuteNote"):
            console.print(escape(f"  (last minute: {status['lastMinuteNote']})"))
    _print_rollout(status, console, rollout_spec)
    for line in experiment_lines(status.get("experiment") or {}):
        console.print(escape(line))
    local = status.get("local") or {}
    if local.get("abTestHeader") or local.get("mirror"):
        m = local.get("mirror") or {}
        console.print(escape(
            "routing: "
            + (f"header {local['abTestHeader']} picks a version" if local.get("abTestHeader")
               else "")
            + (f"; mirror {m.get('percent')}% to {m.get('version')}" if m else "")
        ))
    for e in local.get("events") or []:
        console.print(escape(f"  {e['time']}  {e['type']:<7} {e['reason']}: {e['message']}"))


def _versions_table(status: dict[str, Any]) -> Table:
    """One row per version: phase, routed traffic, replicas, artifact, what it answered."""
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
        colour = {Phase.READY.value: "green", Phase.FAILED.value: "red"}.get(phase, "yellow")
        table.add_row(
            escape(v["name"]),
            f"[{colour}]{escape(phase)}[/{colour}]",
            f"{v.get('traffic', 0)}%",
            f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}",
            escape(str(art.get("precision") or "-")),
            "-" if art.get("score") is None else f"{art['score']:.4f}",
            "-" if not size else f"{size / 1e6:.1f} MB",
            escape("; ".join(x for x in (v.get("message") or "", extra) if x)),
        )
    return table


def _print_rollout(status: dict[str, Any], console: Console,
                   rollout_spec: dict[str, Any] | None) -> None:
    """The rollout line ("step N/M") and its last analysis with the reasons."""
    rollout = status.get("rollout") or {}
    total = _step_count(rollout_spec)
    # an Experiment has looks, not steps (its own lines follow)
    where = "" if status.get("experiment") else f"  {step_label(rollout.get('step', 0), total)}"
    if rollout.get("phase") or rollout.get("candidate"):
        console.print(escape(
            f"rollout: {rollout.get('phase', '-')}{where}"
            f"  candidate {rollout.get('candidate') or '-'}"
            f"  stable {rollout.get('stable') or '-'}"
            + (f"  {rollout['message']}" if rollout.get("message") else "")
        ))
    analysis = rollout.get("lastAnalysis")
    if analysis:
        m = analysis.get("measurements") or {}
        nums = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                         for k, v in m.items())
        step = analysis.get("step")
        console.print(
            f"last analysis: [bold]{escape(str(analysis.get('verdict', '?')))}[/bold] "
            + escape(f"({'-' if step is None or not where else step_label(step, total)}, "
                     f"{analysis.get('time', '-')}) {nums}")
        )
        for reason in analysis.get("reasons") or []:
            console.print(escape(f"  - {reason}"))


def _step_count(rollout_spec: dict[str, Any] | None) -> int | None:
    """How many steps "step N/M" counts: spec.rollout.steps (BlueGreen: its one check).

    None when the spec is not known (the line then says "step N").
    """
    if not rollout_spec:
        return None
    if rollout_spec.get("strategy") == Strategy.BLUE_GREEN.value:
        return 1
    return len(rollout_spec.get("steps") or Rollout().steps)


def _condition(status: dict[str, Any], type_: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None
