"""The chart's operator container, run as a process: its command, args and env, as rendered.

`lmo operator` starts with exactly the command line and LMO_* environment the Deployment
would give it, against the KMock emulator (through a kubeconfig, as in a pod), and must
answer the probes' /healthz and serve /metrics on the ports the chart declares. This
catches a flag the CLI does not know, a setting it refuses, or a probe on the wrong port.
In namespaced mode Kopf lists namespaces, a cluster-scoped path kmock 0.8 answers with a
500; the operator retries and stays healthy, which is what is checked there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import kmock
import pytest
import yaml

from tests.chart.test_chart import CHART, helm
from tests.fixtures.kmock_fixture import LmoEmulator, declare_kinds

pytestmark = pytest.mark.asyncio(loop_scope="module")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "lmo", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "lmo"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status, await r.text()


async def wait_for(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            return await get(url)
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing answered {url} within {timeout}s")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["logFormat=text"], id="all-namespaces"),
        pytest.param(["logFormat=json", "watchNamespaces={default,team-a}"], id="namespaced-json"),
    ],
)
async def test_the_rendered_container_starts_a_healthy_operator(k8s_tools, tmp_path, values):
    health, metrics = free_port(), free_port()
    sets = [f"healthPort={health}", f"metrics.port={metrics}", *values]
    rendered = helm(
        k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system",
        *[arg for value in sets for arg in ("--set", value)],
    ).stdout
    (dep,) = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    probe_port = {p["name"]: p["containerPort"] for p in container["ports"]}[
        container["livenessProbe"]["httpGet"]["port"]
    ]
    assert probe_port == health

    command = [str(Path(sys.executable).with_name(container["command"][0])), *container["args"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMO_")}
    env.update({e["name"]: e["value"] for e in container["env"]})
    env["HOME"] = str(tmp_path)  # the chart's /tmp is the pod's emptyDir

    async with LmoEmulator() as emulator, kmock.Server(emulator):
        declare_kinds(emulator)
        env["KUBECONFIG"] = str(kubeconfig(tmp_path / "kubeconfig", str(emulator.url)))
        log = (tmp_path / "operator.log").open("w")
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            path = container["livenessProbe"]["httpGet"]["path"]
            status, _ = await wait_for(f"http://127.0.0.1:{health}{path}", proc)
            assert status == 200  # a standby answers at once (lmo.leader)
            deadline = time.monotonic() + 30
            while '"standby"' in (await wait_for(f"http://127.0.0.1:{health}{path}", proc))[1]:
                # the lone replica takes the Lease and Kopf serves the probe from then on
                assert time.monotonic() < deadline, "the lone replica never led"
                await asyncio.sleep(0.2)
            status, text = await wait_for(f"http://127.0.0.1:{metrics}/metrics", proc)
            assert status == 200 and "# TYPE" in text
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    output = (tmp_path / "operator.log").read_text()
    assert proc.returncode in (0, -signal.SIGTERM), output[-3000:]
    # LMO_LOG_FORMAT from the chart is honoured: one JSON object per line, or Kopf's text lines
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    if "logFormat=json" in values:
        assert all(isinstance(json.loads(line), dict) for line in lines), output[-3000:]
    else:
        assert all(line.startswith("[") for line in lines), output[-3000:]
