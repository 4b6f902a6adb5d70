"""Shared pieces of the pure builders: owner references, child names, the version plan.

The reconciler decides *what* should exist per version (a `VersionPlan`); the builders turn
plans into manifests. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from lmo.api import API_VERSION, KIND, LanguageModelSpec, Serving
from lmo.settings import OperatorSettings
from lmo_runtime.manifest import ConversionRequest


@dataclass(frozen=True)
class Owner:
    """Identity of the LanguageModel that owns the children (for ownerReferences)."""

    name: str
    namespace: str
    uid: str


def owner_reference(owner: Owner) -> dict:
    """An ownerReference making the LanguageModel the controller of a child.

    blockOwnerDeletion makes foreground deletion of the LanguageModel wait for its children.
    """
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_name(lm: str, version: str, suffix: str = "") -> str:
    """`<lm>-<version>[-suffix]`: the deterministic name of a per-version child."""
    return f"{lm}-{version}-{suffix}" if suffix else f"{lm}-{version}"


@dataclass(frozen=True)
class VersionPlan:
    """What the reconciler decided for one version.

    name: the version name. request: what to convert (`request.key()` is the content key).
    artifact_uri: `<store>/<key>/` of the desired artifact. convert: the desired artifact is
    not available yet, so its conversion Job must exist. serve_uri: the artifact the
    Deployment serves now (the last good one); None means no Deployment yet. traffic: the
    weight routed now (all plans sum to 100). bounds: an autoscaler (min, max) override
    during a canary.
    """

    name: str
    request: ConversionRequest
    artifact_uri: str
    convert: bool
    serve_uri: str | None
    traffic: int
    bounds: tuple[int, int] | None = None
    # /dev/shm the served artifact needs (status.versions[].artifact.sharedMemoryBytes)
    shared_memory_bytes: int | None = None

    @property
    def key(self) -> str:
        return self.request.key()

    @property
    def serve_key(self) -> str | None:
        """Content key of the served artifact: the last path segment of `serve_uri`."""
        if self.serve_uri is None:
            return None
        return self.serve_uri.rstrip("/").rsplit("/", 1)[-1]


def artifact_uri(store: str, key: str) -> str:
    """`<store>/<key>/`: where the artifact with content key `key` lives."""
    return f"{store.rstrip('/')}/{key}/"


def split_pvc(uri: str) -> tuple[str, str]:
    """`pvc://claim/some/path` -> ("claim", "some/path") (path without surrounding slashes)."""
    parts = urlsplit(uri)
    if parts.scheme != "pvc" or not parts.netloc:
        raise ValueError(f"not a pvc://CLAIM/PATH uri: {uri!r}")
    return parts.netloc, parts.path.strip("/")


def scheme(uri: str) -> str:
    return urlsplit(uri).scheme


def artifact_store(spec: LanguageModelSpec, settings: OperatorSettings) -> tuple[str, str | None]:
    """(store uri, credentials Secret name) for a resource: spec.artifacts, else the operator's."""
    if spec.artifacts is not None:
        secret = spec.artifacts.secret_ref.name if spec.artifacts.secret_ref else None
        return spec.artifacts.uri, secret
    return settings.artifact_store, settings.artifact_store_secret


def pod_security(uid: int) -> dict:
    """Pod securityContext: non-root uid (Triton images run as uid 1000), default seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security() -> dict:
    """Container securityContext: read-only root filesystem, no privilege escalation."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def add_common_pod_fields(pod_spec: dict, settings: OperatorSettings) -> None:
    """Service account and image pull secrets from the operator settings.

    lmo's pods never call the Kubernetes API, so they get no API token (cloud workload
    identity, e.g. IRSA, injects its own projected token and still works).
    """
    pod_spec["automountServiceAccountToken"] = False
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]


_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def gpu_tolerations(serving: Serving) -> list[dict]:
    """The spec's tolerations plus, unless they already name it, one for the usual
    `<gpuResource>:NoSchedule` taint of GPU node pools (GKE, AKS and the NVIDIA GPU
    operator's docs put it there): without it a GPU pod stays Pending on such nodes."""
    tolerations = [t.to_dict() for t in serving.tolerations]
    if not any(t.get("key") == serving.gpu_resource for t in tolerations):
        tolerations.append({"key": serving.gpu_resource, "operator": "Exists",
                            "effect": "NoSchedule"})
    return tolerations


def canonical_quantity(text: str) -> str:
    """A resource quantity in the API server's canonical form ("0.5" -> "500m", "1024Mi" -> "1Gi").

    The API server stores quantities canonicalised; a child that carries the user's spelling
    would never equal what the server returns, so every reconcile would see drift (and
    apply again). Same rules as apimachinery's `Quantity.CanonicalizeBytes`: binary
    suffixes stay binary when the value is a whole number of bytes of at least 1Ki (largest
    suffix with an integer mantissa), anything else is decimal with the exponent rounded
    down to a multiple of 3 (or kept as an exponent, e.g. 1e3), precision 1n, rounded up.
    Text that is not a quantity is returned unchanged for the API server to refuse.
    """
    m = _QUANTITY.match(text.strip())
    if not m:
        return text
    number, suffix = m.group(1), m.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation:
        return text
    if suffix in _BINARY:
        value *= Decimal(1024) ** _BINARY[suffix]
        if abs(value) >= 1024 and value == value.to_integral_value():
            amount, power = int(value), 0
            while power < 6 and amount % 1024 == 0:
                amount, power = amount // 1024, power + 1
            return f"{amount}{[k for k, v in _BINARY.items() if v == power][0] if power else ''}"
        exponent_form = False
    elif suffix[:1] in ("e", "E"):
        value *= Decimal(10) ** int(suffix[1:])
        exponent_form = True
    else:
        value *= Decimal(10) ** _DECIMAL[suffix]
        exponent_form = False
    nanos = int((value * Decimal(10) ** 9).to_integral_value(rounding=ROUND_CEILING))
    if nanos == 0:
        return "0"
    amount, exponent = nanos, -9
    while amount % 10 == 0 and exponent < 18:
        amount, exponent = amount // 10, exponent + 1
    while exponent % 3:
        amount, exponent = amount * 10, exponent - 1
    if exponent_form:
        return f"{amount}e{exponent}" if exponent else str(amount)
    return f"{amount}{[k for k, v in _DECIMAL.items() if v == exponent][0]}"


def canonical_resources(resources: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """A copy of a ResourceRequirements dict with every quantity canonical; empty parts dropped."""
    return {
        part: {name: canonical_quantity(str(q)) for name, q in values.items()}
        for part, values in resources.items()
        if values
    }


def prune_empty(value: Any) -> Any:
    """A deep copy of a user-supplied object without empty dicts, lists and nulls.

    The API server leaves empty optional fields out of what it stores, so an applied `[]`
    or `{}` would never be seen again and would read as drift on every reconcile.
    """
    if isinstance(value, dict):
        out = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        out = [prune_empty(v) for v in value]
        return [v for v in out if v not in ({}, [], None)]
    return value
