"""labels(), selector(), owner references, child names and the plan helpers."""

from __future__ import annotations

import pytest

from lmo import labels as L
from lmo.api import API_VERSION, KIND
from lmo.builders import (
    artifact_store,
    artifact_uri,
    child_name,
    conversion_request,
    owner_reference,
)
from lmo.builders.base import split_pvc
from lmo.settings import OperatorSettings

from .conftest import OWNER, make_lm, make_plans


def test_labels_full_set():
    assert L.labels("chat", "v1") == {
        "app.kubernetes.io/name": "lmo",
        "app.kubernetes.io/instance": "chat",
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/managed-by": "lmo",
        "lmo.dev/model": "chat",
        "lmo.dev/version": "v1",
    }
    assert "lmo.dev/version" not in L.labels("chat", component="router")
    assert L.labels("chat", "v1", "converter")[L.COMPONENT] == "converter"


def test_selector_is_subset_of_labels_and_excludes_converter_pods():
    for version in ("v1", None):
        sel = L.selector("chat", version)
        assert sel.items() <= L.labels("chat", version).items()
    # the model-wide selector must not match the conversion Job's pods
    conv = L.labels("chat", "v1", L.CONVERTER)
    assert not L.selector("chat").items() <= conv.items()


def test_owner_reference_controls():
    ref = owner_reference(OWNER)
    assert ref == {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": "chat",
        "uid": OWNER.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_child_names():
    assert child_name("chat", "v1") == "chat-v1"
    assert child_name("chat", "v1", "convert-abcdef12") == "chat-v1-convert-abcdef12"


def test_split_pvc():
    assert split_pvc("pvc://claim/a/b/") == ("claim", "a/b")
    assert split_pvc("pvc://claim") == ("claim", "")
    with pytest.raises(ValueError, match="pvc://CLAIM/PATH"):
        split_pvc("s3://bucket/x")


def test_conversion_request_carries_spec_fields():
    lm = make_lm(
        {
            "versions": [
                {
                    "name": "v1",
                    "checkpoint": {"uri": "s3://m/v1/", "sha256": "a" * 64},
                    "optimize": {
                        "precision": "int8-static",
                        "accuracyGate": {"minScore": 0.95, "fallback": True},
                        "calibrationSamples": 128,
                    },
                }
            ],
            "serving": {
                "gpus": 2,
                "backend": "python",
                "batching": {"maxBatchSize": 4, "maxQueueDelayMicroseconds": 100},
            },
        }
    )
    r = conversion_request(lm.spec, lm.spec.versions[0])
    assert (r.checkpoint_uri, r.checkpoint_sha256, r.task) == (
        "s3://m/v1/",
        "a" * 64,
        "text-generation",
    )
    assert (r.precision, r.min_score, r.fallback, r.calibration_samples) == (
        "int8-static",
        0.95,
        True,
        128,
    )
    assert (r.backend, r.max_batch_size, r.max_queue_delay_microseconds, r.gpus) == (
        "python",
        4,
        100,
        2,
    )


def test_serving_settings_change_the_content_key():
    a = make_lm()
    b = make_lm({"serving": {"batching": {"maxBatchSize": 8}}})
    ka = conversion_request(a.spec, a.spec.versions[0]).key()
    kb = conversion_request(b.spec, b.spec.versions[0]).key()
    assert ka != kb


def test_artifact_store_prefers_spec_artifacts():
    settings = OperatorSettings(artifact_store="s3://ops/lmo", artifact_store_secret="ops-creds")
    assert artifact_store(make_lm().spec, settings) == ("s3://ops/lmo", "ops-creds")
    lm = make_lm({"artifacts": {"uri": "pvc://mine/store"}})
    assert artifact_store(lm.spec, settings) == ("pvc://mine/store", None)
    assert artifact_uri("s3://ops/lmo/", "k") == "s3://ops/lmo/k/"


def test_plan_serve_key():
    lm = make_lm()
    plan = make_plans(lm, OperatorSettings())[0]
    assert plan.serve_key == plan.key == plan.request.key()


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("0.5", "500m"),
        ("1000m", "1"),
        ("1.5", "1500m"),
        ("2000", "2k"),
        ("1200", "1200"),
        ("1000k", "1M"),
        ("2.5G", "2500M"),
        ("0.001", "1m"),
        ("0", "0"),
        ("1024Mi", "1Gi"),
        ("1536Mi", "1536Mi"),
        ("0.5Gi", "512Mi"),
        ("1.5Gi", "1536Mi"),
        ("0.5Ki", "512"),
        ("8Gi", "8Gi"),
        ("1e3", "1e3"),
        ("1.5e3", "1500"),
        ("128974848", "128974848"),
        ("not-a-quantity", "not-a-quantity"),
    ],
)
def test_canonical_quantity(given, canonical):
    """The API server's canonical spelling, so applied children equal what it returns."""
    from lmo.builders.base import canonical_quantity

    assert canonical_quantity(given) == canonical


def test_user_resources_reach_the_pods_canonical():
    from lmo.builders import build_children

    settings = OperatorSettings(
        converter_resources={"requests": {"cpu": "0.5", "memory": "4096Mi"}}, scratch_size="10240Mi"
    )
    lm = make_lm(
        {"serving": {"resources": {"requests": {"cpu": "1.5", "memory": "2048Mi"}, "limits": {}}}}
    )
    children = build_children(lm, OWNER, settings, make_plans(lm, settings, convert={"v1"}))
    job = next(o for o in children if o["kind"] == "Job")
    dep = next(o for o in children if o["kind"] == "Deployment")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "4Gi"}
    }
    assert job["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "10Gi"
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1500m", "memory": "2Gi"}
    }
