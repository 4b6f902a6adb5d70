"""The Triton Deployment and Service of one version."""

from __future__ import annotations

import pytest

from lmo.builders import build_children
from lmo.builders.triton import build_deployment, build_service
from lmo.errors import UserError
from lmo.settings import OperatorSettings

from .conftest import OWNER, by_kind, container, make_lm, make_plans


def _deployment(lm, settings, version="v1", replicas=1):
    plan = next(p for p in make_plans(lm, settings) if p.name == version)
    return plan, build_deployment(lm, OWNER, settings, plan, replicas)


def test_deployment_shape(settings):
    plan, dep = _deployment(make_lm(), settings)
    assert dep["metadata"]["name"] == "chat-v1"
    assert dep["metadata"]["ownerReferences"][0]["controller"] is True
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["selector"]["matchLabels"] == {
        "lmo.dev/model": "chat",
        "app.kubernetes.io/component": "triton",
        "lmo.dev/version": "v1",
    }
    tmpl = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
    ann = tmpl["metadata"]["annotations"]
    assert ann["lmo.dev/artifact-key"] == plan.key
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "8002"
    c = container(dep, "triton")
    assert c["image"] == "ghcr.io/lmo-dev/lmo-triton:0.5.0"
    assert c["command"] == ["tritonserver"]
    for flag in (
        "--model-repository=/models",
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-on-error=false",
        "--allow-metrics=true",
        "--metrics-port=8002",
        # metrics on every address (Triton's default is the HTTP address, loopback here):
        # the kubelet's probes and Prometheus reach them on the pod IP
        "--metrics-address=0.0.0.0",
        # Triton's HTTP and gRPC on the pod's loopback only: clients reach the front
        "--http-address=127.0.0.1",
        "--http-port=8010",
        "--grpc-address=127.0.0.1",
        "--grpc-port=8011",
    ):
        assert flag in c["args"]
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("metrics", 8002)]
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    front = container(dep, "front")
    assert front["image"] == c["image"]
    assert front["command"] == ["python3", "-m", "lmo_runtime.front"]
    assert front["args"] == ["--task", "text-generation", "--model", "chat", "--version", "v1",
                             "--triton", "http://127.0.0.1:8010", "--repository", "/models",
                             "--port", "8000"]
    assert [(p["name"], p["containerPort"]) for p in front["ports"]] == [("http", 8000)]
    assert front["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert front["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert front["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in front["volumeMounts"]} == {"/models", "/tmp"}
    startup = c["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 600
    # the Deployment is not declared stuck before a pod had its full startup budget
    assert spec["progressDeadlineSeconds"] > startup["failureThreshold"] * startup["periodSeconds"]
    # drain before Triton stops, and Triton's own exit timeout fits in the grace period
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    exit_timeout = int(
        next(a for a in c["args"] if a.startswith("--exit-timeout-secs=")).split("=")[1]
    )
    assert tmpl["spec"]["terminationGracePeriodSeconds"] > 5 + exit_timeout
    pod = tmpl["spec"]
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/models", "/tmp", "/dev/shm"} <= mounts


def test_pvc_store_mounts_model_repository_read_only(settings):
    plan, dep = _deployment(make_lm(), settings)
    pod = dep["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "models")
    assert vol["persistentVolumeClaim"] == {"claimName": "lmo-artifacts", "readOnly": True}
    mount = next(m for m in container(dep)["volumeMounts"] if m["mountPath"] == "/models")
    assert mount["subPath"] == f"store/{plan.key}/model_repository"
    assert mount["readOnly"] is True
    assert "initContainers" not in pod


@pytest.mark.parametrize("secret", [None, "store-creds"])
def test_s3_store_pulls_with_init_container(secret):
    settings = OperatorSettings(artifact_store="s3://bucket/lmo", artifact_store_secret=secret)
    plan, dep = _deployment(make_lm(), settings)
    pod = dep["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v["name"] == "models")
    assert "emptyDir" in vol
    (init,) = pod["initContainers"]
    assert init["image"] == settings.converter_image
    assert init["command"] == ["python", "-m", "lmo_runtime.store", "pull"]
    assert init["args"] == [f"s3://bucket/lmo/{plan.key}/model_repository", "/models"]
    if secret:
        assert init["envFrom"] == [{"secretRef": {"name": secret}}]
    else:
        assert "envFrom" not in init
    assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_file_store_is_refused_on_a_cluster():
    settings = OperatorSettings(artifact_store="file:///var/lmo")
    with pytest.raises(UserError, match="s3:// or pvc://"):
        _deployment(make_lm(), settings)


def test_gpu_limits_and_scheduling():
    lm = make_lm(
        {
            "serving": {
                "gpus": 2,
                "gpuResource": "amd.com/gpu",
                "resources": {"requests": {"cpu": "4"}, "limits": {"memory": "16Gi"}},
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [
                    {
                        "key": "gpu",
                        "operator": "Equal",
                        "value": "yes",
                        "effect": "NoExecute",
                        "tolerationSeconds": 30,
                    }
                ],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "zone", "operator": "In", "values": ["a"]}
                                    ]
                                }
                            ]
                        }
                    }
                },
            }
        }
    )
    _, dep = _deployment(lm, OperatorSettings())
    c = container(dep)
    assert c["resources"] == {
        "requests": {"cpu": "4"},
        "limits": {"memory": "16Gi", "amd.com/gpu": "2"},
    }
    assert "--allow-gpu-metrics=false" not in c["args"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {
            "key": "gpu",
            "operator": "Equal",
            "value": "yes",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
        # the GPU nodes' usual taint of the pod's GPU resource, added by default
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    assert "runtimeClassName" not in pod
    assert pod["affinity"]["nodeAffinity"]
    assert pod["affinity"] is not lm.spec.serving.affinity


def test_cpu_has_no_gpu_limits(settings):
    _, dep = _deployment(make_lm(), settings)
    c = container(dep)
    assert c["resources"] == {"requests": {"cpu": "1", "memory": "2Gi"}}  # the defaults
    assert "--allow-gpu-metrics=false" in c["args"]
    pod = dep["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "affinity"} & pod.keys()


@pytest.mark.parametrize(
    "autoscaling", [None, {"engine": "HPA", "minReplicas": 1, "maxReplicas": 3}]
)
def test_replicas_left_to_the_autoscaler(settings, autoscaling):
    spec = {"serving": {"replicas": 3}}
    if autoscaling:
        spec["autoscaling"] = autoscaling
    lm = make_lm(spec)
    children = build_children(lm, OWNER, settings, make_plans(lm, settings))
    deps = by_kind(children, "Deployment")
    hpas = by_kind(children, "HorizontalPodAutoscaler")
    if autoscaling:
        assert all("replicas" not in d["spec"] for d in deps)
        assert [h["metadata"]["name"] for h in hpas] == ["chat-v1", "chat-v2"]
        assert hpas[0]["spec"]["scaleTargetRef"]["name"] == "chat-v1"
    else:
        assert [d["spec"]["replicas"] for d in deps] == [3, 3]
        assert hpas == []


def test_canary_bounds_reach_the_autoscaler(settings):
    lm = make_lm({"autoscaling": {"engine": "HPA", "minReplicas": 2, "maxReplicas": 8}})
    plans = make_plans(lm, settings, bounds={"v2": (1, 2)})
    hpas = by_kind(build_children(lm, OWNER, settings, plans), "HorizontalPodAutoscaler")
    ranges = {
        h["metadata"]["name"]: (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) for h in hpas
    }
    assert ranges == {"chat-v1": (2, 8), "chat-v2": (1, 2)}


def test_new_artifact_changes_the_pod_template(settings):
    a = make_lm()
    b = make_lm(
        {
            "versions": [
                {"name": "v1", "checkpoint": {"uri": "s3://models/gpt2/v1b/"}, "traffic": 90},
                {"name": "v2", "checkpoint": {"uri": "s3://models/gpt2/v2/"}, "traffic": 10},
            ]
        }
    )
    _, da = _deployment(a, settings)
    _, db = _deployment(b, settings)
    ta, tb = da["spec"]["template"], db["spec"]["template"]
    assert (
        ta["metadata"]["annotations"]["lmo.dev/artifact-key"]
        != tb["metadata"]["annotations"]["lmo.dev/artifact-key"]
    )


def test_a_chat_template_reaches_the_front(settings):
    import json

    _, dep = _deployment(make_lm({"chatTemplate": {"user": "Q: {content}\n"}}), settings)
    env = {e["name"]: e.get("value") for e in container(dep, "front")["env"]}
    template = json.loads(env["LMO_CHAT_TEMPLATE"])
    assert template["user"] == "Q: {content}\n" and template["generationPrompt"] == "Assistant:"
    _, dep = _deployment(make_lm(), settings)
    assert "LMO_CHAT_TEMPLATE" not in {e["name"] for e in container(dep, "front")["env"]}


def test_service_per_version(settings):
    svc = build_service(make_lm(), OWNER, "v2")
    assert svc["metadata"]["name"] == "chat-v2"
    assert svc["spec"]["selector"] == {
        "lmo.dev/model": "chat",
        "app.kubernetes.io/component": "triton",
        "lmo.dev/version": "v2",
    }
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8000, "http"),  # the front container
        ("metrics", 8002, "metrics"),
    ]


def test_no_deployment_without_serve_uri(settings):
    lm = make_lm()
    plans = make_plans(lm, settings, convert={"v2"}, serving={"v1"}, traffic={"v1": 100})
    kinds = [(o["kind"], o["metadata"]["name"]) for o in build_children(lm, OWNER, settings, plans)]
    assert ("Deployment", "chat-v2") not in kinds and ("Service", "chat-v2") not in kinds
    assert ("Job", f"chat-v2-convert-{plans[1].key[:8]}") in kinds
    with pytest.raises(ValueError, match="no artifact to serve"):
        build_deployment(lm, OWNER, settings, plans[1], 1)


@pytest.mark.parametrize(
    "provider, bounds, expected",
    [
        ("GatewayAPI", {"v2": (0, 0)}, {"chat-v1": 3, "chat-v2": 0}),  # BlueGreen retires v2
        ("GatewayAPI", {"v1": (5, 8)}, {"chat-v1": 5, "chat-v2": 3}),
        ("Service", {"v2": (0, 0)}, {"chat-v1": 5, "chat-v2": 0}),  # pool 6: 5.4/0.6 -> 5/1
        ("Service", {}, {"chat-v1": 5, "chat-v2": 1}),
    ],
)
def test_bounds_clamp_replicas_without_autoscaler(settings, provider, bounds, expected):
    lm = make_lm({"serving": {"replicas": 3}, "routing": {"provider": provider}})
    plans = make_plans(lm, settings, bounds=bounds)
    deps = by_kind(build_children(lm, OWNER, settings, plans), "Deployment")
    assert {d["metadata"]["name"]: d["spec"]["replicas"] for d in deps} == expected


def test_empty_user_fields_are_not_applied(settings):
    """The API server drops empty optional fields: applying them would read as drift forever."""
    lm = make_lm(
        {
            "serving": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
                            ]
                        },
                        "preferredDuringSchedulingIgnoredDuringExecution": [],
                    },
                    "podAffinity": {},
                }
            }
        }
    )
    _, dep = _deployment(lm, settings)
    assert dep["spec"]["template"]["spec"]["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "Exists"}]}]
            }
        }
    }
    from lmo.builders.conversion import build_conversion_job

    bare = OperatorSettings(converter_resources={})
    plan = make_plans(lm, bare, convert={"v1"})[0]
    job = build_conversion_job(lm, OWNER, bare, plan)
    assert "resources" not in container(job)


@pytest.mark.parametrize(
    "resources, expected",
    [
        ({}, {"requests": {"cpu": "1", "memory": "2Gi"}}),
        ({"requests": {"cpu": "250m"}}, {"requests": {"cpu": "250m", "memory": "2Gi"}}),
        # a limit alone makes the API server default the request to it: no default added
        ({"limits": {"cpu": "500m"}}, {"requests": {"memory": "2Gi"}, "limits": {"cpu": "500m"}}),
        (
            {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}},
            {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}},
        ),
    ],
)
def test_default_requests_fill_only_what_the_user_left_out(settings, resources, expected):
    lm = make_lm({"serving": {"resources": resources}})
    _, dep = _deployment(lm, settings)
    assert container(dep)["resources"] == expected


def test_a_gpu_given_only_in_resources_is_a_gpu_pod():
    """serving.resources nvidia.com/gpu without serving.gpus: the artifact is converted for
    KIND_GPU (the request's gpus), GPU metrics stay on and the GPU taint is tolerated."""
    lm = make_lm({"serving": {"resources": {"limits": {"nvidia.com/gpu": "1"}},
                              "runtimeClassName": "nvidia"}})
    plan, dep = _deployment(lm, OperatorSettings())
    assert plan.request.gpus == 1
    c = container(dep)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--allow-gpu-metrics=false" not in c["args"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["runtimeClassName"] == "nvidia"


def test_cpu_pods_get_no_gpu_toleration_and_a_spec_toleration_of_the_key_is_kept():
    _, dep = _deployment(make_lm(), OperatorSettings())
    assert "tolerations" not in dep["spec"]["template"]["spec"]
    own = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    _, dep = _deployment(make_lm({"serving": {"gpus": 1, "tolerations": [own]}}),
                         OperatorSettings())
    assert dep["spec"]["template"]["spec"]["tolerations"] == [own]


def test_tensorrt_keeps_its_engines_on_an_emptydir():
    from lmo_runtime.gpu import TENSORRT_CACHE_DIR

    lm = make_lm({"task": "feature-extraction",
                  "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"},
                                "optimize": {"precision": "fp16"}}],
                  "serving": {"gpus": 1, "accelerator": "tensorrt"}})
    plan, dep = _deployment(lm, OperatorSettings())
    assert plan.request.accelerator == "tensorrt" and plan.request.gpus == 1
    pod = dep["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "tensorrt-cache")
    assert "emptyDir" in volume
    assert {"name": "tensorrt-cache", "mountPath": TENSORRT_CACHE_DIR} in container(dep)[
        "volumeMounts"]
    # cuda (the default) keeps the request and the key of before the field existed
    plain = make_lm({"task": "feature-extraction", "serving": {"gpus": 1}})
    plan, dep = _deployment(plain, OperatorSettings())
    assert plan.request.accelerator is None
    assert not any(v["name"] == "tensorrt-cache"
                   for v in dep["spec"]["template"]["spec"]["volumes"])


def test_dev_shm_is_sized_to_the_served_artifact():
    """status.versions[].artifact.sharedMemoryBytes (a decoder called through BLS passes its
    KV cache through /dev/shm) sizes the pod's memory-backed /dev/shm; 1Gi otherwise."""
    import dataclasses

    from lmo.builders.triton import shm_size

    assert shm_size(None) == "1Gi" and shm_size(100 << 20) == "1Gi"
    assert shm_size(3 << 30) == "3840Mi"  # what it needs plus a quarter
    lm = make_lm()
    plan = next(p for p in make_plans(lm, OperatorSettings()) if p.name == "v1")
    dep = build_deployment(lm, OWNER, OperatorSettings(),
                           dataclasses.replace(plan, shared_memory_bytes=4 << 30), 1)
    (dshm,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm"]
    assert dshm["emptyDir"] == {"medium": "Memory", "sizeLimit": "5Gi"}
