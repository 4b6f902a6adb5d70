"""Operator-wide settings, read once from `LMO_*` environment variables (set by the Helm chart).

Every field maps to the environment variable `LMO_<FIELD NAME IN UPPER CASE>`; e.g.
`artifact_store` is `LMO_ARTIFACT_STORE`. Dict and list fields take JSON
(`LMO_CONVERTER_RESOURCES='{"requests": {"cpu": "2"}}'`). `lmo render --settings K=V`
takes the same keys (field name, camelCase name or env name). The Helm chart sets the
common ones from its values and any other from `settings:` (camelCase keys). Unknown
`LMO_*` variables are ignored here (other parts of lmo read their own, e.g. LMO_PVC_ROOT).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from lmo import __version__
from lmo.errors import UserError

ENV_PREFIX = "LMO_"


class OperatorSettings(BaseModel):
    """What the operator needs to know that is not in a LanguageModel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact_store: str = Field(
        default="pvc://lmo-artifacts/store",
        pattern=r"^(s3|pvc|file)://.+",
        description="Where artifacts live: s3://bucket/prefix or pvc://claim/prefix "
        "(ReadWriteMany). spec.artifacts.uri overrides it per resource.",
    )
    artifact_store_secret: str | None = Field(
        default=None,
        description="Secret (in each LanguageModel's namespace) with the s3:// store "
        "credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL...).",
    )
    converter_image: str = Field(
        default=f"ghcr.io/lmo-dev/lmo-converter:{__version__}",
        description="Image of the conversion Job; also pulls s3:// artifacts for Triton pods.",
    )
    converter_gpu_image: str = Field(
        default=f"ghcr.io/lmo-dev/lmo-converter-gpu:{__version__}",
        description="Image of the conversion Jobs that run on a GPU (fp16 of GPU-served "
        "versions, see converter_gpu_for_fp16): CUDA torch and onnxruntime-gpu "
        "(runtime/Dockerfile.converter-gpu).",
    )
    field_manager: str = Field(default="lmo", description="Server-side apply field manager.")
    image_pull_policy: str = Field(
        default="IfNotPresent",
        pattern=r"^(Always|IfNotPresent|Never)$",
        description="imagePullPolicy of the converter and Triton containers.",
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Pull secrets added to every pod lmo creates."
    )
    service_account: str | None = Field(
        default=None,
        description="Service account of converter and Triton pods (e.g. for IRSA / workload "
        "identity access to s3://). None: the namespace default.",
    )
    job_ttl_seconds: int = Field(
        default=3600,
        ge=0,
        description="ttlSecondsAfterFinished of conversion Jobs (the manifest in the store "
        "is the lasting record; the Job only shows the log for a while).",
    )
    job_deadline_seconds: int = Field(
        default=7200, ge=60, description="activeDeadlineSeconds of a conversion Job."
    )
    converter_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        },
        description="core/v1 ResourceRequirements of the converter container.",
    )
    converter_gpu_for_fp16: bool = Field(
        default=True,
        description="A version with precision fp16 and serving.gpus > 0 is converted on one "
        "GPU (requests serving.gpuResource: 1, tolerations and nodeSelector of serving), "
        "because ONNX Runtime's CPU provider lacks most fp16 kernels, so the accuracy gate "
        "could not score it faithfully on CPU.",
    )
    converter_node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of conversion Jobs."
    )
    scratch_size: str = Field(
        default="20Gi",
        description="sizeLimit of the emptyDir scratch volume (downloads, ONNX export, HF "
        "cache) of converter pods and of the model repository pulled by Triton pods.",
    )
    gateway_name: str = Field(
        default="lmo-gateway",
        description="Gateway an HTTPRoute attaches to when spec.routing.parentRef is unset.",
    )
    gateway_namespace: str | None = Field(
        default=None, description="Namespace of that Gateway (None: the route's namespace)."
    )
    operator_namespace: str | None = Field(
        default=None,
        description="Namespace of the operator's pods (the chart sets it): the NetworkPolicy "
        "of each LanguageModel lets them reach Triton (golden replay, metrics).",
    )
    operator_pod_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "lmo",
                                 "app.kubernetes.io/component": "operator"},
        description="Labels of the operator's pods, for the NetworkPolicy peer.",
    )
    gateway_peers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="NetworkPolicy peers that send client traffic to Triton (port 8000/8001); "
        "empty: the namespace of the route's Gateway.",
    )
    metrics_peers: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        description="NetworkPolicy peers that scrape Triton's metrics (port 8002): the "
        "Prometheus of the cluster.",
    )
    gateway_session_persistence: bool = Field(
        default=False,
        description="The cluster's HTTPRoute CRD is the Gateway API experimental channel's "
        "(rules[].sessionPersistence) and the gateway implements header session "
        "persistence: spec.routing.sticky is rendered as such. False: sticky is not "
        "rendered and the LanguageModel's Sticky condition says what is missing.",
    )
    gateway_address: str | None = Field(
        default=None,
        description="Host (and port) clients use to reach the Gateway, for status.endpoint "
        "when a route has no hostnames.",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://.+",
        description="Operator-wide Prometheus that scrapes the Triton pods (KEDA triggers "
        "query it when spec.rollout.analysis.prometheusUrl is not set).",
    )
    keda_wake_query: str | None = Field(
        default=None,
        min_length=1,
        description="PromQL counting the requests that reach one version, measured outside "
        "Triton (your Gateway implementation's request counter for the backend Service), so "
        "that KEDA can wake a version with minReplicas 0: Triton's own metrics stay 0 while "
        "no pod runs. {namespace}, {service} (the version's Service, the HTTPRoute backend), "
        "{model} and {version} are filled in.",
    )
    triton_default_requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"},
        description="Requests of the Triton container for resources that spec.serving."
        "resources names neither in requests nor in limits: a pod without requests is "
        "the first evicted, and the CPU autoscaling metric is a share of the request.",
    )
    triton_startup_period_seconds: int = Field(
        default=10, ge=1, description="periodSeconds of the Triton startup probe."
    )
    triton_startup_failure_threshold: int = Field(
        default=60,
        ge=1,
        description="Startup probe failures tolerated (x period): model load and pulling "
        "from the store can take minutes for large models.",
    )
    node_startup_seconds: int = Field(
        default=300,
        ge=0,
        description="Time a new (GPU) node may take to join; added to the Triton startup "
        "budget for the Deployments' progressDeadlineSeconds.",
    )
    pod_uid: int = Field(
        default=1000,
        ge=1,
        description="Non-root uid of lmo pods (Triton images run as triton-server, uid 1000).",
    )
    prometheus_annotations: bool = Field(
        default=True, description="Add prometheus.io/scrape annotations to Triton pods."
    )

    log_format: str = Field(
        default="text",
        pattern=r"^(text|json)$",
        description="Operator log lines: text (for people) or json (for log pipelines).",
    )
    max_concurrent_reconciles: int = Field(
        default=16,
        ge=1,
        description="LanguageModels reconciled at once (controller-runtime's "
        "MaxConcurrentReconciles). Each reconcile in flight holds its children's lists and "
        "manifests, so this bounds the operator's memory when hundreds change at once; the "
        "event loop is one core, so more in flight adds memory, not speed.",
    )
    metrics_port: int = Field(
        default=8080, ge=1, le=65535, description="Port of the operator's own /metrics."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Settings from `LMO_*` variables of `environ` (default: os.environ)."""
        environ = os.environ if environ is None else environ
        raw = {
            name: environ[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in environ
        }
        return cls._from_strings(raw, lambda n: ENV_PREFIX + n.upper())

    def with_overrides(self, pairs: Iterable[str]) -> OperatorSettings:
        """A copy with `KEY=VALUE` overrides (`lmo render --settings`)."""
        names = {}
        for name in type(self).model_fields:
            names[name] = names[to_camel(name)] = names[ENV_PREFIX + name.upper()] = name
        raw: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key not in names:
                raise UserError(
                    f"--settings {pair!r}: expected KEY=VALUE with KEY one of "
                    f"{', '.join(type(self).model_fields)}"
                )
            raw[names[key]] = value
        merged = type(self)._from_strings(raw, lambda n: f"--settings {n}")
        return self.model_copy(update={k: getattr(merged, k) for k in raw})

    @classmethod
    def _from_strings(cls, raw: dict[str, str], where) -> OperatorSettings:
        values: dict[str, Any] = {}
        for name, text in raw.items():
            annotation = str(cls.model_fields[name].annotation)
            if annotation.startswith(("dict", "list")):
                try:
                    values[name] = json.loads(text)
                except json.JSONDecodeError as err:
                    raise UserError(f"{where(name)}: not valid JSON ({err})") from None
            elif annotation.endswith("| None") and text == "":
                values[name] = None
            else:
                values[name] = text
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = [
                f"{where(str(e['loc'][0]))}: {e['msg']}" if e["loc"] else e["msg"]
                for e in err.errors()
            ]
            raise UserError("; ".join(problems)) from None


def markdown_table() -> str:
    """The settings reference (docs/children.md embeds it; a test keeps the two equal)."""
    rows = ["| Helm `settings:` key | env var | default | meaning |", "|---|---|---|---|"]
    for name, field in OperatorSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, (dict, list, bool)):
            shown = json.dumps(default)
        else:
            shown = "unset" if default is None else default
        rows.append(
            f"| `{to_camel(name)}` | `{ENV_PREFIX}{name.upper()}` | `{shown}` | "
            f"{(field.description or '').replace('|', '/')} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
