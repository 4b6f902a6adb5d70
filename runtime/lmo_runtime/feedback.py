"""The `feedback` model of every version's Triton model repository (see
`triton_models/feedback/model.py`): how a client's outcome report reaches a per-version
counter on the cluster without any new data-plane component.

Its inputs are the fields of `POST /v1/feedback` (`success` true/false, `score` 0 to 1,
`requestId`). Each version's front (`lmo_runtime.front`, in the Triton pod) takes the report,
accepts it only for a request id it answered itself, and passes it to this model over the
pod's loopback; clients never reach the model directly.

`write_model(repo_dir)` adds it at conversion, so the cluster's Triton (model control mode
none: it loads the whole repository) serves it next to the entry model. `lmo up` does not
load it: its front door takes `POST /v1/feedback` itself and exports the same counters.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from lmo_runtime.triton.config import ModelConfig, Tensor, write_config

MODEL = "feedback"
# The counters it exports (triton_models/feedback/model.py runs inside Triton's Python backend,
# which cannot import this package, and spells them again; tests/runtime checks they agree),
# also exported by the `lmo up` front door, labelled lmo_model, lmo_version, namespace.
SAMPLES = "lmo_feedback_samples_total"
SUCCESSES = "lmo_feedback_successes_total"
# Where clients report (each version's front, lmo_runtime.front, and the lmo up front door).
PATH = "/v1/feedback"


def config() -> ModelConfig:
    return ModelConfig(
        name=MODEL,
        backend="python",
        inputs=(
            Tensor("success", "BOOL", (1,), optional=True),
            Tensor("score", "FP32", (1,), optional=True),
            Tensor("requestId", "STRING", (1,), optional=True),
        ),
        outputs=(Tensor("counted", "FP32", (1,)),),
    )


def write_model(repo_dir: Path) -> Path:
    """Write `<repo_dir>/feedback/` (config.pbtxt and 1/model.py); returns its directory."""
    model_dir = Path(repo_dir) / MODEL
    write_config(model_dir, config())
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    source = resources.files("lmo_runtime") / "triton_models" / MODEL / "model.py"
    (model_dir / "1" / "model.py").write_text(source.read_text())
    return model_dir
