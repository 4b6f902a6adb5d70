"""From the spec's versions to converted artifacts on this machine.

Locally a checkpoint may be `file:///abs/path` or `file://relative/path`; a relative path
is resolved against the folder of the YAML file, so examples work from any directory.
The Triton server decides two conversion settings (they are part of the content key, so a
different server never reuses a wrong artifact):

* backend: the `tritonserver` inside the nvidia-pytriton wheel has no onnxruntime
  backend, so models are served by the Python backend with onnxruntime inside it. A
  `tritonserver` on PATH that has `backends/onnxruntime` keeps the spec's backend.
* gpus: GPU instance groups only when that real server is present and a GPU is visible.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmo.api import LanguageModelSpec, VersionSpec
from lmo.builders import conversion_request
from lmo.errors import UserError
from lmo_runtime.manifest import MANIFEST_FILE, REPOSITORY_DIR, ConversionRequest, Manifest


@dataclass(frozen=True)
class ServerFlavour:
    """What the Triton server on this machine can do."""

    binary: str | None  # a `tritonserver` on PATH, None -> the nvidia-pytriton one
    onnxruntime_backend: bool
    gpu: bool

    def describe(self) -> str:
        where = self.binary or "nvidia-pytriton wheel"
        backend = "onnxruntime backend" if self.onnxruntime_backend else "python backend"
        return f"tritonserver from {where} ({backend}, {'GPU' if self.gpu else 'CPU'})"


def server_flavour() -> ServerFlavour:
    """Inspect the Triton server `lmo up` will start (see module docstring)."""
    binary = os.environ.get("LMO_TRITONSERVER") or shutil.which("tritonserver")
    if binary is None:
        return ServerFlavour(None, False, False)
    root = Path(binary).resolve().parent.parent
    ort = any(
        (d / "onnxruntime").is_dir()
        for d in (root / "backends", Path("/opt/tritonserver/backends"))
    )
    gpu = shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()
    return ServerFlavour(binary, ort, gpu)


def resolve_checkpoint(uri: str, base_dir: Path) -> str:
    """`file://rel/path` -> `file:///<base_dir>/rel/path`; other schemes unchanged."""
    if not uri.startswith("file://"):
        return uri
    rest = uri[len("file://"):]
    path = Path(rest) if rest.startswith("/") else (base_dir / rest)
    path = path.resolve()
    if not path.exists():
        raise UserError(
            f"checkpoint.uri {uri!r}: {path} does not exist (relative file:// paths are "
            f"resolved against the YAML file's folder; run `python examples/make_checkpoints.py` "
            f"to create the example checkpoints)"
        )
    return f"file://{path}"


def local_request(
    spec: LanguageModelSpec, version: VersionSpec, base_dir: Path, flavour: ServerFlavour
) -> ConversionRequest:
    """The conversion request for one version, adapted to this machine's Triton server.

    The same request the operator builds (`lmo.builders.conversion_request`), with the
    checkpoint path resolved and backend/gpus set for the local server.
    """
    request = conversion_request(spec, version)
    update = {
        "checkpoint_uri": resolve_checkpoint(version.checkpoint.uri, base_dir),
        "backend": spec.serving.backend if flavour.onnxruntime_backend else "python",
        "gpus": request.gpus if flavour.gpu else 0,
    }
    if not (flavour.gpu and flavour.onnxruntime_backend):
        update["accelerator"] = None  # TensorRT runs in the ONNX Runtime backend, on a GPU
    ev = request.evaluation
    if ev is not None and ev.uri.startswith("file://"):
        # relative like the checkpoint; a missing file is the converter's error to report
        rest = ev.uri[len("file://"):]
        path = Path(rest) if rest.startswith("/") else base_dir / rest
        update["evaluation"] = ev.model_copy(update={"uri": f"file://{path.resolve()}"})
    return request.model_copy(update=update)


@dataclass(frozen=True)
class Artifact:
    """A converted, accepted version ready to serve."""

    version: str
    directory: Path
    manifest: Manifest
    # The cluster's content key for the version spec this artifact was built from
    # (`lmo.builders.conversion_request(...).key()`): what `lmo.rollout` compares. The local
    # key differs (resolved path, backend), so it cannot stand in for it.
    spec_key: str = ""

    @property
    def repository(self) -> Path:
        return self.directory / REPOSITORY_DIR


def convert_version(
    name: str, request: ConversionRequest, work_dir: Path, cache_dir: Path,
    progress: bool = True,
) -> Artifact:
    """Convert (or reuse) one version's artifact under `<work_dir>/artifacts/<key>/`.

    `cache_dir` is the converter's content cache: a request converted before (in any work
    dir sharing it) is copied from there without loading torch.
    """
    from lmo_runtime.convert import ConversionError, convert

    out = work_dir / "artifacts" / request.key()
    manifest_path = out / MANIFEST_FILE
    if manifest_path.exists():
        manifest = Manifest.model_validate_json(manifest_path.read_text())
        if manifest.accepted and manifest.key == request.key():
            return Artifact(name, out, manifest)
    try:
        manifest = convert(request, out, cache_dir=cache_dir, progress=progress)
    except ConversionError as err:
        raise UserError(f"version {name}: conversion refused: {err}") from None
    if not manifest.accepted:
        raise UserError(f"version {name}: conversion refused: {manifest.reason}")
    return Artifact(name, out, manifest)


def default_threads() -> None:
    """Keep PyTorch and ONNX Runtime polite on small shared machines."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
