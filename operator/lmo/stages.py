"""The stages of one reconcile pass, as functions over immutable values.

    observe(...)      children, Secrets, Job messages, old status  -> Observed
    step(...)         decide, measure (I/O passed in), decide        -> rollout.Decision
    plan(...)         Observed + Decision                            -> [VersionPlan], routed
    build_children    (lmo.builders)                                 -> desired manifests
    assess(...)       Observed + desired + children                  -> Observed (ready, phases)
    status_from(...)  Observed + routed + Decision + refusals        -> status dict
    events_from(...)  old status + Observed + Decision               -> Events to post

Everything here is pure (no API server, no clock of its own): `lmo.reconcile.Reconciler`
reads the cluster, runs these in order, applies and prunes children and writes what
`status_from` returns. Each stage has its own tests (tests/operator/test_stages.py).

Per version:

* The desired artifact is `conversion_request(spec, version).key()`. It is available when
  `status.versions[].artifact.key` already equals it, or when the conversion Job for that
  key succeeded and its pod's termination message holds an accepted `Manifest`. Until then
  the Job is desired (`VersionPlan.convert`).
* A refused manifest (accuracy gate, digest mismatch) or a failed Job makes the version
  Failed with the reason; the Deployment keeps serving the last good artifact recorded in
  status. The failure message names the key (`conversion <key8> refused: ...`), so once the
  Job has been garbage-collected after its TTL the same request is not converted again.
* A `checkpoint.secretRef` (or the artifact store's Secret) naming a missing Secret blocks
  the version: none of its children is applied or deleted until the Secret exists, and the
  condition names the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lmo import conditions as C
from lmo import labels as L
from lmo import observe as O
from lmo import rollout as R
from lmo.api import (
    ExperimentStatus,
    LanguageModel,
    LanguageModelSpec,
    Phase,
    RolloutStatus,
    RoutingProvider,
)
from lmo.builders import VersionPlan, artifact_uri, child_name, conversion_request, endpoint
from lmo.builders.conversion import job_name
from lmo.builders.traffic import routed as routed_plans
from lmo.builders.traffic import service_replicas
from lmo.conditions import NORMAL, WARNING, Reason
from lmo.diff import is_subset
from lmo.settings import OperatorSettings
from lmo_runtime.manifest import ConversionRequest


@dataclass(frozen=True)
class VersionState:
    """What is known of one version in this pass (never mutated: stages make new ones)."""

    name: str
    request: ConversionRequest  # what the version's spec asks to convert
    key: str  # its content key (request.key(), computed once)
    uri: str  # where the desired artifact lives (or will)
    phase: str = Phase.PENDING.value
    message: str = ""
    failure_reason: str | None = None  # Reason.* when the version is Failed
    available: bool = False  # desired artifact accepted and recorded
    artifact: dict | None = None  # status.versions[].artifact (the served artifact)
    serve_uri: str | None = None
    convert: bool = False  # its conversion Job is desired
    blocked: bool = False  # a Secret is missing: leave its children alone
    replicas: int = 0
    ready_replicas: int = 0
    deployment_ready: bool = False  # its Deployment has ready pods (`observe.deployment_ready`)
    ready: bool = False  # ... of the Deployment lmo wants now (`assess`)
    deadline_exceeded: bool = False
    serving_key: str | None = None  # the artifact every pod of its Deployment serves
    desired_replicas: int | None = None  # the Deployment's spec.replicas (its autoscaler's)

    def failed(self, reason: str, message: str) -> VersionState:
        return dataclasses.replace(self, phase=Phase.FAILED.value, message=message, failure_reason=reason)


@dataclass(frozen=True)
class Observed:
    """The cluster as one pass found it, per spec version (in spec order)."""

    versions: tuple[VersionState, ...]
    old_status: Mapping[str, Any]
    # what keeps the route from serving although every version may be fine (a missing
    # API-key Secret: the gateway refuses every request then), each with its fix
    route_problems: tuple[str, ...] = ()

    def version(self, name: str) -> VersionState | None:
        return next((v for v in self.versions if v.name == name), None)

    def replace(self, versions: list[VersionState] | tuple[VersionState, ...]) -> Observed:
        return dataclasses.replace(self, versions=tuple(versions))


# ---------------------------------------------------------------------- observe


def jobs_to_read(lm: LanguageModel, store: str, children: Mapping, old_status: Mapping) -> list[str]:
    """Finished conversion Jobs whose pods' termination messages `observe` needs: the
    outcome of a conversion whose artifact status does not record yet."""
    old = {v.get("name"): v for v in old_status.get("versions") or []}
    out = []
    for v in lm.spec.versions:
        key = conversion_request(lm.spec, v).key()
        if ((old.get(v.name) or {}).get("artifact") or {}).get("key") == key:
            continue
        jname = job_name(lm.metadata.name, v.name, key)
        job = children.get(("Job", jname))
        if job is not None and O.job_state(job) != "running":
            out.append(jname)
    return out


def observe(
    lm: LanguageModel,
    store: str,
    store_secret: str | None,
    children: Mapping[tuple[str, str], dict],
    secrets: Mapping[str, bool],
    messages: Mapping[str, list[str]],
    old_status: Mapping[str, Any],
) -> Observed:
    """Each version's conversion and serving facts from its owned children.

    `secrets`: whether each referenced Secret exists; `messages`: termination messages of
    the Jobs `jobs_to_read` named.
    """
    spec, name = lm.spec, lm.metadata.name
    namespace = lm.metadata.namespace or "default"
    old_versions = {v.get("name"): v for v in old_status.get("versions") or []}
    states = []
    for i, v in enumerate(spec.versions):
        request = conversion_request(spec, v)
        key = request.key()
        old = old_versions.get(v.name) or {}
        st = VersionState(name=v.name, request=request, key=key, uri=artifact_uri(store, key),
                          artifact=old.get("artifact") or None)
        last_good = st.artifact.get("uri") if st.artifact else None
        if store_secret and not secrets.get(store_secret, False):
            # Jobs and Triton init containers read the store with it: nothing can start
            where = ("spec.artifacts.secretRef.name" if spec.artifacts is not None
                     else "the operator's artifact store Secret (Helm value artifactStore.secret)")
            st = dataclasses.replace(st, blocked=True, serve_uri=last_good).failed(
                Reason.SECRET_MISSING,
                f"{where}: Secret {store_secret!r} not found in namespace {namespace!r}; create "
                f"it there (kubectl create secret generic {store_secret} -n {namespace} ...) "
                "with the store's credentials",
            )
        elif v.checkpoint.secret_ref and not secrets.get(v.checkpoint.secret_ref.name, False):
            sname = v.checkpoint.secret_ref.name
            st = dataclasses.replace(st, blocked=True, serve_uri=last_good).failed(
                Reason.SECRET_MISSING,
                f"spec.versions[{i}].checkpoint.secretRef.name: Secret {sname!r} not found in "
                f"namespace {namespace!r}; create it (kubectl create secret generic {sname} "
                f"-n {namespace} ...) or remove secretRef",
            )
        else:
            st = _conversion(st, name, old, children, messages)
            st = dataclasses.replace(st, serve_uri=st.uri if st.available else last_good)
        states.append(_deployment(st, children.get(("Deployment", child_name(name, v.name))), old))
    return Observed(versions=tuple(states), old_status=old_status,
                    route_problems=_route_problems(lm, secrets))


def _route_problems(lm: LanguageModel, secrets: Mapping[str, bool]) -> tuple[str, ...]:
    p = lm.spec.protection
    if p is None or p.auth is None:
        return ()
    sname = p.auth.api_keys.secret_ref.name
    if secrets.get(sname, False):
        return ()
    namespace = lm.metadata.namespace or "default"
    return (
        f"spec.protection.auth.apiKeys.secretRef.name: Secret {sname!r} not found in namespace "
        f"{namespace!r}; create it, one data key per client id with its API key as the value "
        f"(kubectl create secret generic {sname} -n {namespace} --from-literal=<client>=<key>); "
        "until then the gateway refuses every request",
    )


def _conversion(st: VersionState, lm_name: str, old: dict, children: Mapping,
                messages: Mapping[str, list[str]]) -> VersionState:
    """Is the desired artifact available, being built, or refused?"""
    if st.artifact and st.artifact.get("key") == st.key:
        return dataclasses.replace(st, available=True)
    jname = job_name(lm_name, st.name, st.key)
    job = children.get(("Job", jname))
    marker = f"conversion {st.key[:8]} "
    running = dataclasses.replace(st, convert=True, phase=Phase.CONVERTING.value,
                                  message=f"conversion Job {jname} running")
    if job is None:
        if old.get("phase") == Phase.FAILED.value and marker in (old.get("message") or ""):
            # refused before and its Job is gone (TTL): do not convert the same request again
            reason = Reason.CONVERSION_REFUSED if "refused" in old["message"] else Reason.CONVERSION_FAILED
            return st.failed(reason, old["message"])
        return running  # created by this pass: the same state as a running Job
    state = O.job_state(job)
    if state == "running":
        return running
    st = dataclasses.replace(st, convert=True)  # keep the Job (its log, no second attempt)
    found = list(messages.get(jname) or [])
    outcome = O.conversion_outcome(found, st.uri, st.key)
    if state == "succeeded" and outcome is not None and outcome[0]:
        return dataclasses.replace(st, available=True, convert=False, artifact=_prune_none(outcome[2]))
    if outcome is not None and not outcome[0]:
        return st.failed(Reason.CONVERSION_REFUSED, f"{marker}refused: {outcome[1]}")
    if state == "succeeded":
        return st.failed(Reason.CONVERSION_FAILED,
                         f"{marker}failed: Job {jname} succeeded but left no manifest in its "
                         "termination message")
    detail = next((m for m in found if m.strip()), "") or O.job_failure_message(job)
    return st.failed(Reason.CONVERSION_FAILED, f"{marker}failed: {detail.strip()[-600:]}")


def _deployment(st: VersionState, dep: dict | None, old: dict) -> VersionState:
    """Observed readiness of what is being served."""
    if st.serve_uri is None or dep is None:
        return st
    ds = dep.get("status") or {}
    replicas = int(ds.get("replicas") or 0)
    wanted = (dep.get("spec") or {}).get("replicas")
    return dataclasses.replace(
        st,
        replicas=replicas,
        ready_replicas=int(ds.get("readyReplicas") or 0),
        deadline_exceeded=O.progress_deadline_exceeded(dep),
        serving_key=serving_key(dep, old),
        desired_replicas=int(wanted) if wanted is not None else replicas,
        deployment_ready=O.deployment_ready(dep),
    )


def serving_key(dep: dict, old: dict) -> str | None:
    """The artifact key every pod of Deployment `dep` serves, or None while pods of another
    artifact may remain.

    Known when the Deployment has finished rolling out (`observe.rolled_out`): then it is
    its template's key. A later roll that keeps the key (provider Service flips the pods'
    `lmo.dev/routed` label when a version gains or loses traffic; a serving setting) leaves
    pods of the same artifact behind, so the key recorded in `status.versions[].servingKey`
    stays valid while it equals the template's: otherwise a canary step would make its own
    candidate look unready and flap.
    """
    key = O.template_artifact_key(dep)
    if key is None:
        return None
    if O.rolled_out(dep) or old.get("servingKey") == key:
        return key
    return None


def observe_local(
    spec: LanguageModelSpec,
    servers: Mapping[str, tuple[str, str, dict, bool]],
    converting: set[str],
    old_status: Mapping[str, Any],
) -> Observed:
    """`lmo up`'s counterpart of `observe` and `assess`: one local Triton server per version
    plays its Deployment (one replica).

    `servers`: version -> (artifact URI, artifact key, status artifact, ready) of the server
    running it; `converting`: versions being converted now.
    """
    states = []
    for v in spec.versions:
        request = conversion_request(spec, v)
        server = servers.get(v.name)
        if v.name in converting or server is None:
            busy = v.name in converting
            states.append(VersionState(
                name=v.name, request=request, key=request.key(), uri="", convert=busy,
                phase=Phase.CONVERTING.value if busy else Phase.PENDING.value,
                message="converting the new checkpoint" if busy else "not started",
            ))
            continue
        uri, served, artifact, ready = server
        states.append(VersionState(
            name=v.name, request=request, key=request.key(), uri=uri, available=True, artifact=artifact, serve_uri=uri,
            serving_key=served, replicas=1, ready_replicas=int(ready), deployment_ready=ready,
            ready=ready, phase=Phase.READY.value if ready else Phase.DEPLOYING.value,
            message="" if ready else "Triton server not ready",
        ))
    return Observed(versions=tuple(states), old_status=old_status)


# ---------------------------------------------------------------------- step

Measure = Callable[[RolloutStatus], Awaitable[Any]]


def observations(observed: Observed) -> list[R.VersionObservation]:
    """What the rollout state machine sees of each version.

    A version counts as ready for the artifact all its pods serve, never for the one its
    spec asks for while older pods still answer: in the pass where a conversion finishes,
    the Deployment has not even been changed yet.
    """
    return [
        R.VersionObservation(
            name=st.name,
            ready=st.serve_uri is not None and st.serving_key is not None and st.deployment_ready,
            artifact_key=st.serving_key,
            replicas=st.desired_replicas,
        )
        for st in observed.versions
    ]


async def step(spec: LanguageModelSpec, observed: Observed, now: datetime,
               measure: Measure | None) -> R.Decision:
    """The rollout decision (Manual: the spec's weights): decide; when a step's hold elapsed
    or an early check is due, `measure` the candidate (an AnalysisResult) and decide again."""
    seen = observations(observed)
    raw = observed.old_status.get("rollout")
    current = RolloutStatus.model_validate(raw) if raw else None
    raw_exp = observed.old_status.get("experiment")
    exp = ExperimentStatus.model_validate(raw_exp) if raw_exp else None
    decision = R.decide(spec, current, seen, now, experiment=exp)
    if decision.analyse and decision.rollout is not None and measure is not None:
        result = await measure(decision.rollout)
        decision = R.decide(spec, current, seen, now, analysis=result, experiment=exp)
    return decision


# ---------------------------------------------------------------------- plan


def plan(lm: LanguageModel, observed: Observed, decision: R.Decision) -> tuple[list[VersionPlan], dict[str, int]]:
    """One VersionPlan per version, and the traffic really routed (percent per version).

    Only versions with something to serve are routed; HTTPRoute weights are relative, so
    the shares are normalised to 100. With provider Service (no autoscaling) a version's
    share is its share of the pods behind the one Service.
    """
    spec = lm.spec
    routable = {st.name: decision.traffic.get(st.name, 0)
                for st in observed.versions if st.serve_uri is not None}
    routed = normalise(routable)
    plans = [
        VersionPlan(
            name=st.name,
            request=st.request,
            artifact_uri=st.uri,
            convert=st.convert,
            serve_uri=st.serve_uri,
            traffic=routable.get(st.name, 0),
            bounds=decision.bounds.get(st.name),
            shared_memory_bytes=(st.artifact or {}).get("sharedMemoryBytes")
            if st.artifact and st.artifact.get("uri") == st.serve_uri else None,
        )
        for st in observed.versions
    ]
    if spec.routing.provider == RoutingProvider.SERVICE.value and spec.autoscaling is None:
        active = {p.name for p in routed_plans(plans)}
        pods = service_replicas(lm, plans)
        routed = normalise({n: c for n, c in pods.items() if n in active})
    return plans, routed


def normalise(weights: dict[str, int]) -> dict[str, int]:
    """Relative weights as percentages summing to 100 (largest remainder, ties in order)."""
    total = sum(weights.values())
    if total <= 0:
        return {k: 0 for k in weights}
    share = {k: w * 100 // total for k, w in weights.items()}
    left = 100 - sum(share.values())
    order = sorted(weights, key=lambda k: -(weights[k] * 100 % total))
    for k in order[:left]:
        share[k] += 1
    return share


def frozen(observed: Observed, obj: dict) -> bool:
    """A child of a blocked version: neither applied nor deleted this pass."""
    blocked = {st.name for st in observed.versions if st.blocked}
    return (obj.get("metadata", {}).get("labels") or {}).get(L.VERSION) in blocked


# ---------------------------------------------------------------------- assess


def assess(observed: Observed, lm_name: str, desired: list[dict], children: Mapping) -> Observed:
    """Readiness against the Deployment lmo wants now (not an older template), then each
    version's phase and message."""
    deployments = {o["metadata"]["name"]: o for o in desired if o["kind"] == "Deployment"}
    out = []
    for st in observed.versions:
        obj = deployments.get(child_name(lm_name, st.name))
        if obj is not None:
            seen = children.get(("Deployment", obj["metadata"]["name"]))
            want = obj.get("spec", {}).get("replicas", 1)
            ready = (
                seen is not None
                and (frozen(observed, obj) or (is_subset(obj, seen) and st.serving_key == st.key))
                and O.deployment_ready(seen)
                and st.ready_replicas >= want
            )
            st = dataclasses.replace(st, ready=ready)
        out.append(_phase(st, lm_name))
    return observed.replace(out)


def _phase(st: VersionState, lm_name: str) -> VersionState:
    if st.phase == Phase.FAILED.value or not st.available:
        return st  # Failed, or Pending / Converting as observed
    if st.deadline_exceeded:
        return st.failed(
            Reason.PROGRESS_DEADLINE_EXCEEDED,
            f"Deployment {child_name(lm_name, st.name)} exceeded its progress deadline (image "
            "pull, GPU scheduling or model load failing?)",
        )
    if st.ready:
        return dataclasses.replace(st, phase=Phase.READY.value, message="")
    return dataclasses.replace(st, phase=Phase.DEPLOYING.value,
                               message=f"{st.ready_replicas}/{max(st.replicas, 1)} Triton replicas ready")


# ---------------------------------------------------------------------- status


def status_from(
    lm: LanguageModel,
    settings: OperatorSettings,
    observed: Observed,
    routed: dict[str, int],
    decision: R.Decision,
    refused: list[tuple[str, str]],
    generation: int | None,
    now: datetime,
) -> dict:
    """The status to write: conditions Converted, Deployed, Routed and the aggregate Ready;
    per version phase, artifact, traffic really routed, replicas; the rollout's state.

    `refused`: (kind, why) of children the API server refused (ApplyRefused conditions).
    """
    states = observed.versions
    summary = ",".join(f"{s.name}={routed.get(s.name, 0)}" for s in states)
    status: dict[str, Any] = {
        "conditions": _conditions(observed, routed, decision, refused, summary, generation, now),
        "endpoint": endpoint(lm, settings),
        "versions": [_version_status(st, routed) for st in states],
        "trafficSummary": summary,
        "readyVersions": f"{sum(1 for s in states if s.phase == Phase.READY.value)}/{len(states)}",
    }
    if generation is not None:
        status["observedGeneration"] = generation
    if decision.rollout is not None:
        status["rollout"] = decision.rollout.to_dict()
    if decision.experiment is not None:
        status["experiment"] = decision.experiment.to_dict()
    return _prune_none(status)


def _conditions(
    observed: Observed, routed: dict[str, int], decision: R.Decision,
    refused: list[tuple[str, str]], summary: str, gen: int | None, now: datetime,
) -> list[dict]:
    """Converted, Deployed, Routed and the aggregate Ready (see `status_from`)."""
    states = observed.versions
    conds = list(observed.old_status.get("conditions") or [])

    failed = [s for s in states if s.failure_reason and s.failure_reason != Reason.PROGRESS_DEADLINE_EXCEEDED]
    missing = [s for s in states if not s.available and not s.failure_reason]
    if failed:
        msg = "; ".join(f"{s.name}: {s.message}" for s in failed)
        conds = C.set_condition(conds, C.CONVERTED, C.FALSE, failed[0].failure_reason, msg, gen, now)
    elif missing:
        msg = "converting " + ", ".join(s.name for s in missing)
        conds = C.set_condition(conds, C.CONVERTED, C.FALSE, Reason.CONVERTING, msg, gen, now)
    else:
        conds = C.set_condition(conds, C.CONVERTED, C.TRUE, Reason.CONVERTED,
                                f"{len(states)} version(s) converted", gen, now)

    stuck = [s for s in states if s.deadline_exceeded]
    waiting = [s for s in states if s.serve_uri is None or not s.ready]
    if stuck:
        msg = "; ".join(f"{s.name}: {s.message}" for s in stuck)
        conds = C.set_condition(conds, C.DEPLOYED, C.FALSE, Reason.PROGRESS_DEADLINE_EXCEEDED, msg, gen, now)
    elif waiting:
        msg = "waiting for " + ", ".join(
            f"{s.name} ({'no artifact yet' if s.serve_uri is None else f'{s.ready_replicas} ready'})"
            for s in waiting
        )
        conds = C.set_condition(conds, C.DEPLOYED, C.FALSE, Reason.DEPLOYING, msg, gen, now)
    else:
        conds = C.set_condition(conds, C.DEPLOYED, C.TRUE, Reason.DEPLOYED,
                                "every version has ready replicas", gen, now)

    unroutable = [n for n, w in decision.traffic.items() if w > 0 and n not in routed]
    if unroutable:
        conds = C.set_condition(conds, C.ROUTED, C.FALSE, Reason.ROUTE_PENDING,
                                f"no Deployment yet for {', '.join(unroutable)}; routing {summary}", gen, now)
    else:
        conds = C.set_condition(conds, C.ROUTED, C.TRUE, Reason.ROUTED, f"routing {summary}", gen, now)
    if observed.route_problems:
        conds = C.set_condition(conds, C.ROUTED, C.FALSE, Reason.SECRET_MISSING,
                                "; ".join(observed.route_problems), gen, now)
    for type_, kinds in ((C.ROUTED, {"HTTPRoute"}), (C.DEPLOYED, None)):
        why = [w for k, w in refused if (k in kinds if kinds else k != "HTTPRoute")]
        if why:
            conds = C.set_condition(conds, type_, C.FALSE, Reason.APPLY_REFUSED, "; ".join(why), gen, now)
    return C.aggregate_ready(conds, gen, now)


def _version_status(st: VersionState, routed: dict[str, int]) -> dict[str, Any]:
    """One status.versions[] entry: phase, the traffic really routed, replicas, artifact."""
    vs: dict[str, Any] = {
        "name": st.name,
        "phase": st.phase,
        "traffic": routed.get(st.name, 0),
        "replicas": st.replicas,
        "readyReplicas": st.ready_replicas,
        "message": st.message,
    }
    if st.serving_key:
        vs["servingKey"] = st.serving_key
    if st.artifact:
        vs["artifact"] = st.artifact
    return vs


def invalid_status(old_status: Mapping[str, Any], message: str, reason: str,
                   generation: int | None, now: datetime) -> dict:
    """Ready=False naming the field (InvalidSpec, or NotServable); the rest left as it was."""
    conds = C.set_condition(list(old_status.get("conditions") or []), C.READY, C.FALSE,
                            reason, message, generation, now)
    status = dict(old_status, conditions=conds)
    if generation is not None:
        status["observedGeneration"] = generation
    return _prune_none(status)


# ---------------------------------------------------------------------- events


def events_from(observed: Observed, status: dict, decision: R.Decision) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events a person should see from this pass: a version
    newly Failed (or for a new reason), newly Ready, the rollout's own, and a child newly
    refused by the API server — not the same again on every pass."""
    old_versions = {v.get("name"): v for v in observed.old_status.get("versions") or []}
    out: list[tuple[str, str, str]] = []
    for st in observed.versions:
        old = old_versions.get(st.name) or {}
        if st.phase == Phase.FAILED.value and (
            old.get("phase") != Phase.FAILED.value or old.get("message") != st.message
        ):
            out.append((WARNING, st.failure_reason or Reason.NOT_READY, f"{st.name}: {st.message}"))
        elif st.phase == Phase.READY.value and old.get("phase") != Phase.READY.value:
            key = (st.artifact or {}).get("key", "")[:8]
            out.append((NORMAL, Reason.VERSION_READY,
                        f"version {st.name} is ready ({st.ready_replicas} replica(s), artifact {key})"))
    out.extend(decision.events)
    old_conds = observed.old_status.get("conditions") or []
    for type_ in (C.ROUTED, C.DEPLOYED):
        c = C.get_condition(status["conditions"], type_) or {}
        if c.get("reason") != Reason.APPLY_REFUSED:
            continue
        before = C.get_condition(old_conds, type_) or {}
        if before.get("reason") != c["reason"] or before.get("message") != c.get("message"):
            out.append((WARNING, Reason.APPLY_REFUSED, c.get("message", "")))
    return out


def _prune_none(value: Any) -> Any:
    """Drop None values recursively: the server never stores nulls, so keep them out of the
    comparison with the observed status."""
    if isinstance(value, dict):
        return {k: _prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_none(v) for v in value]
    return value
