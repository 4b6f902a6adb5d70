"""Payload logging and input drift inside lmo's Triton models (lmo_runtime.payloads/drift).

Unit level: redaction before anything is written, sampling, the bounded queue (a blocked
sink drops and counts, `log()` returns), the s3:// sink writing JSON-lines objects to a
real S3 API (moto's server) and an unreachable one counted as sink errors.
Real Triton: a converted tiny BERT classifier and feature extractor served by the real
tritonserver with payload logging on (sampleRate 1 and a redact rule): the records appear
in Triton's output, the secret-shaped text never does, `lmo logs` reads them back; the
custom metrics (payloads, drift, the conversion sample's reference) are on /metrics; a
failing s3:// sink fails no request and its drops are counted.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from lmo_runtime import payloads as P
from lmo_runtime.convert import convert
from lmo_runtime.manifest import ConversionRequest, Manifest
from lmo_runtime.triton.server import TritonServer, free_port

SECRET = "12345678901"
REDACT = [r"\b\d{11}\b"]


class Counts:
    def __init__(self):
        self.dropped: dict[str, int] = {}
        self.written = 0
        self.lock = threading.Lock()

    def drop(self, n, reason):
        with self.lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def wrote(self, n):
        with self.lock:
            self.written += n


def _logger(sink, counts, **kw):
    config = P.PayloadConfig(sample_rate=kw.pop("rate", 1.0), redact=tuple(REDACT),
                             sink=kw.pop("uri", "stdout"))
    return P.PayloadLogger(config, "chat", "v2", "text-classification", sink=sink,
                           on_drop=counts.drop, on_written=counts.wrote, **kw)


def test_records_are_redacted_before_they_are_written():
    stream, counts = io.StringIO(), Counts()
    logger = _logger(P.StdoutSink(stream), counts)
    logger.log(request_id="r1", text=f"call {SECRET} now", latency_ms=1.5,
               output={"label": f"id {SECRET}", "score": 0.9})
    logger.log(request_id="r2", text=["a", f"b {SECRET}"], output=None, latency_ms=2,
               error=f"bad input {SECRET}")
    logger.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and counts.written == 2
    assert SECRET not in stream.getvalue()
    first = P.parse_line(lines[0])
    assert first["input"] == "call [REDACTED] now"
    assert first["output"] == {"label": "id [REDACTED]", "score": 0.9}
    assert (first["model"], first["version"], first["task"], first["requestId"]) == (
        "chat", "v2", "text-classification", "r1")
    second = P.parse_line(lines[1])
    assert second["input"] == ["a", "b [REDACTED]"] and second["error"] == "bad input [REDACTED]"
    assert P.parse_line("I1204 12:00:00 server.cc] started") is None


def test_sample_rate_picks_that_share():
    counts = Counts()
    draws = iter([0.01, 0.5, 0.04, 0.9])
    logger = _logger(P.StdoutSink(io.StringIO()), counts, rate=0.05, rng=lambda: next(draws))
    assert [logger.sampled() for _ in range(4)] == [True, False, True, False]
    logger.close()
    env = {P.ENV_PAYLOADS: json.dumps({"sampleRate": 0, "sink": "stdout"})}
    assert P.PayloadLogger.from_env("fill-mask", env=env) is None
    assert P.PayloadLogger.from_env("fill-mask", env={}) is None


def test_a_blocked_sink_drops_and_counts_instead_of_blocking():
    release, counts = threading.Event(), Counts()

    class Blocked:
        def write(self, records):
            release.wait(30)

    logger = _logger(Blocked(), counts, queue_size=4, batch=1)
    for i in range(50):  # returns although the sink writes nothing
        logger.log(request_id=str(i), text="x", output=None, latency_ms=1)
    # the writer holds at most one record, the queue four: the rest are dropped
    assert counts.dropped["queue_full"] >= 45
    release.set()
    logger.close()
    assert counts.written + counts.dropped["queue_full"] == 50


def test_a_failing_metric_callback_reaches_no_request():
    def broken(*args):
        raise RuntimeError("metric backend gone")

    class Full:
        def write(self, records):
            raise OSError("sink gone")

    config = P.PayloadConfig(sample_rate=1.0)
    logger = P.PayloadLogger(config, "chat", "v2", "fill-mask", sink=Full(), on_drop=broken,
                             on_written=broken, queue_size=1, batch=1)
    for i in range(20):  # queue_full and sink_error both call the broken counter
        logger.log(request_id=str(i), text="x", output=None, latency_ms=1)
    logger.close()
    assert logger._queue.empty()


@pytest.fixture(scope="module")
def s3_server(moto_s3):
    return moto_s3["AWS_ENDPOINT_URL"]


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test-secret",
                 "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_s3_sink_writes_batched_json_lines_objects(s3_server, aws_env):
    import boto3

    aws_env.setenv("AWS_ENDPOINT_URL", s3_server)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="payloads")
    counts = Counts()
    uri = "s3://payloads/prod/logs"
    logger = _logger(P.S3Sink(uri, "chat", "v2"), counts, uri=uri, batch=10,
                     flush_seconds=30)
    for i in range(25):
        logger.log(request_id=str(i), text=f"text {i} {SECRET}", output={"label": "x"},
                   latency_ms=1)
    logger.close(timeout=30)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="payloads")["Contents"])
    assert len(keys) == 3  # batches of 10, 10 and 5
    assert all(k.startswith("prod/logs/chat/v2/") and k.endswith(".jsonl") for k in keys)
    records = [json.loads(line) for k in keys
               for line in s3.get_object(Bucket="payloads", Key=k)["Body"].read().splitlines()]
    assert sorted(int(r["requestId"]) for r in records) == list(range(25))
    assert all(SECRET not in json.dumps(r) for r in records)
    assert counts.written == 25 and not counts.dropped


def test_unreachable_s3_sink_counts_sink_errors(aws_env, capfd):
    aws_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    counts = Counts()
    uri = "s3://payloads/x"
    logger = _logger(P.S3Sink(uri, "chat", "v2"), counts, uri=uri, batch=5, flush_seconds=0)
    for i in range(5):
        logger.log(request_id=str(i), text=f"secret {SECRET}", output=None, latency_ms=1)
    logger.close(timeout=60)
    assert counts.dropped == {"sink_error": 5} and counts.written == 0
    err = capfd.readouterr().err
    assert "sink s3://payloads/x failed" in err and SECRET not in err


# --------------------------------------------------------------------------- real Triton


@pytest.fixture(scope="module")
def served(tiny_bert_classifier, tiny_bert_mlm, tmp_path_factory, artifact_cache):
    """Tiny BERT classifier and feature extractor, converted (python backend)."""
    root = tmp_path_factory.mktemp("payload-artifacts")
    out = {}
    for task, ckpt in (("text-classification", tiny_bert_classifier),
                       ("feature-extraction", tiny_bert_mlm), ("fill-mask", tiny_bert_mlm)):
        request = ConversionRequest(checkpoint_uri=str(ckpt), task=task, precision="fp32",
                                    backend="python", min_score=0.0)
        convert(request, root / task, cache_dir=artifact_cache, progress=False)
        out[task] = root / task
    return out


def _env(sink: str, extra: dict | None = None) -> dict:
    return {P.ENV_PAYLOADS: json.dumps({"sampleRate": 1, "redact": REDACT, "sink": sink}),
            P.ENV_NAME: "chat", P.ENV_VERSION: "v2", **(extra or {})}


def _infer(server, model, texts, request_id=""):
    client = httpclient.InferenceServerClient(server.http_address)
    try:
        tensor = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
        return client.infer(model, [tensor], request_id=request_id)
    finally:
        client.close()


def _metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("lmo_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _wait(predicate, what, timeout=60.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_real_triton_logs_redacted_payloads_and_exports_drift(served, tmp_path):
    from lmo.commands.logs import local_records

    manifest = Manifest.model_validate_json(
        (served["text-classification"] / "manifest.json").read_text())
    reference = manifest.input_reference
    assert reference["texts"] > 0 and reference["tokensMean"] > 0

    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "chat-v2.log"
    repo = served["text-classification"] / "model_repository"
    with TritonServer(repo, log_path=log, env=_env("stdout")) as server:
        for i in range(3):
            answer = _infer(server, "text_classification",
                            [f"my number is {SECRET}", "a fine day"], request_id=f"req-{i}")
            assert answer.as_numpy("LABEL").shape == (2, 2)  # both labels, best first
        records = _wait(lambda: local_records(tmp_path, "chat", "v2")
                        if len(local_records(tmp_path, "chat", "v2")) == 3 else None,
                        "three payload records in Triton's log")
        metrics = _metrics(server)
    assert SECRET not in log.read_text()
    assert [r["requestId"] for r in records] == ["req-0", "req-1", "req-2"]
    first = records[0]
    assert first["input"] == ["my number is [REDACTED]", "a fine day"]
    assert first["task"] == "text-classification" and first["error"] is None
    assert set(first["output"]) == {"label", "score"} and len(first["output"]["label"]) == 2
    assert first["latencyMs"] > 0
    model = 'model="text_classification"'
    assert metrics[f"lmo_payloads_logged_total{{{model}}}"] == 3
    assert metrics[f'lmo_payloads_dropped_total{{{model},reason="queue_full"}}'] == 0
    assert metrics[f"lmo_input_tokens_count{{{model}}}"] == 6
    assert metrics[f"lmo_input_reference_tokens_mean{{{model}}}"] == reference["tokensMean"]
    assert f"lmo_input_unknown_tokens_total{{{model}}}" in metrics


@pytest.mark.slow
def test_real_triton_embedding_drift_against_the_conversion_sample(served, tmp_path):
    from lmo_runtime.families import heldout_texts

    art = served["feature-extraction"]
    assert (art / "model_repository/feature_extraction/1/lmo_reference.json").is_file()
    repo = art / "model_repository"
    with TritonServer(repo, log_path=tmp_path / "t.log") as server:  # logging off
        _infer(server, "feature_extraction", heldout_texts(8))
        like_sample = _metrics(server)['lmo_input_embedding_cosine{model="feature_extraction"}']
        for _ in range(20):  # the running mean moves towards very different inputs
            _infer(server, "feature_extraction", ["%%%% ### 0x7f 0x00 ;;;; 𓀀 𓀁"] * 16)
        drifted = _metrics(server)
    assert like_sample > 0.95
    cosine = drifted['lmo_input_embedding_cosine{model="feature_extraction"}']
    assert cosine < like_sample
    assert drifted['lmo_input_reference_embedding_mean_norm{model="feature_extraction"}'] > 0
    # two tokens the vocabulary does not know in each of the 320 texts
    assert drifted['lmo_input_unknown_tokens_total{model="feature_extraction"}'] == 640
    # logging off: no records, but the drop counter exists (alerts see 0, not nothing)
    assert 'lmo_payloads_dropped_total{model="feature_extraction",reason="sink_error"}' in drifted
    assert "lmo_payload" not in (tmp_path / "t.log").read_text()


@pytest.mark.slow
def test_real_triton_failing_s3_sink_fails_no_request(served, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"  # an s3 endpoint nobody answers
    env = _env("s3://payloads/prod", {"AWS_ENDPOINT_URL": dead, "AWS_ACCESS_KEY_ID": "x",
                                      "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"})
    repo = served["text-classification"] / "model_repository"
    with TritonServer(repo, log_path=tmp_path / "t.log", env=env) as server:
        for i in range(40):
            answer = _infer(server, "text_classification", [f"n {SECRET}"])
            assert answer.as_numpy("SCORE").shape == (1, 2)
        key = 'lmo_payloads_dropped_total{model="text_classification",reason="sink_error"}'
        _wait(lambda: _metrics(server)[key] == 40, "40 sink errors counted")
        assert _metrics(server)['lmo_payloads_logged_total{model="text_classification"}'] == 0
    text = (tmp_path / "t.log").read_text()
    assert "lmo payloads: sink s3://payloads/prod failed" in text and SECRET not in text


@pytest.mark.slow
def test_real_triton_gpt2_logs_generated_text_and_streams(gpt2_fp32_artifact, tmp_path):
    """text_generation logs the prompt and the generated text; text_generation_stream logs
    once per stream, when it ends, with the whole text the client received."""
    import tritonclient.grpc as grpcclient

    from tests.runtime.test_triton_gpt2 import _inputs, _stream, _texts

    log = tmp_path / "gpt2.log"
    repo = gpt2_fp32_artifact / "model_repository"
    with TritonServer(repo, log_path=log, env=_env("stdout")) as server:
        client = httpclient.InferenceServerClient(server.http_address)
        try:
            answer = _texts(client.infer("text_generation", _inputs(
                httpclient, [f"my id is {SECRET} and"], MAX_TOKENS=6), request_id="gen-1"))
        finally:
            client.close()
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            pieces = _stream(grpc, f"call {SECRET} now", MAX_TOKENS=5)
        finally:
            grpc.close()

        def two():
            records = [P.parse_line(line) for line in log.read_text().splitlines()]
            records = [r for r in records if r is not None]
            return records if len(records) == 2 else None

        generated, streamed = sorted(_wait(two, "two GPT-2 payload records"),
                                     key=lambda r: r["requestId"] != "gen-1")
        metrics = _metrics(server)
    assert SECRET not in log.read_text()
    assert generated["input"] == "my id is [REDACTED] and"
    assert generated["output"] == {"text": answer[0]} and generated["task"] == "text-generation"
    assert streamed["input"] == "call [REDACTED] now"
    assert streamed["output"] == {"text": "".join(pieces)}
    for model in ("text_generation", "text_generation_stream"):
        assert metrics[f'lmo_payloads_logged_total{{model="{model}"}}'] == 1
        assert metrics[f'lmo_input_tokens_count{{model="{model}"}}'] == 1


@pytest.mark.slow
def test_real_triton_fill_mask_records_and_a_refused_request(served, tmp_path):
    """fill-mask logs the filled token, its score and the sequence; a request the model
    refuses (no [MASK]) is logged with its error and no output."""
    log = tmp_path / "t.log"
    with TritonServer(served["fill-mask"] / "model_repository", log_path=log,
                      env=_env("stdout")) as server:
        _infer(server, "fill_mask", [f"my pin {SECRET} is [MASK] ."], request_id="ok")
        with pytest.raises(Exception, match="must contain the mask token"):
            _infer(server, "fill_mask", [f"no mask {SECRET} here"], request_id="bad")

        def two():
            records = [P.parse_line(line) for line in log.read_text().splitlines()]
            records = [r for r in records if r is not None]
            return records if len(records) == 2 else None

        records = {r["requestId"]: r for r in _wait(two, "two fill-mask records")}
    ok, bad = records["ok"], records["bad"]
    assert set(ok["output"]) == {"token", "score", "sequence"} and ok["error"] is None
    assert ok["input"] == "my pin [REDACTED] is [MASK] ."
    assert bad["output"] is None and "must contain the mask token" in bad["error"]
    assert SECRET not in log.read_text()
