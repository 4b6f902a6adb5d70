"""Triton's queue policy (spec.serving.queue) on a real tritonserver: under overload a full
queue rejects at once instead of queueing without bound."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest
import requests

from lmo_runtime.triton.config import (
    DynamicBatching, ModelConfig, Tensor, validate_config, write_config, render_config,
)

pytestmark = pytest.mark.slow

SLOW_MODEL = '''
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Y = X after 0.3 s per batch: a server that is easy to overload."""

    def execute(self, requests):
        time.sleep(0.3)
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy().astype(np.float32))])
            for r in requests]
'''


def _slow_model(repo: Path, queue: int | None) -> None:
    model_dir = repo / "slow"
    write_config(model_dir, ModelConfig(
        name="slow", backend="python",
        inputs=(Tensor("X", "FP32", (1,)),), outputs=(Tensor("Y", "FP32", (1,)),),
        max_batch_size=1,  # one request per 0.3 s execution: the queue fills fast
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=0, max_queue_size=queue),
    ))
    (model_dir / "1").mkdir(exist_ok=True)
    (model_dir / "1" / "model.py").write_text(textwrap.dedent(SLOW_MODEL))


def test_queue_policy_renders_as_triton_reads_it() -> None:
    config = ModelConfig(name="m", backend="python", inputs=(Tensor("X", "FP32", (1,)),),
                         outputs=(Tensor("Y", "FP32", (1,)),), max_batch_size=4,
                         dynamic_batching=DynamicBatching(max_queue_size=64,
                                                          queue_timeout_microseconds=2_000_000))
    parsed = validate_config(render_config(config))
    policy = parsed.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 64 and policy.default_timeout_microseconds == 2_000_000
    assert policy.timeout_action == policy.REJECT
    plain = validate_config(render_config(ModelConfig(
        name="m", backend="python", inputs=(Tensor("X", "FP32", (1,)),),
        outputs=(Tensor("Y", "FP32", (1,)),), max_batch_size=4,
        dynamic_batching=DynamicBatching())))
    assert not plain.dynamic_batching.HasField("default_queue_policy")


def _burst(url: str, n: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    lock = threading.Lock()
    body = {"inputs": [{"name": "X", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}

    def one() -> None:
        with requests.Session() as s:
            s.trust_env = False
            r = s.post(url, json=body, timeout=60)
        with lock:
            out.append((r.status_code, r.text))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_full_queue_rejects_at_once_instead_of_queueing(tmp_path, triton_server_factory) -> None:
    bounded, unbounded = tmp_path / "bounded", tmp_path / "unbounded"
    _slow_model(bounded, queue=2)
    _slow_model(unbounded, queue=None)
    n = 12
    got = _burst(f"http://{triton_server_factory(bounded).http_address}/v2/models/slow/infer", n)
    ok = [t for s, t in got if s == 200]
    refused = [(s, t) for s, t in got if s != 200]
    # at most one executing and two queued at any time; the rest are turned away
    assert refused and len(ok) + len(refused) == n
    assert len(ok) < n
    statuses = {s for s, _ in refused}
    assert statuses == {503}, refused[:3]
    assert all("queue" in t.lower() for _, t in refused), refused[:3]
    # without the policy every request waits its turn and is answered
    got = _burst(f"http://{triton_server_factory(unbounded).http_address}/v2/models/slow/infer", n)
    assert [s for s, _ in got] == [200] * n
    print(json.dumps({"bounded_ok": len(ok), "refused": len(refused), "sample": refused[0][1]}))
