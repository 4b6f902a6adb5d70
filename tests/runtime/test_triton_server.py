"""TritonServer: a real tritonserver (nvidia-pytriton wheel on CPU) started, queried, stopped."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from lmo_runtime.triton.server import TritonError, TritonServer
from tests.fixtures.triton import make_python_model

pytestmark = pytest.mark.slow


def _count(metrics: str, model: str) -> float:
    pattern = rf'^nv_inference_count\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
    return sum(float(m) for m in re.findall(pattern, metrics, re.M))


def _metrics(server: TritonServer) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        return r.read().decode()


def test_serves_http_grpc_and_metrics(tmp_path):
    make_python_model(tmp_path, "scale", factor=3.0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with TritonServer(tmp_path) as server:
        before = _count(_metrics(server), "scale")

        http = httpclient.InferenceServerClient(server.http_address)
        inp = httpclient.InferInput("X", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(http.infer("scale", [inp]).as_numpy("Y"), x * 3)
        http.close()

        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        ginp = grpcclient.InferInput("X", list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        np.testing.assert_array_equal(grpc.infer("scale", [ginp]).as_numpy("Y"), x * 3)
        grpc.close()

        assert _count(_metrics(server), "scale") == before + 4  # 2 requests x batch 2
        pid = server.process.pid
    # Stopped: the process and its whole group (Python-backend stubs) are gone.
    assert server.process is None
    left = subprocess.run(["pgrep", "-g", str(pid)], capture_output=True, text=True).stdout
    assert left.strip() == ""


def test_load_and_unload_models(tmp_path, triton_server_factory):
    make_python_model(tmp_path, "a", factor=2.0)
    make_python_model(tmp_path, "b", factor=5.0)
    server = triton_server_factory(tmp_path, ["a"])
    http = httpclient.InferenceServerClient(server.http_address)
    try:
        assert http.is_model_ready("a") and not http.is_model_ready("b")
        http.load_model("b")  # explicit model control: the repository API loads and unloads
        assert http.is_model_ready("b")
        http.unload_model("a")
        assert not http.is_model_ready("a")
    finally:
        http.close()


def test_broken_model_fails_with_log_tail(tmp_path):
    model_dir = make_python_model(tmp_path, "broken")
    (model_dir / "1" / "model.py").write_text("raise ImportError('no such thing: lmo-test')\n")
    with pytest.raises(TritonError, match="log tail") as info:
        TritonServer(tmp_path).start()
    assert "lmo-test" in str(info.value)


def test_empty_repository_is_refused(tmp_path):
    with pytest.raises(TritonError, match="no model to load"):
        TritonServer(tmp_path).start()


def test_a_tritonserver_on_path_is_preferred_as_is(tmp_path, monkeypatch):
    """GPU images ship tritonserver: run it without the wheel's backend dir or library path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tritonserver"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    make_python_model(tmp_path / "repo", "scale")
    monkeypatch.delenv("LMO_TRITONSERVER", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    args, env = TritonServer(tmp_path / "repo").command()
    assert args[0] == str(fake)
    assert "--load-model=scale" in args and "--model-control-mode=explicit" in args
    assert not any(a.startswith(("--backend-directory", "--cache-directory")) for a in args)
    assert "nvidia_pytriton.libs" not in env.get("LD_LIBRARY_PATH", "")
    args, _ = TritonServer(tmp_path / "repo", backend_directory="/opt/b").command()
    assert "--backend-directory=/opt/b" in args
    # a server that exits at once is reported with its exit code, not awaited forever
    with pytest.raises(TritonError, match=r"exited \(code 0\)"):
        TritonServer(tmp_path / "repo", start_timeout=10).start()


def test_a_taken_port_is_reported(tmp_path):
    import socket

    make_python_model(tmp_path, "scale")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TritonError, match="already in use"):
            TritonServer(tmp_path, http_port=port).start()
