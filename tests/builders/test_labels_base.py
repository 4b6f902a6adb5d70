"""labels(), selector(), owner references, child names and the plan helpers."""

from __future__ import annotations

import pytest

from lmo import labels as L
from lmo.api import API_VERSION, KIND
from lmo.builders import artifact_store, artifact_uri, child_name, conversion_request, owner_reference
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
    assert (r.checkpoint_uri, r.checkpoint_sha256, r.task) == ("s3://m/v1/", "a" * 64, "text-generation")
    assert (r.precision, r.min_score, r.fallback, r.calibration_samples) == ("int8-static", 0.95, True, 128)
    assert (r.backend, r.max_batch_size, r.max_queue_delay_microseconds, r.gpus) == ("python", 4, 100, 2)


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
