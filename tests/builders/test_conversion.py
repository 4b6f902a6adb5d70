"""The conversion Job: name, command, credentials, volumes, GPU and pod hardening."""

from __future__ import annotations

import pytest

from lmo.builders.conversion import build_conversion_job, convert_args, job_name
from lmo.settings import OperatorSettings

from .conftest import OWNER, container, make_lm, make_plans


def _job(lm, settings, version="v1"):
    plans = make_plans(lm, settings, convert={version}, serving=set())
    plan = next(p for p in plans if p.name == version)
    return plan, build_conversion_job(lm, OWNER, settings, plan)


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_job_identity_and_policies(settings):
    plan, job = _job(make_lm(), settings)
    assert job["metadata"]["name"] == f"chat-v1-convert-{plan.key[:8]}"
    assert job["metadata"]["name"] == job_name("chat", "v1", plan.key)
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "converter"
    spec = job["spec"]
    assert spec["backoffLimit"] == 1
    assert spec["ttlSecondsAfterFinished"] == settings.job_ttl_seconds
    assert spec["activeDeadlineSeconds"] == settings.job_deadline_seconds
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "convert", "operator": "In", "values": [2, 3]},
    }
    assert rules[1]["action"] == "Ignore"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert [c["name"] for c in pod["containers"]] == ["convert"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = container(job)
    assert c["image"] == settings.converter_image
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["resources"] == settings.converter_resources
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/tmp", "/scratch"} <= mounts
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["HF_HOME"].startswith("/scratch") and env["HF_HUB_OFFLINE"] == "1"


def test_command_carries_every_request_field(settings):
    lm = make_lm(
        {
            "versions": [
                {
                    "name": "v1",
                    "checkpoint": {"uri": "https://h/m/", "sha256": "b" * 64},
                    "optimize": {
                        "precision": "int8-static",
                        "accuracyGate": {"minScore": 0.9, "fallback": True},
                        "calibrationSamples": 32,
                    },
                }
            ],
            "serving": {"batching": {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 250}},
        }
    )
    plan, job = _job(lm, settings)
    c = container(job)
    assert c["command"] == ["lmo", "convert"]
    args = c["args"]
    assert args == convert_args(plan)
    assert args[0] == "https://h/m/"
    expected = {
        "--task": "text-generation",
        "--precision": "int8-static",
        "--out": plan.artifact_uri,
        "--sha256": "b" * 64,
        "--min-score": "0.9",
        "--calibration-samples": "32",
        "--backend": "onnxruntime",
        "--max-batch-size": "8",
        "--max-queue-delay-us": "250",
        "--gpus": "0",
        "--manifest-out": "/dev/termination-log",
    }
    for flag, value in expected.items():
        assert _flag(args, flag) == value, flag
    assert "--fallback" in args
    assert plan.artifact_uri == f"pvc://lmo-artifacts/store/{plan.key}/"


def test_optional_flags_left_out(settings):
    _, job = _job(make_lm(), settings)
    args = container(job)["args"]
    assert "--fallback" not in args and "--sha256" not in args


def test_pvc_checkpoint_read_only_and_pvc_store_read_write(settings):
    lm = make_lm({"versions": [{"name": "v1", "checkpoint": {"uri": "pvc://ckpts/gpt2/v1"}}]})
    _, job = _job(lm, settings)
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: (v["name"], v["persistentVolumeClaim"]["readOnly"])
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"ckpts": ("pvc-0", True), "lmo-artifacts": ("pvc-1", False)}
    mounts = {m["mountPath"]: m for m in container(job)["volumeMounts"]}
    assert mounts["/mnt/pvc/ckpts"]["readOnly"] is True
    assert mounts["/mnt/pvc/lmo-artifacts"]["readOnly"] is False
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["LMO_PVC_ROOT"] == "/mnt/pvc"


def test_same_claim_for_checkpoint_and_store_is_one_writable_volume():
    settings = OperatorSettings(artifact_store="pvc://shared/store")
    lm = make_lm({"versions": [{"name": "v1", "checkpoint": {"uri": "pvc://shared/ckpt"}}]})
    _, job = _job(lm, settings)
    pvcs = [v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert len(pvcs) == 1 and pvcs[0]["persistentVolumeClaim"]["readOnly"] is False


def test_s3_store_and_checkpoint_have_no_pvc(settings):
    s3 = OperatorSettings(artifact_store="s3://b/lmo")
    _, job = _job(make_lm(), s3)
    assert not [
        v for v in job["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v
    ]


@pytest.mark.parametrize(
    "ckpt_secret, store_secret, expected",
    [
        (None, None, None),
        ("ckpt", None, [{"secretRef": {"name": "ckpt"}}]),
        (None, "store", [{"secretRef": {"name": "store"}}]),
        ("same", "same", [{"secretRef": {"name": "same"}}]),
        (
            "ckpt",
            "store",
            [
                {"secretRef": {"name": "ckpt"}},
                {"prefix": "LMO_STORE_", "secretRef": {"name": "store"}},
            ],
        ),
    ],
)
def test_credentials_env_from(ckpt_secret, store_secret, expected):
    version = {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}}
    if ckpt_secret:
        version["checkpoint"]["secretRef"] = {"name": ckpt_secret}
    lm = make_lm({"versions": [version]})
    settings = OperatorSettings(artifact_store="s3://b/lmo", artifact_store_secret=store_secret)
    _, job = _job(lm, settings)
    assert container(job).get("envFrom") == expected


def test_spec_artifacts_secret_overrides_operator_store():
    lm = make_lm({"artifacts": {"uri": "s3://own/lmo", "secretRef": {"name": "own-creds"}}})
    settings = OperatorSettings(artifact_store="s3://ops/lmo", artifact_store_secret="ops")
    plan, job = _job(lm, settings)
    assert plan.artifact_uri.startswith("s3://own/lmo/")
    assert container(job)["envFrom"] == [{"secretRef": {"name": "own-creds"}}]


@pytest.mark.parametrize(
    "precision, gpus, setting, gpu",
    [
        ("fp16", 1, True, True),
        ("fp16", 0, True, False),
        ("fp32", 1, True, False),
        ("fp16", 1, False, False),
    ],
)
def test_fp16_on_gpu_converts_on_one_gpu(precision, gpus, setting, gpu):
    lm = make_lm(
        {
            "versions": [
                {
                    "name": "v1",
                    "checkpoint": {"uri": "s3://m/"},
                    "optimize": {"precision": precision},
                }
            ],
            "serving": {
                "gpus": gpus,
                "nodeSelector": {"gpu": "a100"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                ],
            },
        }
    )
    _, job = _job(lm, OperatorSettings(converter_gpu_for_fp16=setting))
    limits = container(job)["resources"].get("limits", {})
    pod = job["spec"]["template"]["spec"]
    settings = OperatorSettings()
    if gpu:
        assert limits["nvidia.com/gpu"] == "1"
        assert pod["nodeSelector"] == {"gpu": "a100"}
        assert pod["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        # CUDA torch + onnxruntime-gpu: the gate scores fp16 on the GPU it will serve on
        assert container(job)["image"] == settings.converter_gpu_image
    else:
        assert "nvidia.com/gpu" not in limits
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert container(job)["image"] == settings.converter_image


def test_a_gpu_given_only_in_resources_converts_on_a_gpu_with_the_default_toleration():
    lm = make_lm({
        "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/"},
                      "optimize": {"precision": "fp16"}}],
        "serving": {"resources": {"limits": {"nvidia.com/gpu": "2"}}},
    })
    plan, job = _job(lm, OperatorSettings())
    assert plan.request.gpus == 2  # KIND_GPU in the artifact's config.pbtxt
    assert container(job)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert job["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    args = container(job)["args"]
    assert args[args.index("--gpus") + 1] == "2"


def test_settings_resources_not_mutated_by_gpu_job():
    settings = OperatorSettings()
    before = settings.model_dump()
    lm = make_lm(
        {
            "versions": [
                {"name": "v1", "checkpoint": {"uri": "s3://m/"}, "optimize": {"precision": "fp16"}}
            ],
            "serving": {"gpus": 1},
        }
    )
    _job(lm, settings)
    assert settings.model_dump() == before


def test_pull_secrets_and_service_account():
    settings = OperatorSettings(image_pull_secrets=["reg"], service_account="lmo-runner")
    _, job = _job(make_lm(), settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "reg"}]
    assert pod["serviceAccountName"] == "lmo-runner"


@pytest.mark.parametrize(
    "version, serving",
    [
        ({"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}}, {}),
        (
            {
                "name": "v1",
                "checkpoint": {"uri": "pvc://ckpts/gpt2/v1", "sha256": "c" * 64},
                "optimize": {
                    "precision": "fp16",
                    "accuracyGate": {"minScore": 0.925, "fallback": True},
                    "calibrationSamples": 256,
                },
            },
            {
                "gpus": 1,
                "backend": "python",
                "batching": {"maxBatchSize": 0, "maxQueueDelayMicroseconds": 0},
            },
        ),
        (  # TensorRT; the GPU given in resources only
            {"name": "v1", "checkpoint": {"uri": "s3://m/v1/"},
             "optimize": {"precision": "fp16"}},
            {"accelerator": "tensorrt", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
        ),
    ],
)
def test_lmo_convert_parses_the_job_args_into_the_same_request(settings, version, serving):
    """The converter rebuilds exactly the operator's ConversionRequest from the Job's args,
    so the content key of what it publishes is the key the operator looks for."""
    import argparse

    from lmo_runtime.cli import add_arguments, request_from_args

    spec = {"versions": [version], "serving": serving}
    if serving.get("accelerator") == "tensorrt":
        spec["task"] = "feature-extraction"
    lm = make_lm(spec)
    plan, job = _job(lm, settings)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(container(job)["args"])
    assert request_from_args(args) == plan.request
    assert request_from_args(args).key() == plan.key
    assert args.out == plan.artifact_uri
    assert str(args.manifest_out) == "/dev/termination-log"
    assert args.no_cache


def test_long_job_names_are_shortened_and_stay_distinct():
    key = "f" * 64
    assert job_name("chat", "v1", key) == "chat-v1-convert-ffffffff"
    lm = "a" * 40
    first = job_name(lm, "candidate-version-01", key)
    second = job_name(lm, "candidate-version-02", key)
    for name in (first, second):
        assert len(name) <= 63
        assert name.startswith("a" * 20) and name.endswith("-convert-ffffffff")
    assert first != second
