"""Payload logging inside lmo's Triton Python models: sampled, redacted, bounded.

A model calls `PayloadLogger.sampled()` per request and, for a sampled one,
`PayloadLogger.log(...)`; the record (one JSON object, see `record()`) is redacted at once
and put on a bounded queue. A background thread writes the queue to the sink:

* `stdout`: one JSON line per record on the Triton process's stdout (the container log on
  the cluster, `<work-dir>/logs/<lm>-<version>.log` under `lmo up`); `lmo logs` reads them.
* `s3://bucket/prefix`: batches of records as JSON-lines objects
  `<prefix>/<lm>/<version>/<UTC date>/<UTC time>-<random>.jsonl` (boto3; credentials, region
  and AWS_ENDPOINT_URL from the environment).

Bounded: `log()` never blocks and never raises. A full queue (a slow sink) drops the record;
a sink error drops the batch; both count through `on_drop(n, reason)` (the models export it
as `lmo_payloads_dropped_total{reason=queue_full|sink_error}`) and a sink error is reported
on stderr at most once a minute, without any payload in it.

The settings come from the environment the operator (Deployment env) and `lmo up` (the
tritonserver process) give Triton, so changing them never changes the artifact:
`LMO_PAYLOADS` (the JSON of spec.logging.payloads), `LMO_NAME`, `LMO_VERSION`.

This file is copied into every model repository next to model.py (as `lmo_payloads.py`,
see `ship()`): it needs only the standard library (boto3 for an s3:// sink).
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

ENV_PAYLOADS = "LMO_PAYLOADS"
ENV_NAME = "LMO_NAME"
ENV_VERSION = "LMO_VERSION"
MARKER = "lmo_payload"  # key every payload line carries (value 1): what `lmo logs` filters on
REDACTED = "[REDACTED]"
QUEUE_SIZE = 1000
S3_BATCH = 200  # records per s3 object at most
S3_FLUSH_SECONDS = 5.0  # a partial batch is written after this long
TICK_SECONDS = 0.1  # how often the writer thread takes what is queued
MAX_TEXT_CHARS = 4096  # longer input/output text is cut (after redaction)
SHIPPED_NAME = "lmo_payloads.py"


@dataclass(frozen=True)
class PayloadConfig:
    """spec.logging.payloads, as the model reads it from LMO_PAYLOADS."""

    sample_rate: float = 0.0
    redact: tuple[str, ...] = ()
    sink: str = "stdout"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PayloadConfig | None:
        """The configuration in `env` (default os.environ); None when payload logging is off."""
        raw = (os.environ if env is None else env).get(ENV_PAYLOADS, "")
        if not raw:
            return None
        data = json.loads(raw)
        return cls(
            sample_rate=float(data.get("sampleRate", 0.0)),
            redact=tuple(data.get("redact") or ()),
            sink=str(data.get("sink") or "stdout"),
        )


class Redactor:
    """Replaces every match of any of the patterns by [REDACTED]."""

    def __init__(self, patterns: tuple[str, ...] | list[str]):
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(REDACTED, text)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StdoutSink:
    """JSON lines on a stream (default the process's stdout), flushed per batch."""

    def __init__(self, stream: Any = None):
        self.stream = stream

    def write(self, records: list[dict]) -> None:
        stream = self.stream or sys.stdout
        stream.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        stream.flush()


class S3Sink:
    """One JSON-lines object per batch under `s3://bucket/prefix/<lm>/<version>/<date>/`."""

    def __init__(self, uri: str, name: str, version: str,
                 client_factory: Callable[[], Any] | None = None):
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        self.bucket = bucket
        self.prefix = "/".join(p for p in (prefix.strip("/"), name, version) if p)
        self._factory = client_factory or _boto3_client
        self._client = None

    def write(self, records: list[dict]) -> None:
        if self._client is None:
            self._client = self._factory()
        stamp = datetime.now(timezone.utc)
        key = (f"{self.prefix}/{stamp:%Y-%m-%d}/{stamp:%H%M%S.%f}-{uuid.uuid4().hex[:8]}"
               ".jsonl")
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=body.encode("utf-8"),
                                ContentType="application/x-ndjson")


def _boto3_client():
    import boto3
    from botocore.config import Config

    # Few, short retries: the writer thread must come back to drain its queue.
    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2})
    return boto3.session.Session().client(
        "s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config
    )


def make_sink(config: PayloadConfig, name: str, version: str) -> StdoutSink | S3Sink:
    if config.sink.startswith("s3://"):
        return S3Sink(config.sink, name, version)
    return StdoutSink()


@dataclass
class PayloadLogger:
    """Samples, redacts and queues payload records; a daemon thread writes them."""

    config: PayloadConfig
    name: str
    version: str
    task: str
    sink: Any = None
    on_drop: Callable[[int, str], None] = lambda n, reason: None
    on_written: Callable[[int], None] = lambda n: None
    queue_size: int = QUEUE_SIZE
    batch: int = 0  # records per sink write at most; 0: 64 for stdout, S3_BATCH for s3
    flush_seconds: float = S3_FLUSH_SECONDS
    rng: Callable[[], float] = random.random
    _queue: queue.Queue = field(init=False)
    _thread: threading.Thread | None = field(init=False, default=None)
    _last_error: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.redactor = Redactor(self.config.redact)
        if self.sink is None:
            self.sink = make_sink(self.config, self.name, self.version)
        if not self.batch:
            self.batch = S3_BATCH if isinstance(self.sink, S3Sink) else 64
            if isinstance(self.sink, StdoutSink):
                self.flush_seconds = 0.0
        self._queue = queue.Queue(maxsize=self.queue_size)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmo-payloads", daemon=True)
        self._thread.start()

    @classmethod
    def from_env(cls, task: str, model_version: str = "",
                 env: Mapping[str, str] | None = None, **kwargs: Any) -> PayloadLogger | None:
        env = os.environ if env is None else env
        config = PayloadConfig.from_env(env)
        if config is None or config.sample_rate <= 0:
            return None
        return cls(config, env.get(ENV_NAME, ""), env.get(ENV_VERSION) or model_version, task,
                   **kwargs)

    def sampled(self) -> bool:
        rate = self.config.sample_rate
        return rate >= 1.0 or self.rng() < rate

    def record(self, *, request_id: str, text: Any, output: dict | None, latency_ms: float,
               error: str | None = None) -> dict:
        """The JSON object of one request, redacted (input text, output text and error)."""
        out: dict[str, Any] = {
            MARKER: 1,
            "time": now_iso(),
            "requestId": request_id or "",
            "model": self.name,
            "version": self.version,
            "task": self.task,
            "input": self._clean(text),
            "output": _redact_strings(output, self._clean) if output is not None else None,
            "latencyMs": round(float(latency_ms), 3),
            "error": self._clean(error) if error else None,
        }
        return out

    def _clean(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._clean(v) for v in value]
        if not isinstance(value, str):
            return value
        return self.redactor(value)[:MAX_TEXT_CHARS]

    def log(self, **kwargs: Any) -> None:
        """Queue one record (arguments of `record()`); never blocks, never raises."""
        try:
            item = self.record(**kwargs)
        except Exception:  # noqa: BLE001 - logging must never fail a request
            self._count(self.on_drop, 1, "record_error")
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count(self.on_drop, 1, "queue_full")

    def _run(self) -> None:
        """Every TICK_SECONDS (at once when closing): take what is queued, write full
        batches, and a partial one once its first record waited `flush_seconds`. Waking on a
        timer rather than on every record keeps the thread off the GIL the model needs."""
        pending: list[dict] = []
        since = 0.0
        while True:
            stopping = self._stopping.wait(TICK_SECONDS)
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not pending:
                    since = time.monotonic()
                pending.append(item)
                if len(pending) >= self.batch:
                    self._write(pending)
                    pending = []
            if pending and (stopping or time.monotonic() - since >= self.flush_seconds):
                self._write(pending)
                pending = []
            if stopping and self._queue.empty() and not pending:
                return

    def _write(self, records: list[dict]) -> None:
        try:
            self.sink.write(records)
        except Exception as exc:  # noqa: BLE001 - a failing sink drops, never raises
            self._count(self.on_drop, len(records), "sink_error")
            self._report(exc)
        else:
            self._count(self.on_written, len(records))

    @staticmethod
    def _count(counter: Callable[..., None], *args: Any) -> None:
        """Count through a metric callback; a failing one must not reach a request or stop
        the writer thread."""
        try:
            counter(*args)
        except Exception:  # noqa: BLE001
            pass

    def _report(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._last_error < 60:
            return
        self._last_error = now
        print(f"lmo payloads: sink {self.config.sink} failed ({type(exc).__name__}: "
              f"{str(exc)[:200]}); records are dropped and counted in "
              "lmo_payloads_dropped_total", file=sys.stderr, flush=True)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), then stop the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _redact_strings(value: Any, clean: Callable[[Any], Any]) -> Any:
    if isinstance(value, dict):
        return {k: _redact_strings(v, clean) for k, v in value.items()}
    if isinstance(value, (list, str)):
        return clean(value)
    return value


def parse_line(line: str) -> dict | None:
    """The payload record on a log line, or None for any other line."""
    start = line.find("{")
    if start < 0 or MARKER not in line:
        return None
    try:
        obj = json.loads(line[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get(MARKER) == 1 else None


class TritonMetrics:
    """lmo's custom metrics of one Triton model (`pb_utils.MetricFamily`, Triton >= 23.05):
    payloads written and dropped (by reason). Labelled `model` like Triton's own metrics;
    the scrape adds the LanguageModel and version labels (the chart's PodMonitor)."""

    def __init__(self, pb_utils: Any, model: str):
        self._pb = pb_utils
        self.model = model
        self.written_family = pb_utils.MetricFamily(
            name="lmo_payloads_logged_total",
            description="Payload records written to the sink",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.dropped_family = pb_utils.MetricFamily(
            name="lmo_payloads_dropped_total",
            description="Payload records dropped (queue_full: the sink is slower than the "
            "traffic; sink_error: the sink failed)",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.written = self.written_family.Metric(labels={"model": model})
        self.dropped = {
            reason: self.dropped_family.Metric(labels={"model": model, "reason": reason})
            for reason in ("queue_full", "sink_error", "record_error")
        }
        self.lock = threading.Lock()

    def on_written(self, n: int) -> None:
        with self.lock:
            self.written.increment(n)

    def on_drop(self, n: int, reason: str) -> None:
        with self.lock:
            self.dropped[reason].increment(n)


def for_model(pb_utils: Any, args: Mapping[str, Any], task: str
              ) -> tuple[PayloadLogger | None, TritonMetrics]:
    """(payload logger or None when logging is off, its metrics) of a Triton model.

    The metrics exist even when logging is off, so dashboards and alerts see zeros rather
    than no series; the model keeps both for its lifetime (Triton drops a metric with its
    Python object)."""
    metrics = TritonMetrics(pb_utils, args.get("model_name", ""))
    logger = PayloadLogger.from_env(
        task, str(args.get("model_version", "")),
        on_drop=metrics.on_drop, on_written=metrics.on_written,
    )
    return logger, metrics


def ship(version_dir: Any) -> None:
    """Copy this module, `lmo_runtime.drift` and `lmo_runtime.bls` (BLS calls that work on
    GPUs) beside a model.py in a model repository: Triton's containers do not have
    lmo_runtime installed."""
    from importlib import resources
    from pathlib import Path

    here = resources.files("lmo_runtime")
    Path(version_dir, SHIPPED_NAME).write_text((here / "payloads.py").read_text())
    Path(version_dir, "lmo_drift.py").write_text((here / "drift.py").read_text())
    Path(version_dir, "lmo_bls.py").write_text((here / "bls.py").read_text())
