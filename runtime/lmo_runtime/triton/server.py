"""Start and stop a real Triton Inference Server on a model repository.

`TritonServer` finds a `tritonserver` binary:

1. `LMO_TRITONSERVER` (path to the binary), else `tritonserver` on PATH (the Triton container,
   GPU machines): run as is; `backend_directory` is passed only when given.
2. Else the server inside the `nvidia-pytriton` wheel (Triton 2.51, Python backend only, runs
   on CPU). It needs (measured, see TRITON-CPU.md): a writable copy of
   `pytriton/tritonserver` with the Python 3.11 stub placed in `backends/python/` (this
   version looks nowhere else), `LD_LIBRARY_PATH=<site-packages>/nvidia_pytriton.libs`, and
   the venv's `bin` first on PATH (the stub finds numpy/onnxruntime/tokenizers only through
   the first `python3` on PATH). The copy is made once per wheel version under
   `$LMO_CACHE_DIR` (default `~/.cache/lmo`) and reused by later runs.

The server binds loopback only, on free ports unless given, loads the named models in
explicit model-control mode, and writes its log to a file whose tail is part of every error.
`stop()` sends SIGTERM, then SIGKILL to the whole process group after a timeout, so no
Python-backend stub outlives it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from types import TracebackType

from lmo_runtime.triton.config import CONFIG_FILE

PYTHON_STUB = "triton_python_backend_stub"


class TritonError(RuntimeError):
    """The server could not start, load a model or answer; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cache_dir() -> Path:
    return Path(os.environ.get("LMO_CACHE_DIR") or Path.home() / ".cache" / "lmo")


def _pytriton_root() -> tuple[Path, Path, str]:
    """(pytriton/tritonserver dir, nvidia_pytriton.libs dir, wheel version) of the wheel."""
    try:
        import pytriton  # noqa: PLC0415 - optional dependency, only needed without a binary
    except ImportError as exc:
        raise TritonError(
            "no `tritonserver` on PATH and the nvidia-pytriton wheel is not installed; "
            "install Triton (its container image) or `pip install nvidia-pytriton==0.7.0`"
        ) from exc
    package = Path(pytriton.__file__).parent
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs", metadata.version(
        "nvidia-pytriton"
    )


def prepare_pytriton_server() -> tuple[Path, dict[str, str]]:
    """A runnable copy of the wheel's server: (its root dir, environment additions).

    Copied once per wheel and Python version; concurrent callers wait on a file lock.
    """
    source, libs, version = _pytriton_root()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / py / PYTHON_STUB
    if not stub.exists():
        have = sorted((p.name for p in (source / "python_backend_stubs").iterdir() if p.is_dir()),
                      key=lambda v: tuple(int(x) for x in v.split(".") if x.isdigit()))
        raise TritonError(
            f"nvidia-pytriton {version} has no Python backend stub for Python {py} (it has "
            f"{', '.join(have) or 'none'}): its Triton server runs models in the Python that "
            "runs lmo. Run `lmo up` from a virtual environment of one of those Pythons, or put "
            "a `tritonserver` (the Triton container image) on PATH or in $LMO_TRITONSERVER"
        )
    root = cache_dir() / f"tritonserver-pytriton-{version}-py{py}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "backends" / "python" / PYTHON_STUB).exists():
            tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
            try:
                copy = tmp / "tritonserver"
                shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
                shutil.copy2(stub, copy / "backends" / "python" / PYTHON_STUB)
                (copy / "caches").mkdir(exist_ok=True)
                if root.exists():
                    shutil.rmtree(root)
                copy.rename(root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(
            p for p in (str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p
        ),
    }
    return root, env


def _venv_path() -> str:
    """PATH with this interpreter's bin dir first (the Python backend stub's `python3`)."""
    bin_dir = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
    return os.pathsep.join([bin_dir, *rest])


def list_models(model_repository: Path) -> list[str]:
    """Names of the model directories (with a config.pbtxt) in a repository, sorted."""
    return sorted(p.parent.name for p in Path(model_repository).glob(f"*/{CONFIG_FILE}"))


class TritonServer:
    """A real tritonserver process serving `model_repository` on loopback.

    Use as a context manager (`with TritonServer(repo) as server: ...`) or call `start()`
    (which waits until ready) and `stop()`. `models=None` loads every model directory in the
    repository. Ports 0 pick free ports. Addresses once started: `url` (HTTP base URL),
    `http_address` / `grpc_url` (`host:port`, what `tritonclient.http|grpc` expect) and
    `metrics_url` (Prometheus text at `/metrics`).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_repository: Path | str,
        models: list[str] | None = None,
        http_port: int = 0,
        grpc_port: int = 0,
        metrics_port: int = 0,
        *,
        log_path: Path | str | None = None,
        backend_directory: Path | str | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 120.0,
        exit_timeout_secs: int = 5,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = list(models) if models is not None else None
        self._ports = (http_port, grpc_port, metrics_port)
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._log_path = Path(log_path) if log_path else None
        self._own_log_dir: str | None = None
        self.backend_directory = Path(backend_directory) if backend_directory else None
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.exit_timeout_secs = exit_timeout_secs
        self.env = dict(env or {})  # added to the server's environment (its models see it)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def http_address(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._own_log_dir = tempfile.mkdtemp(prefix="lmo-triton-log-")
            self._log_path = Path(self._own_log_dir) / "tritonserver.log"
        return self._log_path

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log ("" before start / after a temp log is gone)."""
        if self._log_path is None:
            return ""
        try:
            text = self._log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ---------------------------------------------------------------------------
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment the server runs with."""
        env = dict(os.environ)
        env.update(self.env)
        env["PATH"] = _venv_path()
        binary = os.environ.get("LMO_TRITONSERVER") or shutil.which("tritonserver")
        backend_dir = self.backend_directory
        cache_args: list[str] = []
        if binary is None:
            root, extra_env = prepare_pytriton_server()
            env.update(extra_env)
            binary = str(root / "bin" / "tritonserver")
            backend_dir = backend_dir or root / "backends"
            cache_args = [f"--cache-directory={root / 'caches'}"]
        models = self.models if self.models is not None else list_models(self.model_repository)
        if not models:
            raise TritonError(
                f"no model to load: {self.model_repository} has no <model>/{CONFIG_FILE}"
            )
        args = [
            binary,
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            *(f"--load-model={m}" for m in models),
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            f"--exit-timeout-secs={self.exit_timeout_secs}",
            *cache_args,
            *([f"--backend-directory={backend_dir}"] if backend_dir else []),
            *self.extra_args,
        ]
        if cache_args:
            # No GPU pools on the CPU-only wheel: avoids CUDA allocation attempts at start.
            args += ["--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0"]
        return args, env

    def start(self) -> "TritonServer":
        """Start the server and wait until it and every model are ready."""
        if self.process is not None:
            raise TritonError("server already started")
        if not self.model_repository.is_dir():
            raise TritonError(f"model repository {self.model_repository} is not a directory")
        attempts = 3 if 0 in self._ports else 1
        for attempt in range(attempts):
            self.http_port, self.grpc_port, self.metrics_port = (
                p or free_port(self.host) for p in self._ports
            )
            args, env = self.command()
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
                args, stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
            try:
                self.wait_ready(self.start_timeout)
                return self
            except TritonError:
                port_clash = "already in use" in self.log_tail(200).lower()
                self.stop()
                if not port_clash or attempt == attempts - 1:
                    raise
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until /v2/health/ready and each model's ready endpoint answer 200."""
        deadline = time.monotonic() + timeout
        pending = ["/v2/health/ready"]
        if self.models:
            pending += [f"/v2/models/{m}/ready" for m in self.models]
        while pending:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise TritonError(
                    f"tritonserver exited (code {code}) before it was ready; log tail:\n"
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + pending[0], timeout=2) as r:
                    if r.status == 200:
                        pending.pop(0)
                        continue
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TritonError(
                    f"tritonserver not ready after {timeout:.0f}s ({pending[0]}); log tail:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL the process group after `timeout` s; idempotent."""
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers: stubs, a hung server
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log_dir is not None:  # a log the caller did not ask to keep
            shutil.rmtree(self._own_log_dir, ignore_errors=True)
            self._own_log_dir = None
            self._log_path = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
