"""Real parts for rollout tests and bench/rollout.py: a Triton model, a load loop, a driver.

* `write_embedding_model(repo, behavior_file)`: the entry model `feature_extraction` (TEXT ->
  EMBEDDING, the lmo client protocol) in the Python backend, computing a deterministic
  embedding of the text. Its behaviour is read from a JSON file on every call, so a test can
  turn a good version bad without reloading it: `{"fail_every": 3}` fails every third
  execute() call (the load loop sends one request at a time), `{"drift": 0.7}` mixes in an unrelated vector (answers change, no errors).
* `LoadLoop(urls)`: a thread sending requests to each version at the routed weights
  (smooth weighted round-robin; a version at 0% never gets a request), counting answers.
* `drive(...)`: the operator's rollout loop without a cluster: `decide` -> route -> hold ->
  `analyse` (real Prometheus, golden replay) -> `decide`, until the rollout settles.
"""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lmo.api import LanguageModelSpec, RolloutStatus
from lmo.decide.measure import analyse
from lmo.replay import ReplayTargets
from lmo.rollout import analysis_window, decide, Decision, VersionObservation
from lmo_runtime.triton.config import DynamicBatching, ModelConfig, Tensor, write_config

ENTRY = "feature_extraction"
DIM = 16
GOLDEN = tuple(f"golden input number {i}" for i in range(8))

EMBEDDING_MODEL = '''
import hashlib
import json

import numpy as np
import triton_python_backend_utils as pb_utils

DIM = __DIM__


class TritonPythonModel:
    """A deterministic text embedding whose failures and drift a test controls."""

    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.behavior_file = params.get("BEHAVIOR_FILE", {}).get("string_value", "")
        self.seen = 0

    def behavior(self):
        try:
            with open(self.behavior_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def embed(self, text, drift):
        seed = int.from_bytes(hashlib.sha256(text).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(DIM)
        if drift:
            w = np.random.default_rng(seed ^ 0x5EED).standard_normal(DIM)
            v = (1.0 - drift) * v + drift * w
        return (v / np.linalg.norm(v)).astype(np.float32)

    def execute(self, requests):
        b = self.behavior()
        fail_every = int(b.get("fail_every", 0))
        drift = float(b.get("drift", 0.0))
        self.seen += 1
        if fail_every and self.seen % fail_every == 0:
            # Raised, not returned: Triton 2.51 counts an error *response* from the Python
            # backend as a success in nv_inference_request_failure/success.
            raise pb_utils.TritonModelException("injected failure")
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            out = np.stack([self.embed(bytes(t), drift) for t in texts])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", out)]))
        return responses
'''


def write_embedding_model(repo: Path, behavior_file: Path) -> Path:
    model_dir = Path(repo) / ENTRY
    write_config(
        model_dir,
        ModelConfig(
            name=ENTRY,
            backend="python",
            inputs=(Tensor("TEXT", "STRING", (1,)),),
            outputs=(Tensor("EMBEDDING", "FP32", (DIM,)),),
            max_batch_size=8,
            dynamic_batching=DynamicBatching(max_queue_delay_microseconds=200),
            parameters={"BEHAVIOR_FILE": str(behavior_file)},
        ),
    )
    (model_dir / "1").mkdir(exist_ok=True)
    code = textwrap.dedent(EMBEDDING_MODEL).replace("__DIM__", str(DIM))
    (model_dir / "1" / "model.py").write_text(code)
    set_behavior(behavior_file)
    return model_dir


def set_behavior(behavior_file: Path, **behavior) -> None:
    tmp = Path(str(behavior_file) + ".tmp")
    tmp.write_text(json.dumps(behavior))
    tmp.replace(behavior_file)  # atomic: the model never reads half a file


@dataclass
class LoadLoop:
    """Bounded load: requests to each version at the current weights, from one thread."""

    urls: dict[str, str]  # version -> Triton host:port (HTTP)
    pause: float = 0.004
    weights: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    first_failure_at: float | None = None  # monotonic time of the first failed request
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, weights: dict[str, int]) -> None:
        with self._lock:
            self.weights = dict(weights)

    def _run(self) -> None:
        import tritonclient.http as httpclient
        from tritonclient.utils import InferenceServerException

        clients = {v: httpclient.InferenceServerClient(u) for v, u in self.urls.items()}
        current = {v: 0 for v in self.urls}
        i = 0
        try:
            while not self._stop.is_set():
                with self._lock:
                    weights = {v: w for v, w in self.weights.items() if w > 0}
                if not weights:
                    time.sleep(0.05)
                    continue
                # smooth weighted round-robin (nginx): exact shares, no randomness
                total = sum(weights.values())
                for v, w in weights.items():
                    current[v] = current.get(v, 0) + w
                pick = max(weights, key=lambda v: current[v])
                current[pick] -= total
                i += 1
                inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
                inp.set_data_from_numpy(np.array([[f"request {i}".encode()]], dtype=object))
                self.sent[pick] = self.sent.get(pick, 0) + 1
                try:
                    clients[pick].infer(ENTRY, [inp])
                except InferenceServerException:
                    self.failed[pick] = self.failed.get(pick, 0) + 1
                    if self.first_failure_at is None:
                        self.first_failure_at = time.monotonic()
                time.sleep(self.pause)
        finally:
            for c in clients.values():
                c.close()

    def start(self) -> "LoadLoop":
        self._thread = threading.Thread(target=self._run, name="rollout-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


@dataclass
class Step:
    """One decision the driver applied (for assertions and the benchmark)."""

    at: float  # monotonic
    decision: Decision
    analysis_verdict: str | None = None


def drive(
    spec: LanguageModelSpec,
    namespace: str,
    lm: str,
    versions: list[VersionObservation],
    load: LoadLoop,
    replay: Callable[[str, str], ReplayTargets | None],
    timeout: float = 60.0,
    on_route: Callable[[dict[str, int]], None] | None = None,
) -> tuple[RolloutStatus, list[Step]]:
    """Run decide/route/analyse with the wall clock until the rollout settles."""
    status: RolloutStatus | None = None
    steps: list[Step] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = decide(spec, status, versions, datetime.now(timezone.utc))
        verdict = None
        if d.analyse:
            ro = d.rollout
            now = datetime.now(timezone.utc)
            result = analyse(
                spec.rollout.analysis,
                namespace,
                lm,
                ro.candidate,
                ro.stable,
                analysis_window(spec, ro, now),
                replay(ro.candidate, ro.stable),
            )
            verdict = result.verdict
            d = decide(spec, ro, versions, datetime.now(timezone.utc), result)
        if not steps or d.traffic != steps[-1].decision.traffic:
            load.route(d.traffic)
            if on_route is not None:
                on_route(d.traffic)
        steps.append(Step(time.monotonic(), d, verdict))
        status = d.rollout
        if status.phase in ("Succeeded", "RolledBack"):
            return status, steps
        time.sleep(min(d.requeue_after or 0.2, 0.2))
    raise AssertionError(f"rollout did not settle in {timeout}s: {status}")
