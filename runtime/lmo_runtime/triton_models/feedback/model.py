"""lmo's feedback model: outcome reports for one version, counted as Triton custom metrics.

A client reports whether an answer helped through the same route that served it, naming the
version it got back (`x-lmo-version`); that version's front accepts the report when it gave
the answer and passes it to this model over the pod's loopback:

    POST /v1/feedback   x-lmo-version: v2
    {"requestId": "...", "success": true}          (or "score": 0.7)

Each report adds 1 to `lmo_feedback_samples_total` and the success (0/1) or the score (0 to
1) to `lmo_feedback_successes_total`, exported on Triton's metrics port beside its own
metrics. Prometheus' scrape labels them with the pod's namespace, model and version, so the
experiment reads them with the same PromQL as the `lmo up` front door's counters. A report
without exactly one of success/score, or with a value outside [0, 1], is refused (HTTP 400)
and not counted. Nothing else is kept: no ids, no payloads.
"""

import math

import numpy as np
import triton_python_backend_utils as pb_utils

SAMPLES = "lmo_feedback_samples_total"
SUCCESSES = "lmo_feedback_successes_total"


def _value(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return float(values[0]) if values.size else None


def outcome(success, score):
    """The success to count, or why the report cannot be counted."""
    if (success is None) == (score is None):
        return None, "send exactly one of success (true or false) and score (0 to 1)"
    value = success if success is not None else score
    name = "success" if success is not None else "score"
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        return None, f"{name} must be from 0 to 1 (got {value})"
    return value, None


class TritonPythonModel:
    def initialize(self, args):
        self.samples_family = pb_utils.MetricFamily(
            name=SAMPLES, description="Outcome reports received by this version.",
            kind=pb_utils.MetricFamily.COUNTER)
        self.successes_family = pb_utils.MetricFamily(
            name=SUCCESSES, description="Successes (or summed scores) reported for this version.",
            kind=pb_utils.MetricFamily.COUNTER)
        self.samples = self.samples_family.Metric(labels={})
        self.successes = self.successes_family.Metric(labels={})

    def execute(self, requests):
        responses = []
        for request in requests:
            value, problem = outcome(_value(request, "success"), _value(request, "score"))
            if problem is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(problem)))
                continue
            self.samples.increment(1.0)
            if value > 0:
                self.successes.increment(value)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("counted", np.array([value], dtype=np.float32))]))
        return responses
