"""Shared pieces of the pure builders: owner references, child names, the version plan.

The reconciler decides *what* should exist per version (a `VersionPlan`); the builders turn
plans into manifests. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from lmo.api import API_VERSION, KIND
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
