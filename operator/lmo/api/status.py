"""status: conditions, versions, rollout and experiment as the operator writes them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from lmo.api.base import _Model
from lmo.api.enums import ExperimentPhase, Phase, RolloutPhase


class Condition(_Model):
    """metav1.Condition."""

    type: str = Field(description="Converted, Deployed, Routed or Ready.")
    status: str = Field(description="True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = Field(description="CamelCase reason for the condition's last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )


class EvaluationStatus(_Model):
    source: str = Field(
        description="The evaluation data scored: its uri, or builtin (the built-in English "
        "sentences)."
    )
    sha256: str = Field(description="sha256 of the evaluation file (or of the built-in texts).")
    records: int = Field(description="Records used (after limit).")
    heldout: int = Field(description="Records the accuracy gate scored.")
    calibration: int = Field(description="Records that calibrated int8-static (disjoint).")


class ArtifactStatus(_Model):
    uri: str = Field(description="Where the Triton model repository and its manifest live.")
    sha256: str | None = Field(default=None, description="Digest of the artifact manifest.")
    precision: str | None = Field(default=None, description="Precision actually produced.")
    size_bytes: int | None = Field(default=None, description="Size of the model files.")
    score: float | None = Field(default=None, description="Measured fidelity score.")
    key: str | None = Field(
        default=None, description="Content key: checkpoint + settings + converter version."
    )
    entry_model: str | None = Field(
        default=None, description="Triton model clients call (the golden replay calls it too)."
    )
    shared_memory_bytes: int | None = Field(
        default=None,
        description="The most the served models pass through /dev/shm at once when it can "
        "exceed the default 1Gi (the KV cache of a decoder called through BLS): the pod's "
        "/dev/shm is sized to it.",
    )
    golden_inputs: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None,
        max_length=8,
        description="Golden inputs recorded at conversion (at most 8, each cut to 200 "
        "characters). A rollout with analysis.maxOutputDrift replays them against this "
        "version and the stable one; an artifact without them fails that check.",
    )
    evaluation: EvaluationStatus | None = Field(
        default=None,
        description="The data the accuracy gate scored on (spec.versions[].optimize."
        "evaluation, or the built-in sentences): digest and records used.",
    )


class VersionStatus(_Model):
    name: str = Field(description="Version name.")
    phase: Phase = Field(default=Phase.PENDING, description="Where this version is.")
    artifact: ArtifactStatus | None = Field(
        default=None, description="The artifact this version serves (or will serve)."
    )
    traffic: int = Field(default=0, description="Percent of requests routed to it now.")
    replicas: int = Field(default=0, description="Triton replicas.")
    ready_replicas: int = Field(default=0, description="Triton replicas that are ready.")
    serving_key: str | None = Field(
        default=None,
        description="Content key of the artifact every Triton pod of this version serves: "
        "set once its Deployment finished rolling out to that artifact, empty while pods "
        "of another artifact remain. A rollout counts the version ready only for it.",
    )
    message: str = Field(default="", description="Why it is in this phase.")


class RolloutStatus(_Model):
    phase: RolloutPhase = Field(default=RolloutPhase.IDLE, description="Rollout state.")
    step: int = Field(default=0, description="Index into spec.rollout.steps (0-based).")
    candidate: str | None = Field(default=None, description="Version being rolled out.")
    stable: str | None = Field(default=None, description="Version serving before it.")
    previous: str | None = Field(
        default=None,
        description="After a Succeeded rollout: the version that was stable before it "
        "(where `lmo rollback` goes back to).",
    )
    step_started_at: str | None = Field(default=None, description="When the step began.")
    inconclusive: int = Field(default=0, description="Consecutive holds for lack of traffic.")
    spec_hash: str | None = Field(
        default=None, description="Hash of the spec the rollout (or rollback) was decided on."
    )
    last_analysis: dict[str, Any] | None = Field(
        default=None,
        description="Measurements and verdict of the last analysis.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    message: str = Field(default="", description="Human-readable details.")


class ExperimentArm(_Model):
    version: str = Field(description="Version name.")
    samples: float = Field(default=0, description="Outcomes counted for it (trials).")
    successes: float = Field(
        default=0, description="Successes among them (with scores: the sum of the scores)."
    )
    rate: float = Field(default=0, description="successes / samples (0 without samples).")


class ExperimentStatus(_Model):
    phase: ExperimentPhase = Field(
        default=ExperimentPhase.RUNNING,
        description="Running (collecting, or the interval still contains 0), Decided (the "
        "interval excludes 0: winner is set) or Inconclusive (maxSamples or maxDuration "
        "reached undecided).",
    )
    baseline: str | None = Field(default=None, description="The version compared against.")
    candidate: str | None = Field(default=None, description="The version being tested.")
    arms: list[ExperimentArm] = Field(
        default_factory=list, description="Baseline first, then candidate."
    )
    lift: float | None = Field(
        default=None,
        description="candidate rate - baseline rate (absolute, in rate units: 0.02 is two "
        "percentage points).",
    )
    relative_lift: float | None = Field(
        default=None, description="lift / baseline rate (unset while the baseline rate is 0)."
    )
    interval: list[float] | None = Field(
        default=None,
        max_length=2,
        description="[lo, hi]: always-valid confidence interval of the lift at "
        "rollout.experiment.confidence.",
    )
    p_value: float | None = Field(
        default=None,
        description="Always-valid p-value of 'no difference' (the running minimum of the "
        "mixture SPRT's 1 / likelihood ratio); Decided once it is below 1 - confidence.",
    )
    winner: str | None = Field(default=None, description="The better version once Decided.")
    started_at: str | None = Field(default=None, description="When the experiment started.")
    decided_at: str | None = Field(
        default=None, description="When it became Decided or Inconclusive."
    )
    spec_hash: str | None = Field(
        default=None, description="Hash of the arms and settings the experiment runs on."
    )
    message: str = Field(default="", description="Human-readable details.")


class LanguageModelStatus(_Model):
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Converted, Deployed, Routed, Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    endpoint: str | None = Field(
        default=None, description="The clients' base URL: OpenAI-compatible at <endpoint>/v1, "
        "the text API at <endpoint>/v1/<task>, KServe v2 at <endpoint>/v2.")
    versions: list[VersionStatus] = Field(default_factory=list, description="Per version.")
    rollout: RolloutStatus | None = Field(default=None, description="Automated rollout state.")
    experiment: ExperimentStatus | None = Field(
        default=None, description="The running or last Experiment's statistics and verdict."
    )
    traffic_summary: str | None = Field(
        default=None, description="Routed traffic, e.g. v1=90,v2=10 (printer column)."
    )
    ready_versions: str | None = Field(
        default=None, description="Ready versions over all versions, e.g. 2/2 (printer column)."
    )
