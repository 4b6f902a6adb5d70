"""Unit tables for lmo.observe: reading Jobs, termination messages and Deployments."""

from __future__ import annotations

import json

import pytest

from lmo import observe as O

KEY = "ab" * 32
URI = f"s3://store/{KEY}/"


@pytest.mark.parametrize(
    "status, expect",
    [
        ({}, "running"),
        ({"active": 1}, "running"),
        ({"succeeded": 1}, "succeeded"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "succeeded"),
        ({"conditions": [{"type": "Failed", "status": "True"}]}, "failed"),
        ({"conditions": [{"type": "Failed", "status": "False"}], "active": 1}, "running"),
    ],
)
def test_job_state(status, expect):
    assert O.job_state({"status": status}) == expect


def test_job_failure_message():
    job = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                      "reason": "BackoffLimitExceeded",
                                      "message": "Job has reached the specified backoff limit"}]}}
    assert O.job_failure_message(job) == "Job has reached the specified backoff limit"
    assert O.job_failure_message({}) == "the conversion Job failed"


def summary(**over) -> str:
    data = {"key": KEY, "accepted": True, "precision": "int8", "sha256": "f" * 64,
            "sizeBytes": 1000, "score": 0.995, "reason": ""}
    data.update(over)
    return json.dumps(data)


@pytest.mark.parametrize(
    "messages, expect",
    [
        ([], None),
        (["Traceback: boom"], None),  # not JSON: no verdict
        ([summary()], (True, "", {"uri": URI, "sha256": "f" * 64, "precision": "int8",
                                  "sizeBytes": 1000, "score": 0.995, "key": KEY})),
        ([summary(accepted=False, reason="accuracyGate.minScore: 0.91 < 0.99", sha256=None)],
         (False, "accuracyGate.minScore: 0.91 < 0.99", None)),
        (['{"accepted": false, "reason": "--task: bad"}'], (False, "--task: bad", None)),
        ([summary(key="cd" * 32)], (False, "the converter reported artifact cdcdcdcd, not abababab", None)),
        (["not json", summary()], (True, "", {"uri": URI, "sha256": "f" * 64, "precision": "int8",
                                             "sizeBytes": 1000, "score": 0.995, "key": KEY})),
    ],
)
def test_conversion_outcome(messages, expect):
    assert O.conversion_outcome(messages, URI, KEY) == expect


def test_the_artifact_keeps_the_entry_model_and_bounded_golden_inputs():
    inputs = ["a [MASK] day"] + ["x" * 500] * 9 + [7]
    accepted, _, artifact = O.conversion_outcome(
        [summary(entryModel="fill_mask", goldenInputs=inputs[:10])], URI, KEY
    )
    assert accepted and artifact["entryModel"] == "fill_mask"
    assert artifact["goldenInputs"] == ["a [MASK] day"] + ["x" * 200] * 7
    # anything but a list of texts is no golden inputs
    _, _, artifact = O.conversion_outcome([summary(goldenInputs=inputs)], URI, KEY)
    assert "goldenInputs" not in artifact


def test_the_artifact_keeps_what_dev_shm_needs():
    """sharedMemoryBytes of the summary (and of a full manifest) reaches the status artifact,
    where the Triton Deployment's /dev/shm is sized from it; the old digest stays without."""
    from lmo_runtime.manifest import ConversionRequest, Manifest

    _, _, artifact = O.conversion_outcome([summary(sharedMemoryBytes=3 << 30)], URI, KEY)
    assert artifact["sharedMemoryBytes"] == 3 << 30
    _, _, artifact = O.conversion_outcome([summary(sharedMemoryBytes="lots")], URI, KEY)
    assert "sharedMemoryBytes" not in artifact
    request = ConversionRequest(checkpoint_uri="s3://m/x/", task="text-generation")
    m = Manifest(key=KEY, request=request, accepted=True, task="text-generation")
    digest = m.digest()
    m.shared_memory_bytes = 5 << 30
    assert m.summary(URI)["sharedMemoryBytes"] == 5 << 30 and m.digest() != digest
    m.shared_memory_bytes = None
    assert m.digest() == digest  # manifests of before keep their digest


def test_a_full_manifest_is_read_too():
    from lmo_runtime.manifest import ConversionRequest, Manifest

    request = ConversionRequest(checkpoint_uri="s3://m/x/", task="fill-mask")
    m = Manifest(key=KEY, request=request, accepted=True, task="fill-mask", precision="fp32")
    accepted, reason, artifact = O.conversion_outcome([m.model_dump_json()], URI, KEY)
    assert accepted and reason == "" and artifact["key"] == KEY and artifact["uri"] == URI


@pytest.mark.parametrize(
    "dep, ready",
    [
        (None, False),
        ({"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "readyReplicas": 1}}, True),
        # a spec not observed yet (a scale): its ready pods still serve
        ({"metadata": {"generation": 3}, "status": {"observedGeneration": 2, "readyReplicas": 1}}, True),
        ({"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "readyReplicas": 0}}, False),
        ({"status": {"readyReplicas": 2}}, True),
    ],
)
def test_deployment_ready(dep, ready):
    assert O.deployment_ready(dep) is ready


@pytest.mark.parametrize(
    "status, done",
    [
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, True),
        # a new pod up, an old one still serving the previous template
        ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 3}, False),
        # the controller has not seen the new template yet
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, False),
        ({"replicas": 2, "updatedReplicas": 2}, False),
    ],
)
def test_rolled_out(status, done):
    assert O.rolled_out({"metadata": {"generation": 2}, "status": status}) is done


def test_template_artifact_key():
    dep = {"spec": {"template": {"metadata": {"annotations": {"lmo.dev/artifact-key": KEY}}}}}
    assert O.template_artifact_key(dep) == KEY
    assert O.template_artifact_key({"spec": {}}) is None and O.template_artifact_key(None) is None


def test_progress_deadline_and_ownership():
    stuck = {"status": {"conditions": [{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded"}]}}
    assert O.progress_deadline_exceeded(stuck)
    assert not O.progress_deadline_exceeded({"status": {"conditions": [
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}})
    assert not O.progress_deadline_exceeded(None)
    owned = {"metadata": {"ownerReferences": [{"uid": "u1", "controller": True}]}}
    assert O.controlled_by(owned, "u1") and not O.controlled_by(owned, "u2")
    assert not O.controlled_by({"metadata": {"ownerReferences": [{"uid": "u1"}]}}, "u1")
