"""Reconcile one LanguageModel: read the cluster, run the stages, write what they decided.

`reconcile(body, kube, settings)` is level-based. One pass is the short sequence in
`Reconciler.run`, each decision a pure stage of `lmo.stages` over immutable values:

    read      the resource's owned children, whether referenced Secrets exist, the
              termination messages of finished conversion Jobs    (lmo.kube)
    observe   -> Observed                                          (lmo.stages)
    step      -> Decision: decide, measure (Prometheus + golden replay), decide again
    plan      -> [VersionPlan], routed
    build     -> desired children                                  (lmo.builders)
    assess    -> readiness against what is desired now, phases
    apply     server-side apply of what differs (none when nothing changed)
    status    -> status_from, events_from; Events posted, then the status written only
              when changed
    prune     delete owned children no longer desired

Running it twice with nothing new makes no write. An Event announces a change of status (a
rollout step, a version Ready) and is decided from the status read (`old_status`); it is
posted with that decision's mark (`Kube.post_event`, `decided_from`), a digest of the object
and the status it was decided from. When the status write then fails, or its answer is lost
(etcd away), or the operator stops before it, the next pass reads the same status, decides
the same change and finds its Event already posted with the same mark: sent once. When the
write landed, the next pass reads the change back and announces nothing. Only a change of
the status (a later, different decision) posts the same Event again, counted up.

Traffic comes from `lmo.rollout.decide` (Manual: the spec's weights; Canary/BlueGreen: the
state machine); with
`analysis.maxOutputDrift` the measurement also replays the candidate artifact's golden inputs
(`status.versions[].artifact.goldenInputs`) against the candidate's and the stable's
Services (`lmo.replay`); an artifact without them fails the step rather than pass it
unchecked. `status.versions[].traffic` is what the route really sends (`stages.plan`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from lmo import conditions as C
from lmo import labels as L
from lmo import observe as O
from lmo import rollout as R
from lmo import stages as S
from lmo.api import (
    API_VERSION,
    KIND,
    PLURAL,
    LanguageModel,
    Phase,
    RolloutPhase,
    RolloutStatus,
    SpecError,
    Strategy,
    parse,
)
from lmo.builders import (
    CHILD_KINDS,
    Owner,
    VersionPlan,
    artifact_store,
    artifact_uri,
    build_children,
    child_kinds,
    child_name,
    conversion_request,
)
from lmo.builders.traffic import sticky_conditions
from lmo.builders.triton import HTTP_PORT
from lmo.conditions import WARNING, Reason
from lmo.decide.measure import cannot_replay, replay_targets
from lmo.decide.outcomes import with_outcomes
from lmo.errors import UserError
from lmo.diff import first_difference
from lmo.kube import Kube, KubeError, Ref
from lmo.settings import OperatorSettings

log = logging.getLogger(__name__)

Kube.register_kinds(CHILD_KINDS)

# While a version converts or starts, look again this often (child events wake it sooner).
PROGRESS_REQUEUE_SECONDS = 10.0


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
    phases: dict[str, str] = field(default_factory=dict)  # version -> phase, as in status
    traffic: dict[str, int] = field(default_factory=dict)  # version -> percent really routed
    rollout_step: int = 0  # the running rollout's step from 1; 0 when none runs
    missing_secrets: list[str] = field(default_factory=list)  # referenced, not found


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


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
        list_all: bool = True,
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
        # a new object (no status yet) can own nothing its spec does not make: children of a
        # former object of the same name are another uid's, and the collector's
        self.list_all = bool(self.old_status) and (
            list_all or self.old_status.get("observedGeneration") != self.generation)
        self.ref = Ref(API_VERSION, KIND, self.namespace, self.name, self.uid)
        self.result = Result(outcome="progressing")
        self._replaced = False  # a Job was deleted to be re-created: look again soon
        self._refused: list[tuple[str, str]] = []  # (kind, why) children the server refused
        # what this pass decides from: its Events carry it, so deciding the same again
        # (the status write failed, or its answer was lost) posts nothing twice
        self.decided_from = decision_mark(self.uid, self.old_status)

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

    async def _reconcile(self, lm: LanguageModel) -> None:
        owner = Owner(self.name, self.namespace, self.uid)
        store, store_secret = artifact_store(lm.spec, self.settings)
        _check_buildable(lm, owner, self.settings, store)

        if not self.old_status:
            # never reconciled (no status yet): it owns nothing it has not yet been given, so
            # nothing to list. Were children applied before a crash, the same applies change
            # nothing, and the next pass (with a status) lists them.
            kinds: list[tuple[str, str, str]] = []
        elif self.list_all:
            kinds = CHILD_KINDS
        else:
            kinds = child_kinds(lm, owner, self.settings, store)
        children, secrets, messages = await self._read(lm, store, store_secret, kinds)
        self.result.missing_secrets = sorted(n for n, found in secrets.items() if not found)
        observed = S.observe(lm, store, store_secret, children, secrets, messages, self.old_status)
        decision = await S.step(lm.spec, observed, self.now, self._measure(lm, observed))
        plans, routed = S.plan(lm, observed, decision)
        desired = build_children(lm, owner, self.settings, plans)
        observed = S.assess(observed, self.name, desired, children)
        self._explain_unready(observed, children, desired)

        await self._apply(desired, children, observed)
        status = S.status_from(lm, self.settings, observed, routed, decision, self._refused,
                               self.generation, self.now)
        status["conditions"] = sticky_conditions(status["conditions"], lm, self.settings,
                                                 self.generation, self.now)
        for event in S.events_from(observed, status, decision):
            await self._event(*event)
        await self._write_status(status)
        await self._prune(desired, children, observed)
        self._schedule(status, observed, decision)

    # ------------------------------------------------------------------ reading

    async def _read(self, lm: LanguageModel, store: str, store_secret: str | None,
                    kinds: list[tuple[str, str, str]]):
        """Owned children of `kinds` (by controller ownerReference), whether each referenced
        Secret exists (never its data), and the termination messages `observe` needs."""
        listed = await self.kube.list_children(kinds, self.namespace, {L.MODEL: self.name})
        children = {k: o for k, o in listed.items() if O.controlled_by(o, self.uid)}
        names = sorted(
            {v.checkpoint.secret_ref.name for v in lm.spec.versions if v.checkpoint.secret_ref}
            | ({store_secret} if store_secret else set())
            | ({lm.spec.protection.auth.api_keys.secret_ref.name}
               if lm.spec.protection is not None and lm.spec.protection.auth is not None
               else set())
        )
        exists = await asyncio.gather(*(self.kube.secret_exists(self.namespace, n) for n in names))
        jobs = S.jobs_to_read(lm, store, children, self.old_status)
        found = await asyncio.gather(*(self.kube.termination_messages(self.namespace, j) for j in jobs))
        return children, dict(zip(names, exists)), dict(zip(jobs, found))

    def _explain_unready(self, observed: S.Observed, children: dict, desired: list[dict]) -> None:
        """Log why a version Ready in the status read is not Ready now (its artifact, the
        artifact its pods serve, its Deployment as observed against the one wanted): a
        version leaving Ready pulls its traffic."""
        was = {v.get("name") for v in self.old_status.get("versions") or []
               if v.get("phase") == Phase.READY.value}
        wanted = {o["metadata"]["name"]: o for o in desired if o["kind"] == "Deployment"}
        for st in observed.versions:
            if st.name not in was or st.phase == Phase.READY.value:
                continue
            name = child_name(self.name, st.name)
            dep, want = children.get(("Deployment", name)), wanted.get(name)
            ds = (dep or {}).get("status") or {}
            self.log.warning(
                "version %s is no longer observed ready (%s): artifact %s, serving key %s, "
                "Deployment %s (generation %s, observed %s, replicas %s, updated %s, ready %s), "
                "differs from the wanted one at %s",
                st.name, st.phase, st.serve_uri, st.serving_key, "listed" if dep else "not listed",
                (dep or {}).get("metadata", {}).get("generation"), ds.get("observedGeneration"),
                ds.get("replicas"), ds.get("updatedReplicas"), ds.get("readyReplicas"),
                first_difference(want, dep) if want is not None and dep is not None else "-")

    # ------------------------------------------------------------------ measuring

    def _measure(self, lm: LanguageModel, observed: S.Observed) -> S.Measure | None:
        """The analysis of a rollout step: Prometheus numbers and the golden replay
        (`lmo.decide.measure.analyse`, run in a thread), or the reason the drift gate cannot run."""
        if self.analyse is None:
            return None

        async def measure(ro: RolloutStatus) -> Any:
            candidate = observed.version(ro.candidate)
            replay = replay_targets(
                lm.spec, ro.candidate, (candidate.artifact if candidate is not None else None) or {},
                self._service_url(ro.candidate), self._service_url(ro.stable))
            if isinstance(replay, str):
                return cannot_replay(replay)
            result = await asyncio.to_thread(
                self.analyse,
                lm.spec.rollout.analysis,
                self.namespace,
                self.name,
                ro.candidate,
                ro.stable,
                # an early check judges only the part of the step elapsed so far
                R.analysis_window(lm.spec, ro, self.now),
                replay=replay,
            )
            if lm.spec.rollout.strategy == Strategy.EXPERIMENT.value:
                # the experiment's outcome counts since it started (lmo.decide.experiment)
                started = (self.old_status.get("experiment") or {}).get("startedAt")
                result = await asyncio.to_thread(with_outcomes, result, lm.spec, self.namespace,
                                                 self.name, started, self.now)
            return result

        return measure

    def _service_url(self, version: str) -> str:
        """HTTP base URL of one version's Triton Service `<lm>-<version>`, in-cluster (the
        golden replay asks both versions there)."""
        return f"http://{child_name(self.name, version)}.{self.namespace}.svc:{HTTP_PORT}"

    # ------------------------------------------------------------------ writing

    async def _apply(self, desired: list[dict], children: dict, observed: S.Observed) -> None:
        to_apply = [o for o in desired if not S.frozen(observed, o)]
        applied = await asyncio.gather(
            *(self._apply_one(o, children.get((o["kind"], o["metadata"]["name"]))) for o in to_apply)
        )
        for obj, did in zip(to_apply, applied):
            if did:
                self.result.applied[obj["kind"]] += 1

    async def _apply_one(self, obj: dict, observed: dict | None) -> bool:
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

    async def _prune(self, desired: list[dict], children: dict, observed: S.Observed) -> None:
        """Delete owned children no longer desired (not those of a blocked version)."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        stale = [(k, o) for k, o in children.items() if k not in wanted and not S.frozen(observed, o)]
        await asyncio.gather(
            *(self.kube.delete(o["apiVersion"], k[0], self.namespace, k[1]) for k, o in stale)
        )
        self.result.deleted = len(stale)

    def _schedule(self, status: dict, observed: S.Observed, decision: Any) -> None:
        """The outcome, and when to look again."""
        states = observed.versions
        self.result.phases = {st.name: st.phase for st in states}
        self.result.traffic = {v["name"]: v["traffic"] for v in status["versions"]}
        ro = status.get("rollout") or {}
        running = ro.get("phase") in (RolloutPhase.PROGRESSING.value, RolloutPhase.PAUSED.value)
        self.result.rollout_step = int(ro.get("step") or 0) + 1 if running else 0
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

    async def _invalid(self, message: str, reason: str = Reason.INVALID_SPEC) -> None:
        """Ready=False naming the field (InvalidSpec, or NotServable); no child is touched."""
        old_ready = C.get_condition(list(self.old_status.get("conditions") or []), C.READY) or {}
        status = S.invalid_status(self.old_status, message, reason, self.generation, self.now)
        if old_ready.get("reason") != reason or old_ready.get("message") != message:
            await self._event(WARNING, reason, message)
        await self._write_status(status)
        self.result.outcome = "invalid"

    async def _event(self, type_: str, reason: str, message: str) -> None:
        self.result.events.append((type_, reason, message))
        try:
            await self.kube.post_event(self.ref, type_, reason, message, self.now,
                                       decided_from=self.decided_from)
        except Exception as err:  # an Event is advice: never fail a reconcile over it
            self.log.warning("could not post Event %s: %s", reason, err)

    async def _write_status(self, status: dict) -> None:
        self.result.status_written = await self.kube.patch_status(
            API_VERSION, PLURAL, self.namespace, self.name, status, self.old_status
        )


def decision_mark(uid: str, old_status: dict) -> str:
    """A digest of the object and of the status a pass decides from: equal for two passes
    that read the same status (the first one's write did not land), different once the
    status changed."""
    text = json.dumps([uid, old_status], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    "BackendTrafficPolicy": "install Envoy Gateway (v1.4 or newer), or set another "
    "spec.routing.policies",
    "SecurityPolicy": "install Envoy Gateway (v1.4 or newer), or set another spec.routing.policies",
    "DestinationRule": "install Istio, or set another spec.routing.policies",
    "AuthorizationPolicy": "install Istio, or set another spec.routing.policies",
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
    list_all: bool = True,
) -> Result:
    """Reconcile the LanguageModel `body` (its latest known state, status included).

    `list_all=False`: list only the child kinds its spec can own (`child_kinds`) when the
    spec is the one its status was written for (observedGeneration); the caller passes
    True for the first reconcile of an object in a process, when children of other kinds
    may be left from a spec or settings this process never saw."""
    return await Reconciler(body, kube, settings, now, analyse, logger, list_all).run()
