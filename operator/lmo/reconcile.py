"""Reconcile one LanguageModel: observe its children, decide, apply, write status.

`reconcile(body, kube, settings)` is level-based: it reads the resource and every child it
owns, works out what should exist (`lmo.builders.build_children` from one `VersionPlan` per
version), server-side applies what differs, deletes owned children no longer wanted, and
writes `status` (conditions Converted, Deployed, Routed, Ready; per-version phase, artifact,
traffic, replicas) only when it changed. Running it twice with nothing new makes no write.

Per version:

* The desired artifact is `lmo.builders.conversion_request(spec, version).key()`. It is
  available when `status.versions[].artifact.key` already equals it, or when the conversion
  Job for that key succeeded and its pod's termination message holds an accepted
  `Manifest`. Until then the Job is desired (`VersionPlan.convert`).
* A refused manifest (`accepted: false`: accuracy gate, digest mismatch) or a failed Job
  makes the version Failed with the reason; the Deployment keeps serving the last good
  artifact recorded in status (a failed conversion never touches the serving version).
  The failure message names the key (`conversion <key8> refused: ...`), so once the Job has
  been garbage-collected after its TTL the same request is not converted again; a new
  checkpoint, precision or gate is a new key and a new attempt.
* A `checkpoint.secretRef` naming a missing Secret blocks the version: none of its children
  is applied or deleted until the Secret exists, and the condition names the field.

Traffic comes from `lmo.rollout.decide` (Manual: the spec's weights; Canary/BlueGreen: the
state machine, with Prometheus analysis from `lmo.analysis` when a step's hold elapsed or an
early check is due). With `analysis.maxOutputDrift` the analysis also replays the
candidate artifact's golden inputs (`status.versions[].artifact.goldenInputs`, from its
conversion Job's summary) against the candidate's and the stable's Services
(`lmo.replay`); an artifact without them fails the step rather than pass it unchecked.
Only versions with a Deployment are routed; `status.versions[].traffic` is what the route
really sends: HTTPRoute weights are relative, so the shares of routed versions are
normalised to 100; with provider Service (no autoscaling) it is each version's share of the
pods behind the one Service (`lmo.builders.traffic.service_replicas`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from lmo import conditions as C
from lmo import labels as L
from lmo import observe as O
from lmo import rollout as R
from lmo.api import (
    API_VERSION,
    KIND,
    PLURAL,
    LanguageModel,
    Phase,
    RolloutStatus,
    RoutingProvider,
    SpecError,
    parse,
)
from lmo.builders import (
    CHILD_KINDS,
    Owner,
    VersionPlan,
    artifact_store,
    artifact_uri,
    build_children,
    child_name,
    conversion_request,
    endpoint,
)
from lmo.builders.conversion import job_name
from lmo.builders.traffic import routed as routed_plans
from lmo.builders.traffic import service_replicas
from lmo.builders.triton import HTTP_PORT
from lmo.conditions import Reason
from lmo.errors import UserError
from lmo.kube import Kube, KubeError, Ref, is_subset
from lmo.settings import OperatorSettings
from lmo_runtime.manifest import ENTRY_MODEL

log = logging.getLogger(__name__)

Kube.register_kinds(CHILD_KINDS)

# While a version converts or starts, look again this often (child events wake it sooner).
PROGRESS_REQUEUE_SECONDS = 10.0

NORMAL = "Normal"
WARNING = "Warning"


@dataclass
class Result:
    """What one reconcile did, for the caller's metrics, logs and scheduling."""

    outcome: str  # ready | progressing | failed | invalid
    ready: bool = False
    requeue_after: float | None = None
    applied: Counter = field(default_factory=Counter)
    deleted: int = 0
    status_written: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class _Version:
    """The reconciler's working state for one version."""

    index: int
    name: str
    key: str
    uri: str
    phase: str = Phase.PENDING.value
    message: str = ""
    failure_reason: str | None = None  # Reason.* when the version is Failed
    available: bool = False  # desired artifact accepted and recorded
    artifact: dict | None = None  # status.versions[].artifact (the served artifact)
    serve_uri: str | None = None
    convert: bool = False
    blocked: bool = False  # secret missing: leave its children alone
    replicas: int = 0
    ready_replicas: int = 0
    ready: bool = False
    deadline_exceeded: bool = False
    serving_key: str | None = None  # the artifact every pod of its Deployment serves
    desired_replicas: int | None = None  # the Deployment's spec.replicas (its autoscaler's)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _prune_none(value: Any) -> Any:
    """Drop None values recursively: the server never stores nulls, so keep them out of the
    comparison with the observed status."""
    if isinstance(value, dict):
        return {k: _prune_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_none(v) for v in value]
    return value


def _normalise(weights: dict[str, int]) -> dict[str, int]:
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


class Reconciler:
    """One reconcile pass over one LanguageModel (construct, then `await run()`)."""

    def __init__(
        self,
        body: dict,
        kube: Kube,
        settings: OperatorSettings,
        now: datetime | None = None,
        analyse: Callable[..., Any] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ):
        meta = body.get("metadata") or {}
        self.body = body
        self.kube = kube
        self.settings = settings
        self.now = now or _utcnow()
        self.analyse = analyse
        self.log = logger or log
        self.name: str = meta["name"]
        self.namespace: str = meta.get("namespace") or "default"
        self.uid: str = meta.get("uid") or ""
        self.generation: int | None = meta.get("generation")
        self.old_status: dict = dict(body.get("status") or {})
        self.ref = Ref(API_VERSION, KIND, self.namespace, self.name, self.uid)
        self.result = Result(outcome="progressing")
        self._replaced = False  # a Job was deleted to be re-created: look again soon
        self._refused: list[tuple[str, str]] = []  # (kind, why) children the server refused

    # ------------------------------------------------------------------ entry

    async def run(self) -> Result:
        try:
            lm = parse(
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self.body.get("spec") or {},
                }
            )
        except SpecError as err:
            await self._invalid(str(err))
            return self.result
        try:
            await self._reconcile(lm)
        except UserError as err:
            # valid for the API, but no child can be built from it with these settings
            # (a KEDA trigger without a Prometheus address, a file:// artifact store...):
            # raised while building, before any write, so nothing serving is touched
            await self._invalid(str(err), Reason.NOT_SERVABLE)
        return self.result

    # ------------------------------------------------------------------ invalid spec

    async def _invalid(self, message: str, reason: str = Reason.INVALID_SPEC) -> None:
        """Ready=False naming the field (InvalidSpec, or NotServable); no child is touched."""
        conds = list(self.old_status.get("conditions") or [])
        old_ready = C.get_condition(conds, C.READY) or {}
        conds = C.set_condition(conds, C.READY, C.FALSE, reason, message, self.generation, self.now)
        status = dict(self.old_status, conditions=conds)
        if self.generation is not None:
            status["observedGeneration"] = self.generation
        if old_ready.get("reason") != reason or old_ready.get("message") != message:
            await self._event(WARNING, reason, message)
        await self._write_status(status)
        self.result.outcome = "invalid"

    # ------------------------------------------------------------------ the pipeline

    async def _reconcile(self, lm: LanguageModel) -> None:
        spec = lm.spec
        owner = Owner(self.name, self.namespace, self.uid)
        store, store_secret = artifact_store(spec, self.settings)
        _check_buildable(lm, owner, self.settings, store)
        children = await self.kube.list_children(CHILD_KINDS, self.namespace, {L.MODEL: self.name})
        children = {k: o for k, o in children.items() if O.controlled_by(o, self.uid)}
        old_versions = {v.get("name"): v for v in self.old_status.get("versions") or []}

        secret_names = sorted(
            {v.checkpoint.secret_ref.name for v in spec.versions if v.checkpoint.secret_ref}
            | ({store_secret} if store_secret else set())
        )
        exists = await asyncio.gather(
            *(self.kube.secret_exists(self.namespace, s) for s in secret_names)
        )
        secrets = dict(zip(secret_names, exists))

        states: list[_Version] = []
        requests = {}
        for i, v in enumerate(spec.versions):
            request = conversion_request(spec, v)
            key = request.key()
            requests[v.name] = request
            st = _Version(index=i, name=v.name, key=key, uri=artifact_uri(store, key))
            old = old_versions.get(v.name) or {}
            st.artifact = old.get("artifact") or None
            last_good = st.artifact.get("uri") if st.artifact else None
            if store_secret and not secrets[store_secret]:
                # Jobs and Triton init containers read the store with it: nothing can start
                where = ("spec.artifacts.secretRef.name" if spec.artifacts is not None
                         else "the operator's artifact store Secret (Helm value artifactStore.secret)")
                st.blocked = True
                st.serve_uri = last_good
                self._fail(
                    st,
                    Reason.SECRET_MISSING,
                    f"{where}: Secret {store_secret!r} not found in namespace "
                    f"{self.namespace!r}; create it there (kubectl create secret generic "
                    f"{store_secret} -n {self.namespace} ...) with the store's credentials",
                )
            elif v.checkpoint.secret_ref and not secrets[v.checkpoint.secret_ref.name]:
                sname = v.checkpoint.secret_ref.name
                st.blocked = True
                st.serve_uri = last_good
                self._fail(
                    st,
                    Reason.SECRET_MISSING,
                    f"spec.versions[{i}].checkpoint.secretRef.name: Secret {sname!r} not found "
                    f"in namespace {self.namespace!r}; create it (kubectl create secret "
                    f"generic {sname} -n {self.namespace} ...) or remove secretRef",
                )
            else:
                await self._observe_conversion(st, old, children)
                st.serve_uri = st.uri if st.available else last_good
            states.append(st)

        # Deployments: observed readiness of what is being served
        for st in states:
            dep = children.get(("Deployment", child_name(self.name, st.name)))
            if st.serve_uri is not None and dep is not None:
                ds = dep.get("status") or {}
                st.replicas = int(ds.get("replicas") or 0)
                st.ready_replicas = int(ds.get("readyReplicas") or 0)
                st.deadline_exceeded = O.progress_deadline_exceeded(dep)
                st.serving_key = _serving_key(dep, old_versions.get(st.name) or {})
                wanted = (dep.get("spec") or {}).get("replicas")
                st.desired_replicas = int(wanted) if wanted is not None else st.replicas

        # traffic: the rollout state machine (Manual: the spec's weights). A version counts
        # as ready for the artifact all its pods serve, never for the one its spec asks for
        # while older pods still answer: in the pass where a conversion finishes, the
        # Deployment has not even been changed yet.
        observations = [
            R.VersionObservation(
                name=st.name,
                ready=st.serve_uri is not None
                and st.serving_key is not None
                and O.deployment_ready(children.get(("Deployment", child_name(self.name, st.name)))),
                artifact_key=st.serving_key,
                replicas=st.desired_replicas,
            )
            for st in states
        ]
        decision = await self._decide(spec, observations, states)
        routable = {
            st.name: decision.traffic.get(st.name, 0) for st in states if st.serve_uri is not None
        }
        routed = _normalise(routable)

        plans = [
            VersionPlan(
                name=st.name,
                request=requests[st.name],
                artifact_uri=st.uri,
                convert=st.convert,
                serve_uri=st.serve_uri,
                traffic=routable.get(st.name, 0),
                bounds=decision.bounds.get(st.name),
            )
            for st in states
        ]
        if spec.routing.provider == RoutingProvider.SERVICE.value and spec.autoscaling is None:
            # one Service over the routed pods: each version's share is its share of the pods
            active = {p.name for p in routed_plans(plans)}
            pods = service_replicas(lm, plans)
            routed = _normalise({n: c for n, c in pods.items() if n in active})
        desired = build_children(lm, owner, self.settings, plans)
        blocked = {st.name for st in states if st.blocked}

        def frozen(obj: dict) -> bool:
            return (obj.get("metadata", {}).get("labels") or {}).get(L.VERSION) in blocked

        # readiness needs the Deployment as desired now, not an older template
        for obj in desired:
            if obj["kind"] != "Deployment":
                continue
            st = next(s for s in states if child_name(self.name, s.name) == obj["metadata"]["name"])
            observed = children.get(("Deployment", obj["metadata"]["name"]))
            want = obj.get("spec", {}).get("replicas", 1)
            st.ready = (
                observed is not None
                and (frozen(obj) or (is_subset(obj, observed) and st.serving_key == st.key))
                and O.deployment_ready(observed)
                and st.ready_replicas >= want
            )

        to_apply = [o for o in desired if not frozen(o)]
        applied = await asyncio.gather(
            *(self._apply(o, children.get((o["kind"], o["metadata"]["name"]))) for o in to_apply)
        )
        for obj, did in zip(to_apply, applied):
            if did:
                self.result.applied[obj["kind"]] += 1

        self._phases(states)
        status = self._status(lm, states, routed, decision)
        await self._events(states, old_versions, decision)
        await self._refusal_events(status["conditions"])
        await self._write_status(status)

        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        stale = [(k, o) for k, o in children.items() if k not in wanted and not frozen(o)]
        await asyncio.gather(
            *(self.kube.delete(o["apiVersion"], k[0], self.namespace, k[1]) for k, o in stale)
        )
        self.result.deleted = len(stale)

        self.result.ready = C.is_true(status["conditions"], C.READY)
        if self.result.ready:
            self.result.outcome = "ready"
        elif any(st.phase == Phase.FAILED.value for st in states):
            self.result.outcome = "failed"
        if decision.requeue_after is not None:
            self.result.requeue_after = decision.requeue_after
        elif any(st.phase not in (Phase.READY.value, Phase.FAILED.value) for st in states):
            self.result.requeue_after = PROGRESS_REQUEUE_SECONDS
        if self._replaced:
            self.result.requeue_after = min(self.result.requeue_after or 1.0, 1.0)
        if self._refused:  # a CRD may be installed, RBAC fixed: look again, not too often
            self.result.requeue_after = min(self.result.requeue_after or REFUSED_REQUEUE_SECONDS,
                                            REFUSED_REQUEUE_SECONDS)
            if self.result.outcome != "ready":
                self.result.outcome = "failed"

    async def _apply(self, obj: dict, observed: dict | None) -> bool:
        """Server-side apply one child; a Job the server refuses to change is replaced.

        A Job's pod template is immutable, so operator settings that reshape it (converter
        image, resources) make the apply fail with 422. Its content key is unchanged, so
        the Job is deleted and created again on the next pass (soon), and the converter's
        content-addressed store answers at once if the artifact was already built.
        """
        try:
            return await self.kube.apply(obj, observed)
        except KubeError as err:
            if err.status != 422 or obj["kind"] != "Job" or observed is None:
                if err.status in REFUSALS:
                    self._refused.append((obj["kind"], _refusal(obj, err)))
                    return False
                raise
            name = obj["metadata"]["name"]
            self.log.info("replacing conversion Job %s (its template changed): %s", name, err)
            await self.kube.delete(obj["apiVersion"], "Job", self.namespace, name)
            self._replaced = True
            return True

    async def _observe_conversion(self, st: _Version, old: dict, children: dict) -> None:
        """Is the desired artifact available, being built, or refused?"""
        if st.artifact and st.artifact.get("key") == st.key:
            st.available = True
            return
        jname = job_name(self.name, st.name, st.key)
        job = children.get(("Job", jname))
        marker = f"conversion {st.key[:8]} "
        if job is None:
            if old.get("phase") == Phase.FAILED.value and marker in (old.get("message") or ""):
                # refused before and its Job is gone (TTL): do not convert the same request again
                st.failure_reason = (
                    Reason.CONVERSION_REFUSED if "refused" in old["message"] else Reason.CONVERSION_FAILED
                )
                st.phase, st.message = Phase.FAILED.value, old["message"]
                return
            st.convert = True  # created by this pass: the same state as a running Job
            st.phase, st.message = Phase.CONVERTING.value, f"conversion Job {jname} running"
            return
        st.convert = True  # keep the Job (its log, and no second attempt) until it expires
        state = O.job_state(job)
        if state == "running":
            st.phase, st.message = Phase.CONVERTING.value, f"conversion Job {jname} running"
            return
        messages = await self.kube.termination_messages(self.namespace, jname)
        outcome = O.conversion_outcome(messages, st.uri, st.key)
        if state == "succeeded" and outcome is not None and outcome[0]:
            st.available = True
            st.convert = False
            st.artifact = _prune_none(outcome[2])
            return
        if outcome is not None and not outcome[0]:
            self._fail(st, Reason.CONVERSION_REFUSED, f"{marker}refused: {outcome[1]}")
        elif state == "succeeded":
            self._fail(
                st,
                Reason.CONVERSION_FAILED,
                f"{marker}failed: Job {jname} succeeded but left no manifest in its "
                "termination message",
            )
        else:
            detail = next((m for m in messages if m.strip()), "") or O.job_failure_message(job)
            self._fail(st, Reason.CONVERSION_FAILED, f"{marker}failed: {detail.strip()[-600:]}")

    @staticmethod
    def _fail(st: _Version, reason: str, message: str) -> None:
        st.phase, st.message, st.failure_reason = Phase.FAILED.value, message, reason

    async def _decide(self, spec, observations, states: list[_Version]) -> R.Decision:
        raw = self.old_status.get("rollout")
        current = RolloutStatus.model_validate(raw) if raw else None
        decision = R.decide(spec, current, observations, self.now)
        if decision.analyse and decision.rollout is not None and self.analyse is not None:
            ro = decision.rollout
            replay, unreplayable = self._replay_targets(spec, ro, states)
            if unreplayable is not None:
                # a drift gate that cannot run must not pass: the step fails, saying why
                from lmo.analysis import FAIL, AnalysisResult

                result = AnalysisResult(FAIL, {}, [unreplayable])
            else:
                result = await asyncio.to_thread(
                    self.analyse,
                    spec.rollout.analysis,
                    self.namespace,
                    self.name,
                    ro.candidate,
                    ro.stable,
                    # an early check judges only the part of the step elapsed so far
                    R.analysis_window(spec, ro, self.now),
                    replay=replay,
                )
            decision = R.decide(spec, current, observations, self.now, analysis=result)
        return decision

    def _service_url(self, version: str) -> str:
        """HTTP base URL of one version's Triton Service `<lm>-<version>`, in-cluster."""
        return f"http://{child_name(self.name, version)}.{self.namespace}.svc:{HTTP_PORT}"

    def _replay_targets(
        self, spec, rollout: RolloutStatus, states: list[_Version]
    ) -> tuple[Any, str | None]:
        """(ReplayTargets, None) for the golden replay of `rollout`'s candidate against its
        stable; (None, None) when `analysis.maxOutputDrift` is not set; (None, why) when it
        is set but cannot be checked (the step then fails with that reason).

        The inputs are the candidate artifact's `goldenInputs` (copied from its conversion
        Job's summary); they are sent to both versions' Services, `<lm>-<version>:8000`.
        """
        if spec.rollout.analysis.max_output_drift is None:
            return None, None
        candidate = next((st for st in states if st.name == rollout.candidate), None)
        artifact = (candidate.artifact if candidate is not None else None) or {}
        inputs = [t for t in artifact.get("goldenInputs") or [] if isinstance(t, str)]
        if not inputs:
            return None, (
                f"spec.rollout.analysis.maxOutputDrift is set but artifact "
                f"{(artifact.get('key') or '')[:8]} of {rollout.candidate} has no golden inputs "
                f"(status.versions[].artifact.goldenInputs; artifacts converted by an older "
                f"lmo lack them), so its output drift cannot be measured; remove "
                f"maxOutputDrift to roll out on the metrics alone (the change starts the "
                f"rollout again), or list the candidate again under a new version name "
                f"(its conversion Job records them)"
            )
        try:
            from lmo.replay import ReplayTargets
        except ImportError as err:
            return None, (
                f"spec.rollout.analysis.maxOutputDrift is set but the operator cannot run the "
                f"golden replay ({err}); install lmo with its dependencies (numpy, "
                f"tritonclient[http]) in the operator image, or remove maxOutputDrift"
            )
        entry = artifact.get("entryModel") or ENTRY_MODEL[spec.task]
        return ReplayTargets(
            candidate_url=self._service_url(rollout.candidate),
            stable_url=self._service_url(rollout.stable),
            entry_model=entry,
            inputs=tuple(inputs),
        ), None

    # ------------------------------------------------------------------ status

    def _phases(self, states: list[_Version]) -> None:
        for st in states:
            if st.phase == Phase.FAILED.value:
                continue
            if not st.available:
                continue  # Pending / Converting, set while observing the conversion
            if st.deadline_exceeded:
                self._fail(
                    st,
                    Reason.PROGRESS_DEADLINE_EXCEEDED,
                    f"Deployment {child_name(self.name, st.name)} exceeded its progress "
                    "deadline (image pull, GPU scheduling or model load failing?)",
                )
            elif st.ready:
                st.phase, st.message = Phase.READY.value, ""
            else:
                st.phase = Phase.DEPLOYING.value
                st.message = (
                    f"{st.ready_replicas}/{max(st.replicas, 1)} Triton replicas ready"
                )

    def _status(self, lm, states: list[_Version], routed: dict[str, int], decision) -> dict:
        gen = self.generation
        conds = list(self.old_status.get("conditions") or [])
        now = self.now

        failed = [s for s in states if s.failure_reason and s.failure_reason != Reason.PROGRESS_DEADLINE_EXCEEDED]
        missing = [s for s in states if not s.available and not s.failure_reason]
        if failed:
            first = failed[0]
            msg = "; ".join(f"{s.name}: {s.message}" for s in failed)
            conds = C.set_condition(conds, C.CONVERTED, C.FALSE, first.failure_reason, msg, gen, now)
        elif missing:
            msg = "converting " + ", ".join(s.name for s in missing)
            conds = C.set_condition(conds, C.CONVERTED, C.FALSE, Reason.CONVERTING, msg, gen, now)
        else:
            conds = C.set_condition(
                conds, C.CONVERTED, C.TRUE, Reason.CONVERTED,
                f"{len(states)} version(s) converted", gen, now,
            )

        stuck = [s for s in states if s.deadline_exceeded]
        waiting = [s for s in states if s.serve_uri is None or not s.ready]
        if stuck:
            msg = "; ".join(f"{s.name}: {s.message}" for s in stuck)
            conds = C.set_condition(
                conds, C.DEPLOYED, C.FALSE, Reason.PROGRESS_DEADLINE_EXCEEDED, msg, gen, now
            )
        elif waiting:
            msg = "waiting for " + ", ".join(
                f"{s.name} ({'no artifact yet' if s.serve_uri is None else f'{s.ready_replicas} ready'})"
                for s in waiting
            )
            conds = C.set_condition(conds, C.DEPLOYED, C.FALSE, Reason.DEPLOYING, msg, gen, now)
        else:
            conds = C.set_condition(
                conds, C.DEPLOYED, C.TRUE, Reason.DEPLOYED, "every version has ready replicas",
                gen, now,
            )

        unroutable = [n for n, w in decision.traffic.items() if w > 0 and n not in routed]
        summary = ",".join(f"{s.name}={routed.get(s.name, 0)}" for s in states)
        if unroutable:
            conds = C.set_condition(
                conds, C.ROUTED, C.FALSE, Reason.ROUTE_PENDING,
                f"no Deployment yet for {', '.join(unroutable)}; routing {summary}", gen, now,
            )
        else:
            conds = C.set_condition(conds, C.ROUTED, C.TRUE, Reason.ROUTED, f"routing {summary}", gen, now)
        for type_, kinds in ((C.ROUTED, {"HTTPRoute"}), (C.DEPLOYED, None)):
            why = [w for k, w in self._refused if (k in kinds if kinds else k != "HTTPRoute")]
            if why:
                conds = C.set_condition(
                    conds, type_, C.FALSE, Reason.APPLY_REFUSED, "; ".join(why), gen, now
                )
        conds = C.aggregate_ready(conds, gen, now)

        versions = []
        for st in states:
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
            versions.append(vs)
        status: dict[str, Any] = {
            "conditions": conds,
            "endpoint": endpoint(lm, self.settings),
            "versions": versions,
            "trafficSummary": summary,
            "readyVersions": f"{sum(1 for s in states if s.phase == Phase.READY.value)}/{len(states)}",
        }
        if gen is not None:
            status["observedGeneration"] = gen
        if decision.rollout is not None:
            status["rollout"] = decision.rollout.to_dict()
        return _prune_none(status)

    async def _events(self, states: list[_Version], old_versions: dict, decision) -> None:
        for st in states:
            old = old_versions.get(st.name) or {}
            if st.phase == Phase.FAILED.value and (
                old.get("phase") != Phase.FAILED.value or old.get("message") != st.message
            ):
                await self._event(WARNING, st.failure_reason or Reason.NOT_READY, f"{st.name}: {st.message}")
            elif st.phase == Phase.READY.value and old.get("phase") != Phase.READY.value:
                key = (st.artifact or {}).get("key", "")[:8]
                await self._event(
                    NORMAL, Reason.VERSION_READY,
                    f"version {st.name} is ready ({st.ready_replicas} replica(s), artifact {key})",
                )
        for type_, reason, message in decision.events:
            await self._event(type_, reason, message)

    async def _refusal_events(self, conditions: list[dict]) -> None:
        """A Warning when a child is newly refused (or for a new reason), not every pass."""
        old = self.old_status.get("conditions") or []
        for type_ in (C.ROUTED, C.DEPLOYED):
            c = C.get_condition(conditions, type_) or {}
            if c.get("reason") != Reason.APPLY_REFUSED:
                continue
            before = C.get_condition(old, type_) or {}
            if before.get("reason") != c["reason"] or before.get("message") != c.get("message"):
                await self._event(WARNING, Reason.APPLY_REFUSED, c.get("message", ""))

    async def _event(self, type_: str, reason: str, message: str) -> None:
        self.result.events.append((type_, reason, message))
        try:
            await self.kube.post_event(self.ref, type_, reason, message, self.now)
        except Exception as err:  # an Event is advice: never fail a reconcile over it
            self.log.warning("could not post Event %s: %s", reason, err)

    async def _write_status(self, status: dict) -> None:
        status = _prune_none(status)
        self.result.status_written = await self.kube.patch_status(
            API_VERSION, PLURAL, self.namespace, self.name, status, self.old_status
        )


def _serving_key(dep: dict, old: dict) -> str | None:
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


def _check_buildable(lm: LanguageModel, owner: Owner, settings: OperatorSettings, store: str) -> None:
    """Build every child as if every version were converted and serving, and discard it.

    What the builders refuse (UserError: a KEDA trigger with no Prometheus address, a
    file:// store on a cluster...) is then refused on the first pass, before a conversion
    Job runs for an hour only for its Deployment to be refused.
    """
    traffic = lm.spec.effective_traffic()
    plans = []
    for v in lm.spec.versions:
        request = conversion_request(lm.spec, v)
        uri = artifact_uri(store, request.key())
        plans.append(VersionPlan(name=v.name, request=request, artifact_uri=uri, convert=True,
                                 serve_uri=uri, traffic=traffic.get(v.name, 0)))
    build_children(lm, owner, settings, plans)


# refusals of a child apply that a person must fix (not retried as transient errors)
REFUSALS = (400, 403, 404, 422)
REFUSED_REQUEUE_SECONDS = 30.0
_MISSING_KIND_FIX = {
    "HTTPRoute": "install the Gateway API CRDs (v1.3 or newer for routing.mirror.percent), "
    "or set spec.routing.provider: Service",
    "ScaledObject": "install KEDA (2.10 or newer, see docs/rollouts.md), or set spec.autoscaling.engine: HPA",
}


def _refusal(obj: dict, err: KubeError) -> str:
    """Why the API server refused a child, and the fix, in one line for a condition."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    said = err.server_message
    if err.status == 404:
        fix = _MISSING_KIND_FIX.get(kind, "is its API installed?")
        return f"{kind} {name}: the API server does not serve {obj['apiVersion']} {kind}; {fix}"
    if err.status == 403:
        return (f"{kind} {name}: the operator may not apply it ({said}); grant its "
                "ServiceAccount patch and create on it (the chart's ClusterRole does)")
    return f"{kind} {name} refused by the API server: {said}"


async def reconcile(
    body: dict,
    kube: Kube,
    settings: OperatorSettings,
    now: datetime | None = None,
    analyse: Callable[..., Any] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> Result:
    """Reconcile the LanguageModel `body` (its latest known state, status included)."""
    return await Reconciler(body, kube, settings, now, analyse, logger).run()
