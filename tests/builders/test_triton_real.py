"""The Deployment's tritonserver flags and probe paths, checked against a real Triton server.

The nvidia-pytriton wheel's tritonserver (2.51, CPU) runs with exactly the arguments
`build_deployment` gives the container; only what differs between a pod and this machine is
replaced (model repository path, ports, loopback addresses, where the wheel keeps its
backends). The probes and the scrape annotation are then requested as the kubelet and
Prometheus would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lmo.builders.triton import build_deployment
from lmo_runtime.triton.server import free_port, prepare_pytriton_server
from tests.fixtures.triton import make_python_model

from .conftest import OWNER, container, make_lm, make_plans

pytestmark = pytest.mark.slow

BROKEN_MODEL = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights missing")

    def execute(self, requests):
        return []
"""


def _deployment() -> dict:
    from lmo.settings import OperatorSettings

    settings = OperatorSettings()
    lm = make_lm()
    plan = make_plans(lm, settings)[0]
    return build_deployment(lm, OWNER, settings, plan, 1)


def _local_args(args: list[str], repo: Path, ports: dict[str, int], root: Path) -> list[str]:
    """The container's args with pod-only values swapped for this machine's."""
    swap = {
        "--model-repository": str(repo),
        "--http-port": str(ports["http"]),
        "--grpc-port": str(ports["grpc"]),
        "--metrics-port": str(ports["metrics"]),
        "--exit-timeout-secs": "1",
    }
    out = []
    for arg in args:
        flag, _, value = arg.partition("=")
        out.append(f"{flag}={swap[flag]}" if flag in swap else arg)
    assert all(any(a.startswith(f + "=") for a in args) for f in swap), "flag missing"
    return out + [
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--backend-directory={root / 'backends'}",
        f"--cache-directory={root / 'caches'}",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
    ]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


class _Pod:
    """tritonserver started with the Deployment's container args."""

    def __init__(self, dep: dict, repo: Path, log: Path):
        self.container = container(dep, "triton")
        self.ports = {p["name"]: free_port() for p in self.container["ports"]}
        root, env_extra = prepare_pytriton_server()
        env = dict(os.environ, **env_extra)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        binary = root / "bin" / self.container["command"][0]
        args = _local_args(self.container["args"], repo, self.ports, root)
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(binary), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        return f"http://127.0.0.1:{self.ports[get['port']]}{get['path']}"

    def wait_for(self, url: str, timeout: float = 90.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"tritonserver exited:\n{self.log.read_text()[-3000:]}"
            code = _status(url)
            if code is not None:
                return code
            time.sleep(0.2)
        raise AssertionError(f"{url} never answered:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()


def test_probes_and_metrics_on_a_real_server(tmp_path):
    dep = _deployment()
    repo = tmp_path / "models"
    make_python_model(repo, "scale")
    pod = _Pod(dep, repo, tmp_path / "triton.log")
    try:
        assert pod.wait_for(pod.probe_url("startupProbe")) == 200
        deadline = time.monotonic() + 60
        while _status(pod.probe_url("readinessProbe")) != 200:
            assert time.monotonic() < deadline, pod.log.read_text()[-3000:]
            time.sleep(0.2)
        assert _status(pod.probe_url("livenessProbe")) == 200
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        port = int(ann["prometheus.io/port"])
        assert port == next(
            p["containerPort"] for p in pod.container["ports"] if p["name"] == "metrics"
        )
        metrics_url = f"http://127.0.0.1:{pod.ports['metrics']}{ann['prometheus.io/path']}"
        # the metrics endpoint may open a moment after HTTP on a busy machine
        assert pod.wait_for(metrics_url) == 200
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            assert "nv_inference_count" in r.read().decode()
        # one request, then the p99 the rollout analysis gates on is exported
        infer = f"http://127.0.0.1:{pod.ports['http']}/v2/models/scale/infer"
        body = b'{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
        with urllib.request.urlopen(urllib.request.Request(infer, data=body), timeout=30) as r:
            assert r.status == 200
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            text = r.read().decode()
        assert 'nv_inference_request_summary_us{' in text and 'quantile="0.99"' in text, text[-2000:]
    finally:
        pod.stop()


def test_a_model_that_fails_to_load_keeps_the_pod_live_but_unready(tmp_path):
    """--exit-on-error=false + --strict-readiness=true: no crash loop, readiness says no."""
    dep = _deployment()
    repo = tmp_path / "models"
    make_python_model(repo, "scale")
    broken = make_python_model(repo, "broken")
    (broken / "1" / "model.py").write_text(BROKEN_MODEL)
    pod = _Pod(dep, repo, tmp_path / "triton.log")
    try:
        assert pod.wait_for(pod.probe_url("livenessProbe")) == 200
        ready = _status(pod.probe_url("readinessProbe"))
        assert ready is not None and ready != 200, ready
        assert pod.proc.poll() is None
        assert "weights missing" in pod.log.read_text()
    finally:
        pod.stop()
