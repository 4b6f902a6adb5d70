"""The numbers a rollout judges, read straight from a Triton server's /metrics.

On the cluster `lmo.analysis` asks Prometheus for rates over a step; locally there is no
Prometheus, so `lmo up` takes a snapshot of the candidate's counters when a step starts
and another when it is judged, and the difference gives the same quantities: requests,
error rate, mean latency and mean queue time of the entry model.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from lmo.decide.vocabulary import VersionMetrics

_COUNTERS = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_request_duration_us": "duration_us",
    "nv_inference_queue_duration_us": "queue_us",
}


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters of one model on one server."""

    success: float = 0.0
    failure: float = 0.0
    duration_us: float = 0.0
    queue_us: float = 0.0

    def __sub__(self, earlier: "Snapshot") -> "Snapshot":
        return Snapshot(
            self.success - earlier.success,
            self.failure - earlier.failure,
            self.duration_us - earlier.duration_us,
            self.queue_us - earlier.queue_us,
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
        """The same value the cluster measures with Prometheus (Triton's default metrics
        have no latency quantiles: the mean stands in for p99, as the API documents)."""
        return VersionMetrics(
            requests=self.requests,
            failures=self.failure,
            latency_ms=self.latency_mean_ms,
            latency_is_p99=False,
            queue_time_ms=self.queue_time_ms,
        )


def parse(text: str, model: str) -> Snapshot:
    """Sum the counters of `model` (all its versions) in a Prometheus text exposition."""
    values = dict.fromkeys(_COUNTERS.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = _COUNTERS.get(sample.name) or _COUNTERS.get(sample.name.removesuffix("_total"))
            if key and sample.labels.get("model") == model:
                values[key] += sample.value
    return Snapshot(**values)
