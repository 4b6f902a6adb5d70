"""spec.rollout: strategy, steps, analysis gates and the A/B experiment's settings."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from lmo.api.base import DURATION, Rule, _cel, _cel_rules, _Model, cel_rules, rules_validator
from lmo.api.enums import OnDecision, Strategy


_GATE_BOUNDS = "analysis.metrics[]: set max, min or maxIncreaseOverStable (a gate needs a bound)"
_GATE_ORDER = "analysis.metrics[]: min must not exceed max"


_GATE_RULES = (
    Rule("has(self.max) || has(self.min) || has(self.maxIncreaseOverStable)", _GATE_BOUNDS, None,
         lambda g: g.max is None and g.min is None and g.max_increase_over_stable is None
         and f" (gate {g.name!r})"),
    Rule("!has(self.max) || !has(self.min) || self.min <= self.max", _GATE_ORDER, ".min",
         lambda g: g.max is not None and g.min is not None and g.min > g.max
         and f" (gate {g.name!r}: min {g.min} > max {g.max})"),
)


class MetricGate(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_GATE_RULES))

    name: str = Field(
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        max_length=63,
        description="Name of the gate, as it appears in status.rollout.lastAnalysis and in "
        "the reasons of a pass or a failure (e.g. toxicity).",
    )
    query: str = Field(
        min_length=1,
        max_length=4096,
        description="PromQL returning one number per version; {{version}}, {{namespace}}, "
        "{{name}} and {{window}} (the analysed window, e.g. 120s) are filled in. Judged for "
        "the candidate, and for the stable version when maxIncreaseOverStable is set.",
    )
    max: float | None = Field(
        default=None, description="The candidate's value must be at most this."
    )
    min: float | None = Field(
        default=None, description="The candidate's value must be at least this."
    )
    max_increase_over_stable: float | None = Field(
        default=None,
        ge=0,
        description="The candidate's value may exceed the stable version's value of the same "
        "query by at most this much (absolute, in the query's unit).",
    )

    _rules = rules_validator(_GATE_RULES)


class Analysis(_Model):
    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus base URL that scrapes the Triton pods, e.g. "
        "http://prometheus.monitoring:9090. Required for Canary and BlueGreen analysis.",
        pattern=r"^https?://.+",
    )
    max_error_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Highest accepted failure ratio (nv_inference_request_failure over "
        "all requests) of the candidate during a step.",
    )
    max_latency_p99_ms: float | None = Field(
        default=None,
        gt=0,
        description="Highest accepted p99 request latency in milliseconds (from Triton's "
        "latency summary, which lmo's Deployments enable; the mean latency when a server "
        "exports no quantiles).",
    )
    max_queue_time_ms: float | None = Field(
        default=None, gt=0, description="Highest accepted mean queue time in milliseconds."
    )
    max_output_drift: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Highest accepted drift (1 - agreement or 1 - cosine) between the "
        "candidate's and the stable version's answers to the golden inputs recorded at "
        "conversion.",
    )
    min_requests: int = Field(
        default=20,
        ge=0,
        description="Fewest candidate requests in a step needed to judge it; fewer holds "
        "the step (see inconclusiveLimit).",
    )
    inconclusive_limit: int = Field(
        default=3,
        ge=1,
        description="Consecutive holds for lack of traffic after which the rollout is "
        "rolled back.",
    )
    metrics: list[MetricGate] = Field(
        default_factory=list,
        max_length=16,
        description="Custom gates besides the built-in ones, each a PromQL query judged "
        "against max, min and/or maxIncreaseOverStable (Canary, BlueGreen and Experiment).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


_OUTCOME_PAIR = ("rollout.experiment.outcome: successQuery and totalQuery go together (set "
                 "both, or neither to count lmo's own feedback)")


_OUTCOME_EXCLUSIVE = ("rollout.experiment.outcome: feedback: true and successQuery/totalQuery "
                      "exclude each other; pick one")


_OUTCOME_NEEDS = ("rollout.experiment.outcome: feedback: false needs successQuery and "
                  "totalQuery")


_OUTCOME_RULES = (
    Rule("has(self.successQuery) == has(self.totalQuery)", _OUTCOME_PAIR, None,
         lambda o: (o.success_query is None) != (o.total_query is None)),
    Rule("!has(self.feedback) || !self.feedback || !has(self.successQuery)", _OUTCOME_EXCLUSIVE,
         None, lambda o: o.feedback is True and o.success_query is not None),
    Rule("!has(self.feedback) || self.feedback || has(self.successQuery)", _OUTCOME_NEEDS, None,
         lambda o: o.feedback is False and o.success_query is None),
)


class ExperimentOutcome(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_OUTCOME_RULES))

    feedback: bool | None = Field(
        default=None,
        description="Count lmo's own per-version feedback (POST /v1/feedback with the "
        "x-lmo-request-id of an answer): the default when no queries are set.",
    )
    success_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL for the successes of one version since the experiment started "
        "(or the sum of scores in [0, 1]); {{version}}, {{namespace}}, {{name}} and "
        "{{window}} are filled in, e.g. "
        "sum(increase(shop_orders_total{lmo_version=\"{{version}}\"}[{{window}}])).",
    )
    total_query: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="PromQL for the trials (samples) of one version since the experiment "
        "started, with the same placeholders as successQuery.",
    )

    _rules = rules_validator(_OUTCOME_RULES)

    @property
    def uses_feedback(self) -> bool:
        return self.success_query is None


_SAMPLES_ORDER = "rollout.experiment.maxSamples must be at least minSamples"


_EXPERIMENT_RULES = (
    Rule("!has(self.maxSamples) || self.maxSamples >= self.minSamples", _SAMPLES_ORDER,
         ".maxSamples",
         lambda e: e.max_samples is not None and e.max_samples < e.min_samples
         and f" (maxSamples {e.max_samples} < minSamples {e.min_samples})"),
)


class Experiment(_Model):
    model_config = ConfigDict(json_schema_extra=cel_rules(_EXPERIMENT_RULES))

    outcome: ExperimentOutcome = Field(
        default_factory=ExperimentOutcome,
        description="What counts as a success: lmo's feedback counts (default) or your own "
        "counters through successQuery and totalQuery.",
    )
    min_samples: int = Field(
        default=1000,
        ge=10,
        le=1_000_000_000,
        description="Samples (outcomes) each version needs before any decision; the "
        "sequential test is also tuned to be sharpest around this size.",
    )
    max_samples: int | None = Field(
        default=None,
        ge=10,
        description="Samples per version after which an undecided experiment ends "
        "Inconclusive (no limit when unset).",
    )
    max_duration: str | None = Field(
        default=None,
        pattern=DURATION,
        description="Time after which an undecided experiment ends Inconclusive, e.g. 72h "
        "(no limit when unset).",
    )
    confidence: float = Field(
        default=0.95,
        ge=0.8,
        le=0.999,
        description="Confidence of the always-valid interval: the chance of declaring a "
        "winner between equal versions, however often the numbers are looked at, stays "
        "below 1 - confidence.",
    )
    on_decision: OnDecision = Field(
        default=OnDecision.PROMOTE,
        description="Promote: the winner gets 100% of the traffic once Decided. Report: "
        "status.experiment says who won; the traffic stays as the spec says.",
    )

    _rules = rules_validator(_EXPERIMENT_RULES)


_STEPS_INCREASING = "rollout.steps must be strictly increasing, e.g. [10, 25, 50, 100]"


class Rollout(_Model):
    # a rule of one field: the CEL (for the API server) and the field validator below share
    # the message
    model_config = ConfigDict(
        json_schema_extra=_cel_rules(
            _cel(
                "self.steps.isSorted() && self.steps.all(s, self.steps.exists_one(t, t == s))",
                _STEPS_INCREASING,
                ".steps",
            ),
        )
    )
    strategy: Strategy = Field(
        default=Strategy.MANUAL,
        description="Manual: the versions' traffic fields are obeyed exactly. Canary: "
        "traffic moves to the newest version through `steps`, gated on Prometheus "
        "metrics and golden-output drift. BlueGreen: the newest version takes 100% at "
        "once after its checks pass. Experiment: the two versions with traffic keep the "
        "spec's weights while a sequential test compares their success rates "
        "(rollout.experiment); every stepDuration is one look, and the analysis gates "
        "still roll a failing candidate back.",
    )
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        min_length=1,
        max_length=20,
        description="Candidate traffic percentages, strictly increasing; the last step "
        "should be 100 (the candidate becomes stable).",
    )
    step_duration: str = Field(
        default="2m",
        pattern=DURATION,
        description="How long each step holds before it is analysed (e.g. 30s, 2m, 1h).",
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Gates that advance or roll back a step."
    )
    paused: bool = Field(default=False, description="Hold the rollout at its current step.")
    scale_down_delay: str = Field(
        default="10m",
        pattern=DURATION,
        description="BlueGreen: how long the previous version is kept for instant "
        "rollback after the switch.",
    )
    experiment: Experiment | None = Field(
        default=None,
        description="Experiment: how the two versions with traffic are compared (outcome, "
        "sample sizes, confidence, what happens on a decision). Defaults apply when unset.",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(_STEPS_INCREASING)
        return steps
