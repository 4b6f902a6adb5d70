"""Fixtures for `lmo up` tests: tiny real checkpoints and `lmo up` run as a subprocess.

Every `lmo up` here listens on free ports (`--port 0`; the URL is read from its state
file), shares one conversion cache (`--cache-dir`), and is stopped with SIGINT by the
fixture, which also checks that every process it started is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from examples.make_checkpoints import make_tiny_bert_classifier

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def serving_app(app: Any) -> AsyncIterator[int]:
    """An aiohttp application (a stand-in Triton or gateway) on a free loopback port."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc, no extra dependency)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class LmoUp:
    """`lmo up -f FILE` as a subprocess on free ports."""

    def __init__(self, file: Path, work_dir: Path, cache_dir: Path, *extra: str):
        self.file, self.work_dir, self.cache_dir, self.extra = file, work_dir, cache_dir, extra
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.log = work_dir / "lmo-up.out"

    def start(self, timeout: float = 240.0) -> "LmoUp":
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmo.cli", "up", "-f", str(self.file), "--port", "0",
             "--work-dir", str(self.work_dir), "--cache-dir", str(self.cache_dir), "--quiet",
             *self.extra],
            stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        state = self.work_dir / "up.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"lmo up exited {self.proc.returncode}:\n{self.output()}")
            if state.exists():
                self.url = json.loads(state.read_text())["url"]
                try:
                    with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"lmo up not ready in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def status(self) -> dict:
        with urllib.request.urlopen(self.url + "/lmo/status", timeout=10) as r:
            return json.loads(r.read())

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Signal lmo up, wait, and make sure nothing it started survives."""
        assert self.proc is not None
        kids = descendants(self.proc.pid)
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            raise AssertionError(f"lmo up did not stop on {sig}:\n{self.output()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if alive(k)]
        for k in left:
            os.kill(k, signal.SIGKILL)
        assert not left, f"processes left behind by lmo up: {left}"
        return rc


@pytest.fixture(scope="session")
def sentiment_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Two tiny trained BERT classifiers (negative/positive), the examples' recipe."""
    root = tmp_path_factory.mktemp("local-ckpt")
    return {
        "v1": make_tiny_bert_classifier(root / "sentiment-v1", seed=0, steps=40),
        "v2": make_tiny_bert_classifier(root / "sentiment-v2", seed=1, steps=40),
    }


@pytest.fixture(scope="session")
def convert_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("local-cache")


def write_lm(path: Path, name: str, versions: list[dict], **spec) -> Path:
    """Write a LanguageModel YAML whose checkpoints are relative file:// URIs."""
    doc = {
        "apiVersion": "lmo.dev/v1alpha1",
        "kind": "LanguageModel",
        "metadata": {"name": name},
        "spec": {"task": "text-classification", "versions": versions,
                 "serving": {"batching": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 200}},
                 **spec},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def rel(path: Path, base: Path) -> str:
    return "file://" + os.path.relpath(path, base)


@pytest.fixture(scope="package")
def ab_up(tmp_path_factory, sentiment_checkpoints, convert_cache):
    """Two versions 50/50, the A/B header and a 20% mirror to v2: one `lmo up` for the
    tests/local package, stopped when it is done (not kept through other areas' tests)."""
    d = tmp_path_factory.mktemp("ab")
    file = write_lm(
        d / "ab.yaml", "sentiment-ab",
        [{"name": n, "checkpoint": {"uri": rel(p, d)}, "traffic": 50}
         for n, p in sentiment_checkpoints.items()],
        routing={"abTest": {"header": "x-lmo-version"}, "mirror": {"version": "v2", "percent": 20}},
    )
    up = LmoUp(file, d / "work", convert_cache).start()
    yield up
    up.stop()
