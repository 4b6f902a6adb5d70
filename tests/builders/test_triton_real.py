"""The Deployment's two containers, checked against a real Triton server and the real front.

The nvidia-pytriton wheel's tritonserver (2.51, CPU) runs with exactly the arguments
`build_deployment` gives the `triton` container, and `python3 -m lmo_runtime.front` with
those of the `front` container; only what differs between a pod and this machine is
replaced (model repository path, ports, where the wheel keeps its backends). The probes and
the scrape annotation are then requested as the kubelet and Prometheus would, and requests
as a client through the pod's Service would send them.
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
    """The Triton container's args with pod-only values swapped for this machine's."""
    swap = {
        "--model-repository": str(repo),
        "--http-port": str(ports["triton-http"]),
        "--grpc-port": str(ports["triton-grpc"]),
        "--metrics-port": str(ports["metrics"]),
        "--exit-timeout-secs": "1",
    }
    out = []
    for arg in args:
        flag, _, value = arg.partition("=")
        out.append(f"{flag}={swap[flag]}" if flag in swap else arg)
    assert all(any(a.startswith(f + "=") for a in args) for f in swap), "flag missing"
    return out + [
        "--metrics-address=127.0.0.1",
        f"--backend-directory={root / 'backends'}",
        f"--cache-directory={root / 'caches'}",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
    ]


def _front_args(args: list[str], repo: Path, ports: dict[str, int]) -> list[str]:
    """The front container's args with the pod's ports and paths swapped for this machine's."""
    swap = {"--triton": f"http://127.0.0.1:{ports['triton-http']}", "--repository": str(repo),
            "--port": str(ports["http"])}
    out = list(args)
    for flag, value in swap.items():
        out[out.index(flag) + 1] = value
    return out + ["--host", "127.0.0.1"]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


class _Pod:
    """tritonserver and the front, started with the Deployment's container args."""

    def __init__(self, dep: dict, repo: Path, log: Path):
        self.container = container(dep, "triton")
        self.front = container(dep, "front")
        assert "--http-address=127.0.0.1" in self.container["args"]  # loopback only
        self.ports = {name: free_port() for name in ("metrics", "http", "triton-http",
                                                     "triton-grpc")}
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
        assert self.front["command"][0] == "python3"
        with (log.parent / "front.log").open("wb") as out:
            self.front_proc = subprocess.Popen(
                [sys.executable, *self.front["command"][1:],
                 *_front_args(self.front["args"], repo, self.ports)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def probe_url(self, probe: str, name: str = "triton") -> str:
        get = (self.container if name == "triton" else self.front)[probe]["httpGet"]
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
        if self.front_proc.poll() is None:
            self.front_proc.terminate()
            self.front_proc.wait(20)
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


def _post(url: str, body: bytes) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def test_probes_metrics_and_the_front_on_a_real_server(tmp_path):
    dep = _deployment()
    repo = tmp_path / "models"
    make_python_model(repo, "text_generation")  # the public (entry) model's name
    make_python_model(repo, "internal")
    pod = _Pod(dep, repo, tmp_path / "triton.log")
    try:
        assert pod.wait_for(pod.probe_url("startupProbe")) == 200
        deadline = time.monotonic() + 60
        while _status(pod.probe_url("readinessProbe", "front")) != 200:
            assert time.monotonic() < deadline, pod.log.read_text()[-3000:]
            time.sleep(0.2)
        assert _status(pod.probe_url("livenessProbe")) == 200
        assert _status(pod.probe_url("livenessProbe", "front")) == 200
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        port = int(ann["prometheus.io/port"])
        assert port == next(
            p["containerPort"] for p in pod.container["ports"] if p["name"] == "metrics"
        )
        metrics_url = f"http://127.0.0.1:{pod.ports['metrics']}{ann['prometheus.io/path']}"
        assert pod.wait_for(metrics_url) == 200
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            assert "nv_inference_count" in r.read().decode()
        # one request through the front, then the p99 the rollout analysis gates on is exported
        body = b'{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
        front = f"http://127.0.0.1:{pod.ports['http']}"
        assert _post(f"{front}/v2/models/text_generation/infer", body) == 200
        with urllib.request.urlopen(metrics_url, timeout=30) as r:
            text = r.read().decode()
        assert 'nv_inference_request_summary_us{' in text and 'quantile="0.99"' in text, text[-2000:]
        # other models of the repository are Triton's business only
        assert _post(f"{front}/v2/models/internal/infer", body) == 404
        triton = f"http://127.0.0.1:{pod.ports['triton-http']}"
        assert _post(f"{triton}/v2/models/internal/infer", body) == 200  # on loopback
    finally:
        pod.stop()


def test_a_model_that_fails_to_load_keeps_the_pod_live_but_unready(tmp_path):
    """--exit-on-error=false + --strict-readiness=true: no crash loop, readiness says no."""
    dep = _deployment()
    repo = tmp_path / "models"
    make_python_model(repo, "text_generation")
    broken = make_python_model(repo, "broken")
    (broken / "1" / "model.py").write_text(BROKEN_MODEL)
    pod = _Pod(dep, repo, tmp_path / "triton.log")
    try:
        assert pod.wait_for(pod.probe_url("livenessProbe")) == 200
        assert pod.wait_for(pod.probe_url("livenessProbe", "front")) == 200
        ready = _status(pod.probe_url("readinessProbe", "front"))
        assert ready is not None and ready != 200, ready
        assert pod.proc.poll() is None
        assert "weights missing" in pod.log.read_text()
    finally:
        pod.stop()
