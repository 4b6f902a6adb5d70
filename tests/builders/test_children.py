"""build_children as a whole: golden renders, API validity, SSA list keys, determinism, purity."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import kubernetes_validate
import pytest

from lmo.api import load_file
from lmo.builders import CHILD_KINDS, build_children
from lmo.render import dump_yaml, render_objects
from lmo.settings import OperatorSettings

from .conftest import OWNER, make_lm, make_plans

GOLDEN = Path(__file__).parent / "golden"
OWNER_UID = "0d8a3c1e-7f7b-4f43-9d55-2b1e8c6a9f10"
PROMETHEUS = "prometheus_url=http://prometheus.monitoring:9090"

# name -> (input file, render options, settings overrides)
CASES = {
    "gpt2-canary": ("gpt2-canary.yaml", {}, []),
    "gpt2-canary-pending": ("gpt2-canary.yaml", {"pending": True}, []),
    "tiny-bert": ("tiny-bert.yaml", {}, [PROMETHEUS]),
}
CORE_KINDS = {"Deployment", "Service", "Job", "HorizontalPodAutoscaler"}


def _render(case: str) -> list[dict]:
    source, options, overrides = CASES[case]
    settings = OperatorSettings().with_overrides(overrides)
    models = load_file(GOLDEN / "inputs" / source)
    return render_objects(models, settings, owner_uid=OWNER_UID, **options)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {case: _render(case) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_golden(case, rendered):
    """The full render matches tests/builders/golden/<case>.yaml (UPDATE_GOLDEN=1 rewrites it)."""
    text = dump_yaml(rendered[case])
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{case} differs from {path}; UPDATE_GOLDEN=1 if intended"


def test_golden_cases_cover_every_core_kind(rendered):
    kinds = {o["kind"] for objs in rendered.values() for o in objs}
    assert CORE_KINDS | {"HTTPRoute", "ScaledObject"} <= kinds
    assert {(o["apiVersion"], o["kind"]) for objs in rendered.values() for o in objs} <= {
        (a, k) for a, k, _ in CHILD_KINDS
    }


def _core_objects(rendered) -> list[dict]:
    return [o for objs in rendered.values() for o in objs if o["kind"] in CORE_KINDS]


def test_core_objects_validate_against_kubernetes_1_30(rendered):
    objects = _core_objects(rendered)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, "1.30", strict=True)


def test_validation_catches_a_broken_object(rendered):
    """The validator is not a no-op: an unknown field and a wrong type are refused."""
    dep = copy.deepcopy(next(o for o in _core_objects(rendered) if o["kind"] == "Deployment"))
    dep["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, "1.30", strict=True)
    job = copy.deepcopy(next(o for o in _core_objects(rendered) if o["kind"] == "Job"))
    job["spec"]["backoffLimit"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, "1.30", strict=True)


def _pod_specs(obj: dict) -> list[dict]:
    if obj["kind"] in ("Deployment", "Job"):
        return [obj["spec"]["template"]["spec"]]
    return []


def _unique(items: list[dict], key) -> bool:
    keys = [key(i) for i in items]
    return None not in keys and len(keys) == len(set(keys))


def test_ssa_list_merge_keys_present_and_unique(rendered):
    """Server-side apply merges these lists by key: every item has its key, keys are unique."""
    for obj in _core_objects(rendered):
        if obj["kind"] == "Service":
            assert _unique(obj["spec"]["ports"], lambda p: (p.get("port"), p.get("protocol")))
        for pod in _pod_specs(obj):
            containers = pod["containers"] + pod.get("initContainers", [])
            assert _unique(containers, lambda c: c.get("name"))
            assert _unique(pod["volumes"], lambda v: v.get("name"))
            for c in containers:
                assert _unique(
                    c.get("ports", []), lambda p: (p.get("containerPort"), p.get("protocol"))
                )
                assert _unique(c.get("env", []), lambda e: e.get("name"))
                assert _unique(c.get("volumeMounts", []), lambda m: m.get("mountPath"))
                mounted = {m["name"] for m in c.get("volumeMounts", [])}
                assert mounted <= {v["name"] for v in pod["volumes"]}


def test_render_is_deterministic():
    assert dump_yaml(_render("gpt2-canary")) == dump_yaml(_render("gpt2-canary"))


def test_children_order_and_ownership():
    settings = OperatorSettings()
    lm = make_lm({"autoscaling": {"engine": "HPA"}})
    plans = make_plans(lm, settings, convert={"v2"})
    children = build_children(lm, OWNER, settings, plans)
    assert [(o["kind"], o["metadata"]["name"]) for o in children] == [
        ("Deployment", "chat-v1"),
        ("Service", "chat-v1"),
        ("HorizontalPodAutoscaler", "chat-v1"),
        ("Job", f"chat-v2-convert-{plans[1].key[:8]}"),
        ("Deployment", "chat-v2"),
        ("Service", "chat-v2"),
        ("HorizontalPodAutoscaler", "chat-v2"),
        ("HTTPRoute", "chat"),
        ("NetworkPolicy", "chat"),  # spec.routing.networkPolicy defaults to true
    ]
    for obj in children:
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "lmo.dev/v1alpha1",
                "kind": "LanguageModel",
                "name": "chat",
                "uid": OWNER.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "lmo"


def test_user_dicts_not_mutated_and_not_shared():
    settings = OperatorSettings()
    lm = make_lm(
        {
            "serving": {
                "gpus": 1,
                "nodeSelector": {"pool": "gpu"},
                "resources": {"limits": {"memory": "1Gi"}},
                "affinity": {
                    "podAntiAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 10,
                                "podAffinityTerm": {
                                    "topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": {"lmo.dev/model": "chat"}},
                                },
                            }
                        ]
                    }
                },
            }
        }
    )
    before = lm.model_dump()
    children = build_children(lm, OWNER, settings, make_plans(lm, settings, convert={"v1"}))
    assert lm.model_dump() == before
    dep = next(o for o in children if o["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    pod["nodeSelector"]["pool"] = "changed"
    pod["affinity"]["podAntiAffinity"]["x"] = 1
    assert lm.spec.serving.node_selector == {"pool": "gpu"}
    assert "x" not in lm.spec.serving.affinity["podAntiAffinity"]
    assert lm.spec.serving.resources.limits == {"memory": "1Gi"}
    # a second build is unaffected by edits to the first one's output
    again = build_children(lm, OWNER, settings, make_plans(lm, settings, convert={"v1"}))
    assert next(o for o in again if o["kind"] == "Deployment")["spec"]["template"]["spec"][
        "nodeSelector"
    ] == {"pool": "gpu"}


def test_pods_get_no_api_token(rendered):
    for obj in _core_objects(rendered):
        for pod in _pod_specs(obj):
            assert pod["automountServiceAccountToken"] is False


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("pending", [False, True], ids=["serving", "pending"])
def test_every_example_renders_valid_objects(path, pending):
    """The shipped examples become valid Kubernetes objects (the same code as the operator)."""
    settings = OperatorSettings().with_overrides([PROMETHEUS])
    objects = render_objects(load_file(path), settings, pending=pending, owner_uid=OWNER_UID)
    assert objects
    for obj in objects:
        if obj["kind"] in CORE_KINDS:
            kubernetes_validate.validate(obj, "1.30", strict=True)


def test_examples_exist():
    assert EXAMPLES, "examples/*.yaml missing"


@pytest.mark.parametrize("spec", [
    {},
    {"autoscaling": {"minReplicas": 1, "maxReplicas": 3}},
    {"autoscaling": {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 3}},
    {"routing": {"provider": "Service"}},
], ids=["plain", "hpa", "keda", "service-provider"])
def test_child_kinds_are_what_the_spec_can_make(spec):
    from lmo.builders import artifact_store, child_kinds

    from .conftest import make_lm, make_plans

    settings = OperatorSettings().with_overrides([PROMETHEUS])
    lm = make_lm(spec)
    store, _ = artifact_store(lm.spec, settings)
    kinds = {k for _, k, _ in child_kinds(lm, OWNER, settings, store)}
    names = {v.name for v in lm.spec.versions}
    for convert, serving in [(names, names), (set(), names), (names, set())]:
        made = {c["kind"] for c in build_children(lm, OWNER, settings,
                                                  make_plans(lm, settings, convert=convert, serving=serving))}
        assert made <= kinds
    assert {"Job", "Deployment", "Service"} <= kinds
    # kinds this spec never makes are not listed on every reconcile
    assert not kinds & {"BackendTrafficPolicy", "SecurityPolicy", "DestinationRule", "AuthorizationPolicy"}
    assert ("ScaledObject" in kinds) == ("KEDA" in str(spec))
    assert ("HorizontalPodAutoscaler" in kinds) == ("minReplicas" in str(spec) and "KEDA" not in str(spec))
