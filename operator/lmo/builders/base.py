"""Shared pieces of the pure builders: owner references, child names, the version plan.

The reconciler decides *what* should exist per version (a `VersionPlan`); the builders turn
plans into manifests. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from lmo.api import API_VERSION, KIND, LanguageModelSpec
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
