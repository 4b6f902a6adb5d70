"""`lmo logs NAME [--version V] [--local]`: the payload records of a LanguageModel.

Payload records are the JSON lines lmo's Triton models write when spec.logging.payloads
has `sink: stdout` (lmo_runtime.payloads); every other line of Triton's output is skipped.

* `--local`: from the Triton logs `lmo up` keeps, `<work-dir>/logs/<name>-<version>.log`
  (they stay after `lmo up` stops, so no running `lmo up` is needed).
* cluster: from the Triton containers of the version's pods (the kubernetes client, the
  current kubeconfig context), `--since` and `--tail` passed on to the API server.

Records are printed as JSON lines (one per request, ready for `jq`), oldest first, merged
across pods and versions by their `time`; `-o text` prints one short line each. An s3://
sink is read with the S3 tools (`aws s3 cp --recursive s3://bucket/prefix/NAME/ -`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from lmo import labels as L
from lmo.commands.target import Target, _api_error, _kube, default_namespace
from lmo.errors import UserError
from lmo.upstate import DEFAULT_WORK_DIR, read_state
from lmo_runtime.payloads import parse_line

TRITON_CONTAINER = "triton"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="LanguageModel name (with --local: default "
                        "the running `lmo up`'s)")
    parser.add_argument("--version", dest="model_version", metavar="V",
                        help="only this version")
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig's)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--local", action="store_true",
                        help="read the Triton logs of `lmo up` in --work-dir")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="`lmo up` work dir")
    parser.add_argument("--tail", type=int, default=None,
                        help="only the last N records (cluster: of each pod's last N lines)")
    parser.add_argument("--since", default=None,
                        help="cluster only: records of the last DURATION (e.g. 10m, 1h)")
    parser.add_argument("-o", "--output", choices=["json", "text"], default="json")


def run(args: argparse.Namespace) -> int:
    if args.tail is not None and args.tail < 1:
        raise UserError(f"--tail {args.tail}: give a positive number of records")
    if args.local:
        name = args.name or (read_state(args.work_dir) or {}).get("name")
        if not name:
            raise UserError("--local: name the LanguageModel (lmo logs NAME --local); no "
                            f"`lmo up` is running with work dir {args.work_dir}")
        records = local_records(Path(args.work_dir), name, args.model_version)
        where = f"{Path(args.work_dir) / 'logs'}"
    else:
        if not args.name:
            raise UserError("name a LanguageModel (lmo logs NAME -n NAMESPACE), or use "
                            "--local for `lmo up`")
        target = Target(name=args.name, namespace=args.namespace, context=args.context)
        records = cluster_records(target, args.model_version, tail=args.tail,
                                  since=_seconds(args.since))
        where = f"the Triton pods of {target.namespace}/{target.name}"
    if args.tail is not None:
        records = records[-args.tail:]
    if not records:
        print(f"lmo logs: no payload records from {where}"
              + (f" (version {args.model_version})" if args.model_version else "")
              + "; is spec.logging.payloads set with sink: stdout, and has it served "
              "requests since?", file=sys.stderr)
        return 0
    for r in records:
        print(format_record(r, args.output))
    return 0


def records_from_lines(lines: Iterable[str], name: str | None = None,
                       version: str | None = None) -> list[dict[str, Any]]:
    """The payload records among log lines (of `name` and `version` when given)."""
    out = []
    for line in lines:
        record = parse_line(line)
        if record is None:
            continue
        if name is not None and record.get("model") not in (name, ""):
            continue
        if version is not None and record.get("version") != version:
            continue
        out.append(record)
    return out


def sort_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: str(r.get("time", "")))


def local_records(work_dir: Path, name: str, version: str | None) -> list[dict[str, Any]]:
    """Records in the Triton logs `lmo up` wrote for `name` (`<name>-<version>.log`)."""
    logs = work_dir / "logs"
    files = sorted(logs.glob(f"{name}-{version}.log" if version else f"{name}-*.log"))
    if not files:
        raise UserError(
            f"--local: no Triton log of {name}"
            + (f" version {version}" if version else "")
            + f" in {logs} (is this the --work-dir `lmo up` used?)"
        )
    records = []
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            records += records_from_lines(f, name, version)
    return sort_records(records)


def cluster_records(target: Target, version: str | None, tail: int | None = None,
                    since: int | None = None) -> list[dict[str, Any]]:
    """Records in the Triton containers' logs of the LanguageModel's pods."""
    client = _kube(target.context)
    target.namespace = target.namespace or default_namespace(target.context)
    core = client.CoreV1Api()
    selector = ",".join(f"{k}={v}" for k, v in L.selector(target.name, version).items())
    try:
        pods = core.list_namespaced_pod(target.namespace, label_selector=selector).items
    except client.ApiException as err:
        raise _api_error(err, target) from None
    if not pods:
        raise UserError(
            f"no Triton pods of languagemodel {target.namespace}/{target.name}"
            + (f" version {version}" if version else "")
            + f" (label selector {selector})"
        )
    records = []
    for pod in pods:
        kwargs: dict[str, Any] = {"container": TRITON_CONTAINER}
        if tail:
            kwargs["tail_lines"] = tail
        if since:
            kwargs["since_seconds"] = since
        try:
            text = core.read_namespaced_pod_log(pod.metadata.name, target.namespace, **kwargs)
        except client.ApiException as err:
            if err.status == 400:  # the container has not started yet: no log
                continue
            raise _api_error(err, target) from None
        records += records_from_lines((text or "").splitlines(), target.name, version)
    return sort_records(records)


def format_record(record: dict[str, Any], output: str) -> str:
    if output == "json":
        return json.dumps(record, ensure_ascii=False)
    text = record.get("input")
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    result = (f"error: {record['error']}" if record.get("error")
              else json.dumps(record.get("output"), ensure_ascii=False))
    return (f"{record.get('time', '-')}  {record.get('version', '-')}  "
            f"{record.get('latencyMs', '-')} ms  {text[:120]!r} -> {result[:160]}")


def _seconds(duration: str | None) -> int | None:
    if not duration:
        return None
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.fullmatch(r"((\d+)(s|m|h|d))+", duration)
    if not parts:
        raise UserError(f"--since {duration!r}: use a duration such as 30s, 10m, 2h or 1d")
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(s|m|h|d)", duration))
