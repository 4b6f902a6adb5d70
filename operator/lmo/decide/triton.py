"""Triton's own counters as lmo reads them, and the one rule that turns them into a version's
numbers for both runtimes.

Triton exports, per model: `nv_inference_request_success` / `_failure` (requests),
`nv_inference_request_duration_us` and `nv_inference_queue_duration_us` (cumulative
microseconds over those requests) and, with `--metrics-config summary_latencies=true` (the
chart and `lmo up` both turn it on), the latency summary
`nv_inference_request_summary_us{quantile="0.99"}`. The cluster reads their `increase()`
through Prometheus (`lmo.decide.measure`); `lmo up` reads the same series straight from each
server's /metrics and subtracts two scrapes. Either way `version_metrics` decides what counts:

* requests and failures of the entry model: the model with the most requests (an ensemble's
  composing models would otherwise count a request twice), never lmo's feedback model (a
  client's outcome report is no answer of the version);
* latency: Triton's p99 (the highest of the models' summaries: the entry model's includes its
  composing models), else the mean request duration of the slowest model (a server without
  the summary), which the verdict then names as a mean;
* queue time: the mean queue time of the worst model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from lmo.decide.vocabulary import VersionMetrics
from lmo_runtime.feedback import MODEL as FEEDBACK_MODEL

COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_request_duration_us": "duration_us",
    "nv_inference_queue_duration_us": "queue_us",
}
SUMMARY = "nv_inference_request_summary_us"


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of one model on one server (or their increase over a window)."""

    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0
    queue_us: float = 0.0
    # Triton's p99 request latency at the time of the scrape (its summary, a gauge: a
    # difference keeps the later one); None without a summary
    p99_ms: float | None = None

    def __sub__(self, earlier: "Snapshot") -> "Snapshot":
        return Snapshot(
            self.success - earlier.success,
            self.failure - earlier.failure,
            self.duration_us - earlier.duration_us,
            self.queue_us - earlier.queue_us,
            self.p99_ms,
        )

    @property
    def requests(self) -> float:
        return self.success + self.failure

    @property
    def error_ratio(self) -> float:
        return self.failure / self.requests if self.requests else 0.0

    @property
    def latency_mean_ms(self) -> float | None:
        return self.duration_us / self.requests / 1000.0 if self.requests else None

    @property
    def queue_time_ms(self) -> float | None:
        return self.queue_us / self.requests / 1000.0 if self.requests else None

    def metrics(self) -> VersionMetrics:
        """This model's numbers as `version_metrics` gives them."""
        return version_metrics(self)


# One version's models: model name -> its counters (a scrape, or the difference of two).
Models = Mapping[str, Snapshot]


def version_metrics(models: Models | Snapshot, p99_ms: float | None = None) -> VersionMetrics:
    """What one version did over a window, from its models' counter increases: the rule of
    the module docstring. `p99_ms` is Triton's p99 when the source measured it apart (the
    cluster's query), else the highest of the models' own; a lone `Snapshot` is one model."""
    if isinstance(models, Snapshot):
        models = {"": models}
    answers = {m: s for m, s in models.items() if m != FEEDBACK_MODEL}
    if p99_ms is None:
        p99_ms = p99_of(answers)
    entry = max(answers, key=lambda m: (answers[m].requests, m)) if answers else None
    counted = answers[entry] if entry is not None else Snapshot()
    means = [s.latency_mean_ms for s in answers.values() if s.requests > 0]
    queues = [s.queue_time_ms for s in answers.values() if s.requests > 0]
    mean = max(means) if means else None  # type: ignore[type-var]
    return VersionMetrics(
        requests=counted.requests,
        failures=counted.failure,
        latency_ms=p99_ms if p99_ms is not None else mean,
        latency_is_p99=p99_ms is not None,
        queue_time_ms=max(queues) if queues else None,  # type: ignore[type-var]
    )


def p99_of(models: Models) -> float | None:
    """The highest p99 of the answering models' summaries; None without one."""
    p99s = [s.p99_ms for m, s in models.items() if s.p99_ms is not None and m != FEEDBACK_MODEL]
    return max(p99s) if p99s else None


def difference(later: Models, earlier: Models) -> dict[str, Snapshot]:
    """Each model's increase between two scrapes of one server."""
    return {m: s - earlier.get(m, Snapshot()) for m, s in later.items()}


def parse_models(text: str) -> dict[str, Snapshot]:
    """Every model's counters (summed over its versions) and p99 (the highest of its
    versions') in a Triton /metrics exposition."""
    values: dict[str, dict[str, float]] = {}
    p99: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            key = COUNTERS.get(sample.name) or COUNTERS.get(sample.name.removesuffix("_total"))
            if key:
                counters = values.setdefault(model, dict.fromkeys(COUNTERS.values(), 0.0))
                counters[key] += sample.value
            elif (sample.name == SUMMARY and sample.labels.get("quantile") == "0.99"
                  and math.isfinite(sample.value)):
                p99[model] = max(p99.get(model, 0.0), sample.value / 1000.0)
    return {m: Snapshot(**values.get(m, {}), p99_ms=p99.get(m)) for m in values.keys() | p99.keys()}


def parse(text: str, model: str) -> Snapshot:
    """The counters of `model` (all its versions) in a Triton /metrics exposition."""
    return parse_models(text).get(model, Snapshot())
