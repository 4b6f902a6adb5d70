"""Pure builders: a LanguageModel plus the reconciler's plans -> every desired child manifest.

`build_children` is the one entry point the reconciler calls; it returns plain dicts in a
deterministic order (per version: conversion Job, Deployment, Service, autoscaler; then the
route), ready for server-side apply. Nothing here does I/O, reads a clock, or imports kopf
or kubernetes. Per-kind builders live in `conversion.py`, `triton.py`, `traffic.py` and
`autoscaling.py`.
"""

from __future__ import annotations

from lmo.api import Accelerator, LanguageModel, LanguageModelSpec, VersionSpec, parse_duration
from lmo.builders.autoscaling import build_autoscaler
from lmo.builders.base import (
    Owner,
    VersionPlan,
    artifact_store,
    artifact_uri,
    child_name,
    owner_reference,
)
from lmo.builders.conversion import build_conversion_job
from lmo.builders.traffic import build_route, endpoint, routed, service_replicas
from lmo.builders.protection import build_protection
from lmo.builders.triton import build_deployment, build_service, uses_service_provider
from lmo.settings import OperatorSettings
from lmo_runtime.manifest import ConversionRequest, Evaluation

__all__ = [
    "CHILD_KINDS",
    "Owner",
    "VersionPlan",
    "artifact_store",
    "artifact_uri",
    "build_children",
    "child_kinds",
    "child_name",
    "conversion_request",
    "endpoint",
    "owner_reference",
]

# (apiVersion, kind, plural) of everything build_children can make.
CHILD_KINDS: list[tuple[str, str, str]] = [
    ("batch/v1", "Job", "jobs"),
    ("apps/v1", "Deployment", "deployments"),
    ("v1", "Service", "services"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ("gateway.envoyproxy.io/v1alpha1", "BackendTrafficPolicy", "backendtrafficpolicies"),
    ("gateway.envoyproxy.io/v1alpha1", "SecurityPolicy", "securitypolicies"),
    ("networking.istio.io/v1", "DestinationRule", "destinationrules"),
    ("security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies"),
]


def conversion_request(spec: LanguageModelSpec, version: VersionSpec) -> ConversionRequest:
    """Everything that determines version's artifact (its key() is the content address).

    Serving settings that shape config.pbtxt (backend, batching, gpus) are part of it, so
    changing them produces a new artifact rather than serving a stale configuration.
    """
    return ConversionRequest(
        checkpoint_uri=version.checkpoint.uri,
        checkpoint_sha256=version.checkpoint.sha256,
        task=spec.task,
        precision=version.optimize.precision,
        min_score=version.optimize.accuracy_gate.min_score,
        fallback=version.optimize.accuracy_gate.fallback,
        calibration_samples=version.optimize.calibration_samples,
        backend=spec.serving.backend,
        max_batch_size=spec.serving.batching.max_batch_size,
        max_queue_delay_microseconds=spec.serving.batching.max_queue_delay_microseconds,
        gpus=spec.serving.gpu_count(),
        accelerator=(spec.serving.accelerator
                     if spec.serving.accelerator != Accelerator.CUDA.value else None),
        queue_max_size=spec.serving.queue.max_size if spec.serving.queue else None,
        queue_timeout_microseconds=(
            round(parse_duration(spec.serving.queue.timeout) * 1_000_000)
            if spec.serving.queue and spec.serving.queue.timeout else None
        ),
        evaluation=_evaluation(version),
    )


def _evaluation(version: VersionSpec) -> Evaluation | None:
    ev = version.optimize.evaluation
    if ev is None:
        return None
    return Evaluation(uri=ev.uri, field=ev.field, limit=ev.limit, sha256=ev.sha256)


def build_children(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plans: list[VersionPlan]
) -> list[dict]:
    """Every desired child of `lm`, in a deterministic order.

    Per plan (in the order given): the conversion Job when `plan.convert`; the Triton
    Deployment, its Service and its autoscaler (HPA or ScaledObject, when spec.autoscaling
    is set; `plan.bounds` overrides its range) when `plan.serve_uri` is set; then the route
    (HTTPRoute, or the Service over all versions for provider Service).

    Replicas: with spec.autoscaling the Deployment has no replicas field (the autoscaler
    owns it, within `plan.bounds`). Without it, provider Service apportions replicas by
    traffic (`traffic.service_replicas`), otherwise every version runs
    spec.serving.replicas; `plan.bounds` then clamps that count, so a rollout can scale a
    retired version to zero with bounds (0, 0).
    """
    by_service = uses_service_provider(lm)
    autoscaled = lm.spec.autoscaling is not None
    if autoscaled:
        replicas: dict[str, int] = {}
    else:
        if by_service:
            replicas = service_replicas(lm, plans)
        else:
            replicas = {p.name: lm.spec.serving.replicas for p in plans}
        for p in plans:
            if p.bounds is not None and p.name in replicas:
                lo, hi = p.bounds
                replicas[p.name] = max(lo, min(replicas[p.name], hi))
    routed_names = {p.name for p in routed(plans)}

    out: list[dict] = []
    for plan in plans:
        if plan.convert:
            out.append(build_conversion_job(lm, owner, settings, plan))
        if plan.serve_uri is not None:
            out.append(
                build_deployment(
                    lm,
                    owner,
                    settings,
                    plan,
                    replicas.get(plan.name),
                    routed=(plan.name in routed_names) if by_service else None,
                )
            )
            out.append(build_service(lm, owner, plan.name))
            scaler = build_autoscaler(
                lm, owner, plan.name, plan.bounds, prometheus_url=settings.prometheus_url,
                wake=settings.keda_wake_query,
            )
            if scaler is not None:
                out.append(scaler)
    out.extend(build_route(lm, owner, settings, plans))
    out.extend(build_protection(lm, owner, settings, plans))
    return out


def child_kinds(lm: LanguageModel, owner: Owner, settings: OperatorSettings,
                store: str) -> list[tuple[str, str, str]]:
    """The kinds of CHILD_KINDS that `lm`'s spec can own under these settings: those that
    build_children makes when every version converts and serves at once. A reconcile lists
    only these, instead of every kind (Envoy Gateway and Istio policies, KEDA, HPAs...)
    for every resource (kinds the spec no longer makes are listed after a spec change, to
    prune them)."""
    plans = [
        VersionPlan(name=v.name, request=(req := conversion_request(lm.spec, v)),
                    artifact_uri=artifact_uri(store, req.key()), convert=True,
                    serve_uri=artifact_uri(store, req.key()), traffic=100 if i == 0 else 0)
        for i, v in enumerate(lm.spec.versions)
    ]
    made = {(c["apiVersion"], c["kind"]) for c in build_children(lm, owner, settings, plans)}
    return [k for k in CHILD_KINDS if (k[0], k[1]) in made]
