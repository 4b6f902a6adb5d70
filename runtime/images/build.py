"""Build lmo's images without Docker: `make images` (operator, converter, Triton for CPU).

Each image is three layers, written by kept tools:
  1. a Debian bookworm base made by `mmdebstrap` (python3 and the few shared libraries the
     wheels need; no apt, no docs, no device nodes) -- the same layer in every image;
  2. the Python dependencies, installed from PyPI with pip into a separate root (`--root`),
     so the image holds no pip, no compiler and no pip cache;
  3. lmo itself (its wheel, `--no-deps`): a code change rebuilds only this small layer.
`umoci` assembles the OCI image (`raw add-layer`, `config`); `skopeo` writes the OCI archive
(`oci-archive:`, what `skopeo copy` and `ctr images import` take) and pushes it (`--push`).

Every image runs as uid/gid 65532 with HOME=/tmp and needs nothing writable but /tmp (and
/dev/shm for Triton): byte code is compiled at build time, so a read-only root filesystem
only costs nothing.

Results are cached under $LMO_IMAGE_CACHE (default /var/cache/lmo/images) by content keys:
the base by its package list, the base + dependency layers (an OCI layout) by the image's
recipe and pyproject.toml, the archive by those and every file of operator/ and runtime/. A
build with nothing changed copies the archive; a code change adds one small layer to the
cached layout; a new machine builds from nothing.

The Triton image built here is `lmo-triton-cpu` (Triton 2.51 from the nvidia-pytriton wheel:
Python backend only, so its LanguageModels set `serving.backend: python`). The GPU Triton image
`lmo-triton` (NGC base with Triton's ONNX Runtime backend, onnxruntime-gpu; the default
`serving.image`) is the one image not built here: runtime/Dockerfile.triton, for users' CI
with Docker.

    python runtime/images/build.py [--out build/images] [--only NAME ...]
    python runtime/images/build.py --push REGISTRY/PREFIX [--dest-tls-verify=false]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYVER = "3.11"  # bookworm's python3; pyproject requires 3.11
SITE = f"usr/local/lib/python{PYVER}/dist-packages"  # where Debian's python3 looks
UID = "65532"

# The base: python3 (+ `python`, which the init container calls), CA certificates for S3 and
# registries, libgomp (torch / onnxruntime OpenMP), libstdc++ for the wheels, libpython3.11
# (Triton's Python backend stub links it: "libpython3.11.so.1.0 => not found" without).
BASE_PACKAGES = ["python3", "python-is-python3", "ca-certificates", "libgomp1", "libstdc++6",
                 "libpython3.11", "netbase", "tzdata"]
SUITE = "bookworm"
BASE_REVISION = 1
BASE_EXCLUDES = ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                 "/usr/share/locale/*", "/usr/share/lintian/*"]
COMMON_ENV = {
    "PYTHONUNBUFFERED": "1",
    "HOME": "/tmp",
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


@dataclass
class Image:
    name: str
    # pip requirements after the project (`{project}` is the built wheel)
    requirements: list[str]
    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    # paths (relative to the app root) removed after install: build-only files
    prune: list[str] = field(default_factory=list)


IMAGES = {
    # the Kopf controller: base dependencies only (conversion runs in Jobs)
    "operator": Image("operator", ["{project}"], ["lmo"], ["operator"]),
    # `lmo convert` and the s3:// pull of Triton's init container; torch CPU first, as the
    # Makefile's setup does (an unpinned resolve would pull a CUDA build)
    "converter": Image(
        "converter", ["torch==2.13.0", "{project}[runtime]"], ["lmo"], ["convert", "--help"],
        env={"LMO_CACHE_DIR": "/tmp/lmo-cache"},
        # headers and CMake files only build extensions (torch/bin holds torch_shm_manager,
        # which `import torch` needs)
        prune=[f"{SITE}/torch/include", f"{SITE}/torch/share/cmake"],
    ),
    # Triton 2.51 from the nvidia-pytriton wheel (Python backend, CPU), as `lmo up` runs it,
    # with what lmo's Python-backend models and the per-version front import: lmo_runtime,
    # numpy, tokenizers, onnxruntime, aiohttp, boto3 (payload sink), jinja2 (checkpoints'
    # chat templates)
    # `lmo-triton-cpu`: no ONNX Runtime backend in this Triton build, so LanguageModels served
    # by it set serving.backend: python; the default serving.image `lmo-triton` is the GPU
    # image of runtime/Dockerfile.triton (NGC base)
    "triton-cpu": Image(
        "triton-cpu",
        ["{project}", "nvidia-pytriton==0.7.0", "tokenizers>=0.20,<1", "onnxruntime>=1.19,<2",
         "jinja2>=3.1.6,<4"],
        ["tritonserver"],
        ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=*",
         "--exit-timeout-secs=5"],
        env={"LD_LIBRARY_PATH": f"/{SITE}/nvidia_pytriton.libs"},
        ports=["8000/tcp", "8001/tcp", "8002/tcp"],
        # the stubs of other Python versions and pytriton's own client-side code stay
        prune=[],
    ),
}


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def source_files() -> list[Path]:
    """The files that go into the package: tracked (and untracked, not ignored) under operator/,
    runtime/ plus pyproject.toml and README.md."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
         "pyproject.toml", "README.md", "operator", "runtime"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()
    return sorted(ROOT / p for p in out.split("\0") if p and (ROOT / p).is_file())


def digest(parts: list[bytes]) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def base_key() -> str:
    """The Debian layer's key: its recipe only (bump BASE_REVISION when build_base changes)."""
    return digest([json.dumps([SUITE, BASE_PACKAGES, BASE_EXCLUDES, BASE_REVISION]).encode()])


def deps_key(image: Image) -> str:
    """The dependency layer's key: the base, the recipe and lmo's requirements in
    pyproject.toml, not lmo's source: a code change rebuilds only the small last layer."""
    recipe = {k: v for k, v in image.__dict__.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # lmo's requirements, not its version: a release bump keeps the cached dependencies
    requirements = [project.get("dependencies"), project.get("optional-dependencies"),
                    project.get("requires-python")]
    return digest([base_key().encode(), json.dumps(recipe, sort_keys=True).encode(),
                   json.dumps(requirements, sort_keys=True).encode()])


def image_key(image: Image) -> str:
    parts = [deps_key(image).encode()]
    parts += [str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() for p in source_files()]
    return digest(parts)


def cache_root() -> Path:
    return Path(os.environ.get("LMO_IMAGE_CACHE", "/var/cache/lmo/images"))


def build_base(work: Path) -> Path:
    """The Debian layer (a plain tar), cached by its own key."""
    cached = cache_root() / f"base-{base_key()}.tar"
    if cached.exists():
        log(f"base: cached {cached}")
        return cached
    started = time.monotonic()
    tmp = work / "base.tar"
    cleanup = " ".join([
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/* "$1"/var/log/*',
        '"$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/info/*',
        '"$1"/usr/share/locale/* "$1"/etc/machine-id "$1"/tmp/*;',
        # nothing writable but /tmp (a volume in every pod); pip's EXTERNALLY-MANAGED marker
        # is pointless without pip
        f'rm -f "$1"/usr/lib/python{PYVER}/EXTERNALLY-MANAGED',
    ])
    cmd = ["mmdebstrap", "--variant=essential", "--mode=root", "--format=tar",
           "--include=" + ",".join(BASE_PACKAGES), "--skip=output/dev",
           f"--customize-hook={cleanup}"]
    cmd += [f"--dpkgopt=path-exclude={p}" for p in BASE_EXCLUDES]
    cmd += ["--dpkgopt=path-include=/usr/share/doc/*/copyright", SUITE, str(tmp)]
    run(cmd, stdout=subprocess.DEVNULL)
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(tmp, cached)
    log(f"base: built in {time.monotonic() - started:.0f} s, {cached.stat().st_size >> 20} MiB")
    return cached


def fix_shebangs(app: Path) -> None:
    """pip writes the build interpreter into console scripts; the image runs /usr/bin/python3."""
    bindir = app / "usr/local/bin"
    for script in bindir.iterdir() if bindir.exists() else []:
        if script.is_symlink() or not script.is_file():
            continue
        data = script.read_bytes()
        if data.startswith(b"#!") and b"python" in data.split(b"\n", 1)[0]:
            script.write_bytes(b"#!/usr/bin/python3\n" + data.split(b"\n", 1)[1])


def pip_install(root: Path, reqs: list[str], *extra: str) -> None:
    env = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run([sys.executable, "-m", "pip", "install", "-q", "--root", str(root), "--prefix",
         "/usr/local", "--ignore-installed", "--no-warn-script-location", *extra, *reqs], env=env)
    site = root / f"usr/local/lib/python{PYVER}/site-packages"
    if site.exists():  # upstream's scheme; Debian's python3 reads dist-packages
        (root / SITE).parent.mkdir(parents=True, exist_ok=True)
        site.rename(root / SITE)
    fix_shebangs(root)


OWN = ("lmo", "lmo_runtime")


def install_deps(image: Image, deps: Path, wheel: Path) -> None:
    """Everything the image needs but lmo itself (installed with it, then moved out)."""
    pip_install(deps, [r.replace("{project}", str(wheel)) for r in image.requirements])
    site = deps / SITE
    for own in (*OWN, *(p.name for p in site.glob("lmo-*.dist-info"))):
        shutil.rmtree(site / own, ignore_errors=True)
    (deps / "usr/local/bin/lmo").unlink(missing_ok=True)
    for rel in image.prune:
        shutil.rmtree(deps / rel, ignore_errors=True)
    for junk in site.glob("*/tests"):  # installed test suites (numpy, onnx, ...)
        if (junk.parent / "__init__.py").exists():
            shutil.rmtree(junk, ignore_errors=True)
    if image.name == "triton-cpu":
        # The wheel's server as a stock layout: /opt/tritonserver (its default backend
        # directory) with the Python 3.11 stub where this Triton version looks for it.
        server = site / "pytriton/tritonserver"
        stub = server / "python_backend_stubs" / PYVER / "triton_python_backend_stub"
        shutil.copy2(stub, server / "backends/python/triton_python_backend_stub")
        (deps / "opt").mkdir(exist_ok=True)
        (deps / "opt/tritonserver").symlink_to(f"/{SITE}/pytriton/tritonserver")
        (deps / "usr/local/bin/tritonserver").symlink_to("/opt/tritonserver/bin/tritonserver")


def install_lmo(app: Path, wheel: Path) -> None:
    """lmo's own packages and the `lmo` command: the last, small layer."""
    pip_install(app, [str(wheel)], "--no-deps")


def layer_tar(src: Path, out: Path) -> None:
    run(["tar", "--create", "--file", str(out), "--directory", str(src), "--numeric-owner",
         "--owner=0", "--group=0", "--sort=name", "."])


def deps_layout(image: Image, base: Callable[[], Path], wheel: Path, work: Path) -> Path:
    """An OCI layout holding base + dependency layers, cached by `deps_key` (its blobs are
    content-addressed and never change: later builds hard-link them)."""
    cached = cache_root() / f"layout-{image.name}-{deps_key(image)}"
    if (cached / "index.json").exists():
        log(f"{image.name}: dependency layers cached {cached}")
        return cached
    started = time.monotonic()
    deps = work / "deps"
    deps.mkdir(parents=True)
    install_deps(image, deps, wheel)
    deps_tar = work / "deps.tar"
    layer_tar(deps, deps_tar)
    shutil.rmtree(deps)
    layout = work / "layout"
    tag = f"{layout}:{image.name}"
    run(["umoci", "init", "--layout", str(layout)])
    run(["umoci", "new", "--image", tag])
    run(["umoci", "raw", "add-layer", "--image", tag, "--history.comment",
         f"debian {SUITE} (mmdebstrap)", str(base())])
    run(["umoci", "raw", "add-layer", "--image", tag, "--history.comment",
         "python dependencies (pip --root)", str(deps_tar)])
    deps_tar.unlink()
    for old in cache_root().glob(f"layout-{image.name}-*"):
        shutil.rmtree(old, ignore_errors=True)
    shutil.move(layout, cached)
    log(f"{image.name}: dependency layers built in {time.monotonic() - started:.0f} s")
    return cached


def assemble(image: Image, deps: Path, app_tar: Path, version: str, archive: Path,
             work: Path) -> None:
    layout = work / "layout"
    run(["cp", "-al", str(deps), str(layout)])  # hard links: the cached blobs stay as they are
    tag = f"{layout}:{image.name}"
    run(["umoci", "raw", "add-layer", "--image", tag, "--history.comment",
         f"lmo {version} (pip --root --no-deps)", str(app_tar)])
    env = dict(COMMON_ENV, **image.env)
    cfg = ["umoci", "config", "--image", tag, f"--config.user={UID}:{UID}",
           "--config.workingdir=/tmp", "--architecture=amd64", "--os=linux",
           "--clear=config.entrypoint", "--clear=config.cmd"]
    cfg += [f"--config.env={k}={v}" for k, v in env.items()]
    cfg += [f"--config.entrypoint={a}" for a in image.entrypoint]
    cfg += [f"--config.cmd={a}" for a in image.cmd]
    cfg += [f"--config.exposedports={p}" for p in image.ports]
    cfg += [f"--config.label=org.opencontainers.image.version={version}",
            "--config.label=org.opencontainers.image.source=https://github.com/lmo-dev/lmo"]
    run(cfg)
    run(["umoci", "gc", "--layout", str(layout)])
    ref = f"{image_ref(image.name, version)}"
    tmp = archive.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    run(["skopeo", "copy", "--quiet", f"oci:{tag}", f"oci-archive:{tmp}:{ref}"])
    tmp.rename(archive)


def image_ref(name: str, version: str, registry: str = "ghcr.io/lmo-dev") -> str:
    return f"{registry}/lmo-{name}:{version}"


def build(names: list[str], out: Path) -> dict[str, dict]:
    version = project_version()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lmo-images-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        # keys before the wheel: a source edited during the build must not be cached under
        # the new key with the old code inside
        keys = {name: image_key(IMAGES[name]) for name in names}
        wheel_dir = work / "wheel"
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
             "-w", str(wheel_dir), str(ROOT)])
        wheel = next(wheel_dir.glob("lmo-*.whl"))
        for name in names:
            image = IMAGES[name]
            key = keys[name]
            cached = cache_root() / f"lmo-{name}-{version}-{key}.tar"
            archive = out / f"lmo-{name}.tar"
            started = time.monotonic()
            if cached.exists():
                log(f"{name}: cached {cached}")
                shutil.copyfile(cached, archive)
                report[name] = {"cached": True}
                continue
            iwork = work / name
            (iwork / "deps-work").mkdir(parents=True)
            deps = deps_layout(image, lambda: build_base(work), wheel, iwork / "deps-work")
            app = iwork / "app"
            app.mkdir()
            install_lmo(app, wheel)
            app_tar = iwork / "app.tar"
            layer_tar(app, app_tar)
            shutil.rmtree(app)
            assemble(image, deps, app_tar, version, archive, iwork)
            shutil.rmtree(iwork)
            cached.parent.mkdir(parents=True, exist_ok=True)
            for old in cached.parent.glob(f"lmo-{name}-*.tar"):
                old.unlink()
            shutil.copyfile(archive, cached)
            seconds = time.monotonic() - started
            report[name] = {"cached": False, "seconds": round(seconds),
                            "archive_mib": archive.stat().st_size >> 20}
            log(f"{name}: built in {seconds:.0f} s, archive {archive.stat().st_size >> 20} MiB")
    return report


def push(names: list[str], out: Path, registry: str, tls_verify: bool) -> None:
    version = project_version()
    for name in names:
        run(["skopeo", "copy", "--quiet", f"--dest-tls-verify={str(tls_verify).lower()}",
             f"oci-archive:{out / f'lmo-{name}.tar'}",
             f"docker://{image_ref(name, version, registry.rstrip('/'))}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build/images")
    parser.add_argument("--only", nargs="*", choices=sorted(IMAGES), default=sorted(IMAGES))
    parser.add_argument("--push", metavar="REGISTRY/PREFIX",
                        help="push the built archives (after building them) with skopeo")
    parser.add_argument("--dest-tls-verify", default="true", choices=["true", "false"])
    args = parser.parse_args(argv)
    missing = [t for t in ("mmdebstrap", "umoci", "skopeo") if shutil.which(t) is None]
    if missing:
        parser.error(f"missing tools {missing}: apt-get install mmdebstrap umoci skopeo")
    report = build(args.only, args.out)
    print(json.dumps(report))
    if args.push:
        push(args.only, args.out, args.push, args.dest_tls_verify == "true")
    return 0


if __name__ == "__main__":
    sys.exit(main())
