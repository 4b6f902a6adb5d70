"""Helpers for the builder tests: small LanguageModels and plans built from dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from lmo.api import LanguageModel, parse
from lmo.builders import Owner, VersionPlan, artifact_store, artifact_uri, conversion_request
from lmo.settings import OperatorSettings

BASE: dict[str, Any] = {
    "apiVersion": "lmo.dev/v1alpha1",
    "kind": "LanguageModel",
    "metadata": {"name": "chat", "namespace": "ml"},
    "spec": {
        "task": "text-generation",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://models/gpt2/v1/"}, "traffic": 90},
            {"name": "v2", "checkpoint": {"uri": "s3://models/gpt2/v2/"}, "traffic": 10},
        ],
    },
}

OWNER = Owner(name="chat", namespace="ml", uid="5f0c6a52-0d5e-4c3e-9a51-1f2b3c4d5e6f")


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_lm(spec: dict | None = None, **meta: Any) -> LanguageModel:
    """BASE with `spec` merged into its spec (dicts merge, lists replace)."""
    obj = merge(BASE, {"spec": spec or {}, "metadata": meta})
    return parse(obj)


def make_plans(
    lm: LanguageModel,
    settings: OperatorSettings,
    *,
    convert: set[str] = frozenset(),
    serving: set[str] | None = None,
    traffic: dict[str, int] | None = None,
    bounds: dict[str, tuple[int, int]] | None = None,
) -> list[VersionPlan]:
    """A plan per version: serving its desired artifact unless left out of `serving`."""
    store, _ = artifact_store(lm.spec, settings)
    traffic = traffic if traffic is not None else lm.spec.effective_traffic()
    names = [v.name for v in lm.spec.versions]
    serving = set(names) if serving is None else serving
    plans = []
    for v in lm.spec.versions:
        request = conversion_request(lm.spec, v)
        uri = artifact_uri(store, request.key())
        plans.append(
            VersionPlan(
                name=v.name,
                request=request,
                artifact_uri=uri,
                convert=v.name in convert,
                serve_uri=uri if v.name in serving else None,
                traffic=traffic.get(v.name, 0),
                bounds=(bounds or {}).get(v.name),
            )
        )
    return plans


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings()


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def container(obj: dict, name: str | None = None) -> dict:
    """The (named, else first) container of a Deployment or Job."""
    cs = obj["spec"]["template"]["spec"]["containers"]
    return cs[0] if name is None else next(c for c in cs if c["name"] == name)
