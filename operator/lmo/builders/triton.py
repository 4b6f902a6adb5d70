"""Triton serving children of one version: the Deployment and the Service `<lm>-<version>`.

The pods run the stock `tritonserver` on the version's model repository, mounted read-only
from a pvc:// artifact store (subPath `<prefix>/<key>/model_repository`) or pulled from an
s3:// store by an init container into an emptyDir. The artifact key is a pod annotation, so
a new artifact rolls the pods (surge first, never below the ready count).

Clients reach a pod only through its front container (`python3 -m lmo_runtime.front`, the
code `lmo up` runs): OpenAI-compatible, the text API and KServe v2 for the public model on
HTTP_PORT. Triton's own HTTP and gRPC listen on the pod's loopback, so its internal models
(`<task>_onnx`, the GPT-2 decoder, `feedback`) and its repository API are out of reach;
its metrics port stays open for Prometheus.

GPU pods: a pod gets GPUs by `serving.gpus` or a `serving.gpuResource` limit in
`serving.resources` (`Serving.gpu_count`; the conversion request carries the same count, so
its config.pbtxt is KIND_GPU either way); it tolerates the usual `<gpuResource>:NoSchedule`
taint of GPU nodes unless the spec's tolerations already name that key, runs under
`serving.runtimeClassName` when given, and with `serving.accelerator: tensorrt` keeps the
TensorRT engines in an emptyDir (`lmo_runtime.gpu.TENSORRT_CACHE_DIR`) so a restarted
container reuses them instead of building them again.
"""

from __future__ import annotations

from lmo import labels as L
from lmo.api import Accelerator, LanguageModel, RoutingProvider
from lmo.builders.base import (
    Owner,
    VersionPlan,
    add_common_pod_fields,
    artifact_store,
    canonical_quantity,
    canonical_resources,
    child_name,
    container_security,
    gpu_tolerations,
    owner_reference,
    pod_security,
    prune_empty,
    scheme,
    split_pvc,
)
from lmo.builders.payloads import payload_env, payload_secret
from lmo.errors import UserError
from lmo.settings import OperatorSettings
from lmo_runtime.gpu import TENSORRT_CACHE_DIR
from lmo_runtime.manifest import REPOSITORY_DIR

HTTP_PORT = 8000  # the front container: the pod's only client port
METRICS_PORT = 8002
# Triton's HTTP and gRPC, on the pod's loopback only (the front talks to TRITON_HTTP_PORT)
TRITON_HTTP_PORT = 8010
TRITON_GRPC_PORT = 8011
LOOPBACK = "127.0.0.1"
MODELS = "/models"
# On shutdown the pod first waits DRAIN_SECONDS (preStop) so that Services and Gateways stop
# sending it requests, then Triton gets EXIT_TIMEOUT_SECONDS to finish in-flight ones.
DRAIN_SECONDS = 5
EXIT_TIMEOUT_SECONDS = 30
TENSORRT_CACHE_SIZE = "8Gi"


def shm_size(needed: int | None) -> str:
    """/dev/shm sizeLimit: 1Gi, or what the artifact needs plus a quarter, in whole MiB."""
    mib = 1024
    if needed:
        mib = max(mib, -(-needed * 5 // 4 // (1 << 20)))
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def triton_args(lm: LanguageModel) -> list[str]:
    """tritonserver flags: every model in the repository loaded at start, ready when all are,
    metrics on METRICS_PORT with latency summaries (Triton 2.4x+)."""
    args = [
        f"--model-repository={MODELS}",
        "--model-control-mode=none",
        "--strict-readiness=true",
        # A model that fails to load leaves the server up but not ready, so the pod stays
        # unready and its log tells why instead of crash-looping without one.
        "--exit-on-error=false",
        "--allow-metrics=true",
        f"--metrics-port={METRICS_PORT}",
        # Triton binds metrics to --http-address unless told: on loopback the kubelet's
        # probes and Prometheus (both on the pod IP) were refused (found on a real node)
        "--metrics-address=0.0.0.0",
        # request latency quantiles (nv_inference_request_summary_us{quantile="0.99"}), so
        # rollout analysis gates maxLatencyP99Ms on a true p99 rather than the mean
        "--metrics-config=summary_latencies=true",
        f"--http-address={LOOPBACK}",
        f"--http-port={TRITON_HTTP_PORT}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={TRITON_GRPC_PORT}",
        f"--exit-timeout-secs={EXIT_TIMEOUT_SECONDS}",
    ]
    if lm.spec.serving.gpu_count() == 0:
        args.append("--allow-gpu-metrics=false")
    return args


def ports() -> list[dict]:
    """The Triton container's ports: metrics only (HTTP and gRPC are on loopback)."""
    return [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]


def front_args(lm: LanguageModel, version: str) -> list[str]:
    """`python3 -m lmo_runtime.front` flags of one version's front container."""
    return ["--task", lm.spec.task, "--model", lm.metadata.name, "--version", version,
            "--triton", f"http://{LOOPBACK}:{TRITON_HTTP_PORT}", "--repository", MODELS,
            "--port", str(HTTP_PORT)]


def _probe(path: str, period: int, failures: int, port: str = "http") -> dict:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def _model_volume(
    lm: LanguageModel, settings: OperatorSettings, serve_uri: str
) -> tuple[list[dict], dict, list[dict]]:
    """(volumes, the /models mount of the Triton container, init containers) for serve_uri."""
    kind = scheme(serve_uri)
    if kind == "pvc":
        claim, path = split_pvc(serve_uri)
        volume = {
            "name": "models",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
        }
        sub = f"{path}/{REPOSITORY_DIR}" if path else REPOSITORY_DIR
        mount = {"name": "models", "mountPath": MODELS, "subPath": sub, "readOnly": True}
        return [volume], mount, []
    if kind == "s3":
        volume = {
            "name": "models",
            "emptyDir": {"sizeLimit": canonical_quantity(settings.scratch_size)},
        }
        init = {
            "name": "pull-model",
            "image": settings.converter_image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["python", "-m", "lmo_runtime.store", "pull"],
            "args": [f"{serve_uri.rstrip('/')}/{REPOSITORY_DIR}", MODELS],
            "env": [{"name": "HOME", "value": "/tmp"}],
            "volumeMounts": [
                {"name": "models", "mountPath": MODELS},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "securityContext": container_security(),
        }
        secret = artifact_store(lm.spec, settings)[1]
        if secret:
            init["envFrom"] = [{"secretRef": {"name": secret}}]
        mount = {"name": "models", "mountPath": MODELS, "readOnly": True}
        return [volume], mount, [init]
    raise UserError(
        f"artifact store {serve_uri!r}: a cluster serves from s3:// or pvc:// only "
        "(file:// works with `lmo up`); set spec.artifacts.uri or the artifactStore Helm value"
    )


def build_deployment(
    lm: LanguageModel,
    owner: Owner,
    settings: OperatorSettings,
    plan: VersionPlan,
    replicas: int | None,
    routed: bool | None = None,
) -> dict:
    """The Triton Deployment `<lm>-<version>` serving `plan.serve_uri`.

    replicas: None leaves the field out (an autoscaler owns it, and server-side apply must
    not fight it). routed: for provider Service, whether the version receives traffic now
    (the `lmo.dev/routed` pod label); None for GatewayAPI.
    """
    if plan.serve_uri is None:
        raise ValueError(f"version {plan.name}: no artifact to serve yet (serve_uri is None)")
    serving = lm.spec.serving
    lm_name = lm.metadata.name
    name = child_name(lm_name, plan.name)

    volumes, model_mount, init = _model_volume(lm, settings, plan.serve_uri)
    volumes += [
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        # The Python backend (tokenizer steps) passes tensors through shared memory; the
        # runtime's default 64 MiB /dev/shm is too small for batched requests, and a decoder
        # called through BLS passes its KV cache every step: sized to the artifact's need.
        {"name": "dshm", "emptyDir": {"medium": "Memory",
                                      "sizeLimit": shm_size(plan.shared_memory_bytes)}},
    ]

    resources = canonical_resources(serving.resources.to_dict())
    # A resource with only a limit gets request = limit from the API server; a default
    # request above that limit would make the pod invalid, so only unmentioned ones get one.
    mentioned = resources.get("requests", {}).keys() | resources.get("limits", {}).keys()
    for resource, quantity in settings.triton_default_requests.items():
        if resource not in mentioned:
            resources.setdefault("requests", {})[resource] = canonical_quantity(quantity)
    if serving.gpus > 0:
        resources.setdefault("limits", {})[serving.gpu_resource] = str(serving.gpus)
    gpus = serving.gpu_count()
    tensorrt = gpus > 0 and serving.accelerator == Accelerator.TENSORRT.value
    if tensorrt:
        volumes.append({"name": "tensorrt-cache",
                        "emptyDir": {"sizeLimit": TENSORRT_CACHE_SIZE}})

    container = {
        "name": "triton",
        "image": serving.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tritonserver"],
        "args": triton_args(lm),
        "ports": ports(),
        "env": [{"name": "HOME", "value": "/tmp"}] + [
            {"name": k, "value": v} for k, v in payload_env(lm.spec, lm_name, plan.name).items()
        ],
        "volumeMounts": [
            model_mount,
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
            *([{"name": "tensorrt-cache", "mountPath": TENSORRT_CACHE_DIR}] if tensorrt else []),
        ],
        # Triton's HTTP is on loopback, out of the kubelet's reach: its metrics port answers
        # once the repository is loaded, and as long as the server lives
        "startupProbe": _probe(
            "/metrics",
            settings.triton_startup_period_seconds,
            settings.triton_startup_failure_threshold,
            "metrics",
        ),
        "livenessProbe": _probe("/metrics", 10, 3, "metrics"),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    if resources:
        container["resources"] = resources
    if payload_secret(lm.spec):
        # optional: without the Secret the pods still serve; the sink fails and its drops
        # are counted (a payload sink never takes inference down)
        container["envFrom"] = [{"secretRef": {"name": payload_secret(lm.spec),
                                               "optional": True}}]

    pod_spec: dict = {
        "terminationGracePeriodSeconds": DRAIN_SECONDS + EXIT_TIMEOUT_SECONDS + 5,
        "securityContext": pod_security(settings.pod_uid),
        "containers": [container, _front_container(lm, settings, plan.name, model_mount)],
        "volumes": volumes,
        "enableServiceLinks": False,
    }
    if init:
        pod_spec["initContainers"] = init
    add_common_pod_fields(pod_spec, settings)
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    tolerations = gpu_tolerations(serving) if gpus > 0 else [
        t.to_dict() for t in serving.tolerations]
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if serving.runtime_class_name:
        pod_spec["runtimeClassName"] = serving.runtime_class_name
    affinity = prune_empty(serving.affinity or {})
    if affinity:
        pod_spec["affinity"] = affinity
    # Replicas of a version prefer different nodes, so one node going away does not take
    # the whole version with it (a preference: a one-node cluster still schedules them).
    pod_spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": L.selector(lm_name, plan.name)},
        }
    ]

    pod_labels = L.labels(lm_name, plan.name)
    if routed is not None:
        pod_labels[L.ROUTED] = "true" if routed else "false"
    key = plan.serve_key or ""
    pod_annotations = {L.ARTIFACT_KEY: key}
    if settings.prometheus_annotations:
        pod_annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(METRICS_PORT),
                "prometheus.io/path": "/metrics",
            }
        )

    startup_budget = (
        settings.triton_startup_period_seconds * settings.triton_startup_failure_threshold
    )
    spec: dict = {
        "selector": {"matchLabels": L.selector(lm_name, plan.name)},
        # Long enough for a GPU node to join and the model to load before the reconciler
        # reports ProgressDeadlineExceeded.
        "progressDeadlineSeconds": startup_budget + settings.node_startup_seconds,
        "revisionHistoryLimit": 3,
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        },
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": pod_spec,
        },
    }
    if replicas is not None:
        spec = {"replicas": replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": L.labels(lm_name, plan.name),
            "annotations": {L.ARTIFACT_KEY: key},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def _front_container(lm: LanguageModel, settings: OperatorSettings, version: str,
                     model_mount: dict) -> dict:
    """The front of one version (lmo_runtime.front, in the Triton image): the pod's client
    port, ready when Triton is."""
    env = [{"name": "HOME", "value": "/tmp"}]
    if lm.spec.chat_template is not None:  # serves /v1/chat/completions
        env.append({"name": "LMO_CHAT_TEMPLATE", "value": lm.spec.chat_template.to_json()})
    return {
        "name": "front",
        "image": lm.spec.serving.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python3", "-m", "lmo_runtime.front"],
        "args": front_args(lm, version),
        "ports": [{"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": [model_mount, {"name": "tmp", "mountPath": "/tmp"}],
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        # keeps answering while Services and Gateways stop sending (Triton drains alike)
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(DRAIN_SECONDS)]}}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }


def service_ports(*, metrics: bool = True) -> list[dict]:
    """The ports of a Service in front of Triton pods: http (the front), and metrics unless
    `metrics` is false (the provider Service `<lm>` serves clients only)."""
    ports = [{"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"}]
    if metrics:
        ports.append(
            {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}
        )
    return ports


def build_service(lm: LanguageModel, owner: Owner, version: str) -> dict:
    """The Service `<lm>-<version>` in front of one version's Triton pods (HTTPRoute backend)."""
    lm_name = lm.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": child_name(lm_name, version),
            "namespace": owner.namespace,
            "labels": L.labels(lm_name, version),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": L.selector(lm_name, version),
            "ports": service_ports(),
        },
    }


def uses_service_provider(lm: LanguageModel) -> bool:
    return lm.spec.routing.provider == RoutingProvider.SERVICE.value
