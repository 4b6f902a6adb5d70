"""The conversion Job: one per (version, content key), running `lmo convert` in the converter image.

Named `<lm>-<version>-convert-<key[:8]>`, so a changed checkpoint or setting makes a new Job
while an unchanged one is never converted twice. The converter writes
`<artifact_uri>/manifest.json` and `<artifact_uri>/model_repository/` into the artifact
store, and a manifest summary to /dev/termination-log, where the operator reads the outcome
from the pod status without reaching the store.

Storage conventions the converter relies on:
* `pvc://CLAIM/PATH` (checkpoint or store): the claim is mounted at `/mnt/pvc/CLAIM`
  (checkpoint read-only, store read-write; one read-write volume when both use the same
  claim) and `LMO_PVC_ROOT=/mnt/pvc` tells the runtime where to find it.
* Checkpoint credentials (`checkpoint.secretRef`): every key of the Secret as an env var
  (AWS_ACCESS_KEY_ID, ..., HTTP_AUTHORIZATION), as the API documents.
* Artifact store credentials: every key of the store Secret as an env var, the way
  `lmo_runtime.store` reads them (AWS_*). When the checkpoint has a different Secret of its
  own, the two would collide, so the store's keys get the prefix `LMO_STORE_`
  (LMO_STORE_AWS_ACCESS_KEY_ID...), which `lmo convert` publishes with
  (`lmo_runtime.store.store_env`).
* Evaluation data (`optimize.evaluation`): `--evaluation-*` arguments; s3:// is read with
  the checkpoint's credentials, and a `configmap://NAME/KEY` ConfigMap is mounted read-only
  at `/etc/lmo/configmaps/NAME`.
"""

from __future__ import annotations

import hashlib

from lmo import labels as L
from lmo.api import LanguageModel
from lmo.builders.base import (
    Owner,
    VersionPlan,
    add_common_pod_fields,
    artifact_store,
    canonical_quantity,
    canonical_resources,
    child_name,
    container_security,
    gpu_tolerations,
    owner_reference,
    pod_security,
    scheme,
    split_pvc,
)
from lmo.settings import OperatorSettings

PVC_ROOT = "/mnt/pvc"
CONFIGMAP_ROOT = "/etc/lmo/configmaps"  # lmo_runtime.evaluation's default LMO_CONFIGMAP_ROOT
SCRATCH = "/scratch"
TERMINATION_LOG = "/dev/termination-log"
STORE_ENV_PREFIX = "LMO_STORE_"
# `lmo convert` exits 2 on bad input (the message names the field and the fix) and 3 when
# the accuracy gate refuses the result: a retry would fail the same way, so the Job fails
# at once instead of using its one retry (which is kept for crashes, OOM kills and the like).
FINAL_EXIT_CODES = [2, 3]


MAX_JOB_NAME = 63  # a Job's name is also the value of its pods' job-name label


def job_name(lm: str, version: str, key: str) -> str:
    """`<lm>-<version>-convert-<key[:8]>`, shortened when over 63 characters.

    Long names keep a prefix of `<lm>-<version>` plus 8 hex of its sha256, so two versions
    never share a Job name even when they convert the same request.
    """
    name = child_name(lm, version, f"convert-{key[:8]}")
    if len(name) <= MAX_JOB_NAME:
        return name
    owner = child_name(lm, version)
    tag = hashlib.sha256(owner.encode()).hexdigest()[:8]
    keep = MAX_JOB_NAME - len(f"--{tag}-convert-{key[:8]}")
    return f"{owner[:keep].rstrip('-')}-{tag}-convert-{key[:8]}"


def convert_args(plan: VersionPlan) -> list[str]:
    """`lmo convert` arguments carrying every ConversionRequest field of the plan."""
    r = plan.request
    args = [
        r.checkpoint_uri,
        "--task",
        r.task,
        "--precision",
        r.precision,
        "--out",
        plan.artifact_uri,
        "--min-score",
        repr(float(r.min_score)),
        "--calibration-samples",
        str(r.calibration_samples),
        "--backend",
        r.backend,
        "--max-batch-size",
        str(r.max_batch_size),
        "--max-queue-delay-us",
        str(r.max_queue_delay_microseconds),
        "--gpus",
        str(r.gpus),
        "--manifest-out",
        TERMINATION_LOG,
        # the artifact store is the cache: a second copy would only double the scratch space
        "--no-cache",
    ]
    if r.checkpoint_sha256:
        args += ["--sha256", r.checkpoint_sha256]
    if r.fallback:
        args.append("--fallback")
    if r.accelerator is not None:
        args += ["--accelerator", r.accelerator]
    if r.queue_max_size is not None:
        args += ["--queue-max-size", str(r.queue_max_size)]
    if r.queue_timeout_microseconds is not None:
        args += ["--queue-timeout-us", str(r.queue_timeout_microseconds)]
    if r.evaluation is not None:
        args += ["--evaluation-uri", r.evaluation.uri, "--evaluation-field", r.evaluation.field,
                 "--evaluation-limit", str(r.evaluation.limit)]
        if r.evaluation.sha256:
            args += ["--evaluation-sha256", r.evaluation.sha256]
    return args


def evaluation_configmap(plan: VersionPlan) -> str | None:
    """The ConfigMap holding the version's evaluation data (configmap://NAME/KEY), if any."""
    ev = plan.request.evaluation
    if ev is None or scheme(ev.uri) != "configmap":
        return None
    return ev.uri.split("://", 1)[1].split("/", 1)[0]


def uses_gpu(lm: LanguageModel, plan: VersionPlan, settings: OperatorSettings) -> bool:
    """fp16 conversions of GPU-served versions run on one GPU (settings.converter_gpu_for_fp16),
    in the GPU converter image (CUDA torch and onnxruntime-gpu: the gate scores fp16 on the
    device it will serve on, where fp16 overflow shows)."""
    return (
        settings.converter_gpu_for_fp16
        and plan.request.precision == "fp16"
        and lm.spec.serving.gpu_count() > 0
    )


def build_conversion_job(
    lm: LanguageModel, owner: Owner, settings: OperatorSettings, plan: VersionPlan
) -> dict:
    """The batch/v1 Job that converts `plan.request` into `plan.artifact_uri`."""
    spec = lm.spec
    version = spec.version(plan.name)
    lm_name = lm.metadata.name
    store, store_secret = artifact_store(spec, settings)

    volumes: list[dict] = [
        {"name": "scratch", "emptyDir": {"sizeLimit": canonical_quantity(settings.scratch_size)}},
    ]
    mounts: list[dict] = [
        {"name": "scratch", "mountPath": SCRATCH},
        {"name": "scratch", "mountPath": "/tmp", "subPath": "tmp"},
    ]
    # claim -> read-only?  The store's claim is always read-write.
    claims: dict[str, bool] = {}
    if scheme(plan.request.checkpoint_uri) == "pvc":
        claims[split_pvc(plan.request.checkpoint_uri)[0]] = True
    evaluation = plan.request.evaluation
    if evaluation is not None and scheme(evaluation.uri) == "pvc":
        claims.setdefault(split_pvc(evaluation.uri)[0], True)
    if scheme(store) == "pvc":
        claims[split_pvc(store)[0]] = False
    for i, (claim, read_only) in enumerate(sorted(claims.items())):
        vol = f"pvc-{i}"
        volumes.append(
            {"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        )
        mounts.append({"name": vol, "mountPath": f"{PVC_ROOT}/{claim}", "readOnly": read_only})
    # configmap://NAME/KEY evaluation data: NAME mounted where the runtime looks for it
    eval_cm = evaluation_configmap(plan)
    if eval_cm:
        volumes.append({"name": "evaluation", "configMap": {"name": eval_cm}})
        mounts.append({"name": "evaluation", "mountPath": f"{CONFIGMAP_ROOT}/{eval_cm}",
                       "readOnly": True})

    env = [
        {"name": "LMO_PVC_ROOT", "value": PVC_ROOT},
        {"name": "HOME", "value": SCRATCH},
        {"name": "HF_HOME", "value": f"{SCRATCH}/hf"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "TMPDIR", "value": "/tmp"},
    ]
    env_from: list[dict] = []
    ckpt_secret = version.checkpoint.secret_ref.name if version.checkpoint.secret_ref else None
    if ckpt_secret:
        env_from.append({"secretRef": {"name": ckpt_secret}})
    if store_secret and store_secret != ckpt_secret:
        store_env: dict = {"secretRef": {"name": store_secret}}
        if ckpt_secret:
            store_env = {"prefix": STORE_ENV_PREFIX, **store_env}
        env_from.append(store_env)

    resources = canonical_resources(settings.converter_resources)
    node_selector = dict(settings.converter_node_selector)
    tolerations: list[dict] = []
    on_gpu = uses_gpu(lm, plan, settings)
    if on_gpu:
        resources.setdefault("limits", {})[spec.serving.gpu_resource] = "1"
        node_selector.update(spec.serving.node_selector)
        tolerations = gpu_tolerations(spec.serving)

    container = {
        "name": "convert",
        "image": settings.converter_gpu_image if on_gpu else settings.converter_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["lmo", "convert"],
        "args": convert_args(plan),
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    if resources:
        container["resources"] = resources
    if env_from:
        container["envFrom"] = env_from

    pod_spec: dict = {
        "restartPolicy": "Never",
        "securityContext": pod_security(settings.pod_uid),
        "containers": [container],
        "volumes": volumes,
        "enableServiceLinks": False,
    }
    add_common_pod_fields(pod_spec, settings)
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations

    meta_labels = L.labels(lm_name, plan.name, L.CONVERTER)
    annotations = {L.ARTIFACT_KEY: plan.key}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(lm_name, plan.name, plan.key),
            "namespace": owner.namespace,
            "labels": meta_labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": settings.job_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            # A refusal fails the Job at once; an evicted pod (node drain, preemption) does
            # not use up the one retry.
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "convert",
                            "operator": "In",
                            "values": list(FINAL_EXIT_CODES),
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": dict(meta_labels), "annotations": dict(annotations)},
                "spec": pod_spec,
            },
        },
    }
