"""Reading observed children into facts (pure: plain dicts in, plain values out).

The reconciler lists a LanguageModel's children once per pass; these functions interpret
them: whether a conversion Job finished and what the converter reported, whether a
Deployment serves ready pods or is stuck. Naming follows STYLE.md: observe_* and friends
read, they never write.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from lmo import labels as L
from lmo_runtime.manifest import EvaluationRecord, Manifest, bounded_golden_inputs


def controlled_by(obj: dict, uid: str) -> bool:
    """Whether `obj` has a controller ownerReference to the object with `uid`."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def job_state(job: dict) -> str:
    """succeeded | failed | running for a batch/v1 Job."""
    status = job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    if (conds.get("Complete") or {}).get("status") == "True" or (status.get("succeeded") or 0) > 0:
        return "succeeded"
    if (conds.get("Failed") or {}).get("status") == "True":
        return "failed"
    return "running"


def job_failure_message(job: dict) -> str:
    """The Job controller's explanation of a failed Job (e.g. BackoffLimitExceeded)."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return c.get("message") or c.get("reason") or "the conversion Job failed"
    return "the conversion Job failed"


def conversion_outcome(messages: list[str], uri: str, key: str) -> tuple[bool, str, dict | None] | None:
    """(accepted, reason, status artifact) from the converter's termination message.

    `lmo convert --manifest-out /dev/termination-log` writes a compact JSON summary of the
    Manifest (camelCase: key, accepted, precision, sha256, sizeBytes, score, entryModel,
    goldenInputs, reason) or, on bad input, just `{"accepted": false, "reason": ...}`; a full
    Manifest is read too. None when no message holds either. The artifact keeps the entry
    model and the golden inputs (bounded) for the rollout's golden replay.
    """
    for text in messages:
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if not isinstance(data, dict) or "accepted" not in data:
            continue
        if "request" in data:
            try:
                m = Manifest.model_validate(data)
            except ValidationError:
                continue
            return m.accepted, m.reason, m.summary(uri) if m.accepted else None
        accepted = bool(data["accepted"])
        if accepted and data.get("key") not in (None, key):
            return False, f"the converter reported artifact {data['key'][:8]}, not {key[:8]}", None
        artifact = {
            "uri": uri,
            "sha256": data.get("sha256"),
            "precision": data.get("precision"),
            "sizeBytes": data.get("sizeBytes"),
            "score": data.get("score"),
            "key": key,
        }
        if isinstance(data.get("entryModel"), str) and data["entryModel"]:
            artifact["entryModel"] = data["entryModel"]
        inputs = bounded_golden_inputs(data.get("goldenInputs"))
        if inputs:
            artifact["goldenInputs"] = inputs
        shm = data.get("sharedMemoryBytes")
        if isinstance(shm, int) and shm > 0:
            artifact["sharedMemoryBytes"] = shm
        try:  # which data the gate scored on (absent from older converters' summaries)
            artifact["evaluation"] = EvaluationRecord.model_validate(
                data["evaluation"]).summary()
        except (KeyError, ValidationError):
            pass
        return accepted, str(data.get("reason") or ""), artifact if accepted else None
    return None


def deployment_ready(dep: dict | None) -> bool:
    """A Deployment with ready pods, of its latest spec or not.

    Which artifact those pods serve is `stages.serving_key`'s question (a new template's
    pods are not counted as serving its artifact until the roll is over). A spec change
    its controller has not observed yet leaves the ready pods serving: the HPA scaling a
    canary's candidate when its share changes moves `generation` ahead of
    `observedGeneration` for a moment (seconds while the controller manager catches up
    after an etcd outage), and reading that as "no ready pods" pulled the candidate's
    traffic and took its step again.
    """
    if dep is None:
        return False
    return int((dep.get("status") or {}).get("readyReplicas") or 0) >= 1


def template_artifact_key(dep: dict | None) -> str | None:
    """The artifact key in the Deployment's pod template (what its newest pods serve)."""
    template = ((dep or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(L.ARTIFACT_KEY) or None


def rolled_out(dep: dict | None) -> bool:
    """Every pod of the Deployment runs its current template: the controller has seen the
    latest spec and no pod of an older ReplicaSet is left (updatedReplicas == replicas).

    Pods of an older template keep serving (and count in readyReplicas) while new ones
    start, so readyReplicas alone does not say which template, hence which artifact, the
    ready pods serve.
    """
    if dep is None:
        return False
    status = dep.get("status") or {}
    gen = dep.get("metadata", {}).get("generation")
    seen = status.get("observedGeneration")
    if gen is not None and (seen is None or seen < gen):
        return False
    return int(status.get("updatedReplicas") or 0) == int(status.get("replicas") or 0)


def progress_deadline_exceeded(dep: dict | None) -> bool:
    """The Deployment controller gave up waiting for new pods (Progressing=False)."""
    for c in ((dep or {}).get("status") or {}).get("conditions") or []:
        if (
            c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
        ):
            return True
    return False
