"""Every label set lmo puts on its children comes from here.

One function makes the labels so that selectors, Prometheus relabelling (`lmo.dev/model`,
`lmo.dev/version` become `lmo_model`, `lmo_version`) and `kubectl get -l` all agree.
`selector()` is the stable subset used in label selectors: a Deployment's selector is
immutable, so it never contains anything that may change over the object's life.
"""

from __future__ import annotations

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
MODEL = "lmo.dev/model"
VERSION = "lmo.dev/version"
# Annotation on Triton pods: the content key of the artifact they serve (a new key rolls them).
ARTIFACT_KEY = "lmo.dev/artifact-key"
# Pod label for provider Service routing: "true" only on pods of versions that get traffic now,
# so the Service over all versions (which selects on it) never reaches a 0% version.
ROUTED = "lmo.dev/routed"

APP = "lmo"
TRITON = "triton"
CONVERTER = "converter"
ROUTER = "router"
AUTOSCALER = "autoscaler"


def labels(lm_name: str, version: str | None = None, component: str = TRITON) -> dict[str, str]:
    """The full label set of a child of LanguageModel `lm_name` (for one version, if given)."""
    out = {
        NAME: APP,
        INSTANCE: lm_name,
        COMPONENT: component,
        MANAGED_BY: APP,
        MODEL: lm_name,
    }
    if version is not None:
        out[VERSION] = version
    return out


def selector(lm_name: str, version: str | None = None, component: str = TRITON) -> dict[str, str]:
    """Labels that select the pods of `lm_name` (one version, or all versions when None).

    The component is part of it so that a Service over all versions never selects the
    conversion Job's pods, which carry the same model label.
    """
    out = {MODEL: lm_name, COMPONENT: component}
    if version is not None:
        out[VERSION] = version
    return out
