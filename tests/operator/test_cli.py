"""`lmo operator` as the chart runs it: its own process, a kubeconfig, JSON logs."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmo import logs
from lmo.cli import build_parser
from tests.fixtures.kmock_fixture import job_for, start_cluster

ROOT = Path(__file__).resolve().parents[2]


def test_arguments():
    parser = build_parser(load=False)
    sub = parser._subparsers._group_actions[0].choices["operator"]  # noqa: SLF001
    from lmo import operator_main

    operator_main.add_arguments(sub)
    args = parser.parse_args(["operator", "-n", "ml", "-n", "ml-*", "--peering", "lmo",
                              "--liveness", "http://0.0.0.0:8081/healthz", "--metrics-port", "9000"])
    assert args.namespace == ["ml", "ml-*"] and args.peering == "lmo" and args.metrics_port == 9000
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "-n", "ml", "--all-namespaces"])


def test_json_logs_carry_the_object(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("json")
        import kopf

        body = {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                "metadata": {"name": "chat", "namespace": "ml", "uid": "u1"}}
        logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
        logger.info("reconciled")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["message"] == "reconciled"
        assert record["object"]["name"] == "chat" and record["object"]["namespace"] == "ml"
        assert record["severity"] == "info"
        # work started by a resync timer or a child's event, not a Kopf handler
        logs.object_logger("ml", "chat", "u1", logging.getLogger("lmo.handlers")).warning(
            "reconcile failed, retrying in %ss", 15)
        record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
        assert record["message"] == "reconcile failed, retrying in 15s"
        assert record["object"] == {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
                                    "namespace": "ml", "name": "chat", "uid": "u1"}
        with pytest.raises(ValueError, match="LMO_LOG_FORMAT"):
            logs.configure("xml")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


@pytest.mark.asyncio(loop_scope="module")
async def test_operator_process_reconciles_through_a_kubeconfig(tmp_path):
    async with await start_cluster(operator=False) as (cluster, _):
        cfg = tmp_path / "kubeconfig"
        cfg.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: k\n"
            f"clusters: [{{name: k, cluster: {{server: '{str(cluster.kmock.url).rstrip('/')}'}}}}]\n"
            "users: [{name: k, user: {token: t}}]\n"
            "contexts: [{name: k, context: {cluster: k, user: k}}]\n"
        )
        env = dict(os.environ, KUBECONFIG=str(cfg), LMO_LOG_FORMAT="json", PYTHONPATH=str(ROOT),
                   OMP_WAIT_POLICY="PASSIVE")
        proc = subprocess.Popen(
            # cluster-wide, the chart's default (kmock 0.8 cannot parse GET /api/v1/namespaces,
            # which Kopf needs to serve a namespace list)
            [sys.executable, "-m", "lmo.cli", "operator", "--all-namespaces", "--metrics-port", "0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        try:
            body = {"task": "fill-mask",
                    "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/bert/"}}]}
            await cluster.apply_lm("cli", body, "default")
            job = job_for(body, "cli", "v1")
            try:
                await cluster.wait(lambda: job in cluster.names("batch/v1/jobs", "default"),
                                   timeout=30, what="the conversion Job")
                await cluster.wait(lambda: cluster.condition("cli", "Ready"), timeout=10, what="status")
            except AssertionError:
                proc.terminate()
                out, _ = await asyncio.to_thread(proc.communicate, None, 30)
                raise AssertionError(out.decode()[-3000:]) from None
        finally:
            if proc.poll() is None:
                proc.terminate()
            out, _ = await asyncio.to_thread(proc.communicate, None, 30)
        assert proc.returncode is not None
        lines = [json.loads(x) for x in out.decode().splitlines() if x.startswith("{")]
        assert any((r.get("object") or {}).get("name") == "cli" for r in lines), out.decode()[-2000:]
