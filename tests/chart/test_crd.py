"""The generated CRD: in sync with lmo.api, structural, described, and as strict as the models.

Valid and invalid LanguageModels go through both doors: pydantic (`lmo.api.parse`, what the
operator and `lmo up` use) and the CRD (what the API server uses: schema, defaults, strict
fields and the CEL rules evaluated with cel-python, see crd_schema.py). Both must agree, and
a cross-field rule must refuse with the same message on both.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lmo import api, crd
from lmo.api import SpecError
from tests.chart.crd_schema import CrdValidator, apply_defaults, walk

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated() -> dict[str, Any]:
    return crd.crd()


@pytest.fixture(scope="module")
def schema(generated) -> dict[str, Any]:
    return generated["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def validator() -> CrdValidator:
    return CrdValidator()


def test_committed_crd_files_match_the_generator():
    text = crd.render()
    for path in crd.CRD_PATHS:
        assert path.read_text() == text, f"{path} drifted: run `python -m lmo.crd`"
    assert crd.main(["--check"]) == 0


def test_check_reports_drift(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "crd.yaml"
    stale.write_text(crd.render().replace("shortNames", "shortNamez"))
    monkeypatch.setattr(crd, "CRD_PATHS", [stale])
    monkeypatch.setattr(crd, "REPO", tmp_path)
    assert crd.main(["--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert "shortNamez" in stale.read_text(), "--check must not rewrite the file"


def test_crd_is_a_valid_kubernetes_object(generated):
    kubernetes_validate.validate(generated, "1.30", strict=True)


def test_names_printer_columns_and_status_subresource(generated):
    spec = generated["spec"]
    assert generated["metadata"]["name"] == "languagemodels.lmo.dev"
    assert spec["names"] == {
        "kind": "LanguageModel",
        "listKind": "LanguageModelList",
        "plural": "languagemodels",
        "singular": "languagemodel",
        "shortNames": ["lm"],
        "categories": ["lmo"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Task": ".spec.task",
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Versions": ".status.readyVersions",
        "Traffic": ".status.trafficSummary",
        "Endpoint": ".status.endpoint",
        "Age": ".metadata.creationTimestamp",
    }
    root = version["schema"]["openAPIV3Schema"]
    assert root["required"] == ["spec"], "status must be present in the schema but not required"
    assert "status" in root["properties"]


def test_every_field_has_a_description(schema):
    missing = []
    for path, node in walk(schema):
        for name, sub in node.get("properties", {}).items():
            if not path and name == "metadata":
                continue  # the API server forbids one there (below); explain shows ObjectMeta's
            if not sub.get("description", "").strip():
                missing.append(f"{path}.{name}")
    assert not missing, f"fields without description (kubectl explain shows them): {missing}"


def test_root_metadata_holds_only_what_the_api_server_allows(schema):
    """Only `type: object` and the schemas of name/generateName: anything else on metadata,
    a description included, makes kube-apiserver refuse the CRD ("must not specify anything
    other than name and generateName, but metadata is implicitly specified")."""
    metadata = schema["properties"]["metadata"]
    assert set(metadata) <= {"type", "properties"}, sorted(metadata)
    assert metadata.get("type") == "object"
    assert set(metadata.get("properties", {})) <= {"name", "generateName"}
    assert "default" not in metadata["properties"]["name"]
    assert metadata["properties"]["name"]["maxLength"] == 40


def test_schema_is_structural(schema):
    problems = []
    for path, node in walk(schema):
        for bad in ("anyOf", "oneOf", "allOf", "not", "$ref", "$defs", "title", "nullable"):
            if bad in node:
                problems.append(f"{path or '<root>'}: {bad}")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if node.get("type") == "object" and "additionalProperties" in node:
            if not isinstance(node["additionalProperties"], dict) or "properties" in node:
                problems.append(f"{path}: additionalProperties must be a schema, without properties")
        if node.get("x-kubernetes-list-type") == "map":
            required = node["items"].get("required", [])
            for key in node["x-kubernetes-list-map-keys"]:
                if key not in required:
                    problems.append(f"{path}: list-map key {key} must be required")
        if "default" in node:
            problems += [f"{path}: default {e}" for e in _self_check(node["default"], node)]
    assert not problems, problems


def _self_check(value: Any, node: dict[str, Any]) -> list[str]:
    import jsonschema

    return [e.message for e in jsonschema.Draft4Validator(node).iter_errors(value)]


def test_cel_rules_are_well_formed_and_bounded(schema, validator):
    """Each rule compiles; fieldPath names a real field; what a rule iterates is bounded."""
    rules = 0
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            rules += 1
            validator.program(rule["rule"])  # compiles
            if "fieldPath" in rule:
                target = node
                for part in rule["fieldPath"].strip(".").split("."):
                    assert part in target.get("properties", {}), f"{path}: {rule['fieldPath']}"
                    target = target["properties"][part]
            for name in re.findall(r"self\.(\w+)\.(?:all|exists|exists_one|map)\(", rule["rule"]):
                assert "maxItems" in node["properties"][name], f"{path}.{name} needs maxItems"
    assert rules >= 9


def test_defaults_equal_the_models_defaults(schema):
    """Every server-side default is the model's own default for that field."""
    spec = schema["properties"]["spec"]
    filled = apply_defaults({"task": "fill-mask", "versions": [{"name": "v1", "checkpoint": {}, "optimize": {"accuracyGate": {}}}], "rollout": {"analysis": {}}, "routing": {"abTest": {}}, "serving": {"batching": {}}, "autoscaling": {}}, spec)
    filled["versions"][0]["checkpoint"] = {"uri": "s3://b/m/"}
    filled["routing"]["mirror"] = {"version": "v1"}
    model = api.LanguageModelSpec.model_validate(filled)
    fresh = api.LanguageModelSpec.model_validate(
        {
            "task": "fill-mask",
            "versions": [{"name": "v1", "checkpoint": {"uri": "s3://b/m/"}}],
            "rollout": {},
            "routing": {"abTest": {}, "mirror": {"version": "v1"}},
            "autoscaling": {},
        }
    )
    assert model == fresh
    assert "default" not in spec["properties"]["serving"]["properties"]["image"]
    assert spec["properties"]["rollout"]["properties"]["steps"]["default"] == [10, 25, 50, 100]


# --------------------------------------------------------------------------- samples


def lm(spec: dict[str, Any], name: str = "chat", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lmo.dev/v1alpha1",
        "kind": "LanguageModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
        **extra,
    }


def version(name: str, traffic: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "checkpoint": {"uri": f"s3://models/gpt2/{name}/"}}
    if traffic is not None:
        out["traffic"] = traffic
    return {**out, **extra}


PROM = {"prometheusUrl": "http://prometheus.monitoring:9090"}

VALID: dict[str, dict[str, Any]] = {
    "protected-envoy-gateway": lm({
        "task": "feature-extraction",
        "versions": [version("v1", 100)],
        "routing": {"policies": "EnvoyGateway", "networkPolicy": True},
        "protection": {
            "timeout": "30s",
            "auth": {"apiKeys": {"secretRef": {"name": "chat-keys"}}},
            "rateLimit": {"requestsPerSecond": 50, "burst": 50, "perClient": True},
            "circuitBreaker": {"maxPendingRequests": 64, "consecutiveErrors": 5,
                               "ejectionTime": "30s"},
        },
        "serving": {"queue": {"maxSize": 64, "timeout": "2s"}},
    }),
    "protected-istio": lm({
        "task": "feature-extraction",
        "versions": [version("v1", 100)],
        "routing": {"policies": "Istio", "networkPolicy": False},
        "protection": {"circuitBreaker": {"consecutiveErrors": 3}},
    }),
    "experiment-feedback": lm({
        "task": "fill-mask",
        "versions": [version("v1", 50), version("v2", 50), version("v3", 0)],
        "routing": {"sticky": {"header": "x-user-id"}},
        "rollout": {
            "strategy": "Experiment",
            "analysis": {**PROM, "metrics": [
                {"name": "toxicity", "query": 'avg(app_toxicity{lmo_version="{{version}}"})',
                 "max": 0.1, "min": 0.0, "maxIncreaseOverStable": 0.02}]},
            "experiment": {"outcome": {"feedback": True}, "minSamples": 500, "maxSamples": 5000,
                           "maxDuration": "72h", "confidence": 0.99, "onDecision": "Report"},
        },
    }),
    "experiment-queries": lm({
        "task": "fill-mask",
        "versions": [version("v1", 60), version("v2", 40)],
        "rollout": {"strategy": "Experiment", "analysis": PROM, "experiment": {"outcome": {
            "successQuery": 'sum(increase(orders_total{lmo_version="{{version}}"}[{{window}}]))',
            "totalQuery": 'sum(increase(sessions_total{lmo_version="{{version}}"}[{{window}}]))',
        }}},
    }),
    "payload-logging": lm({
        "task": "text-classification",
        "versions": [version("v1")],
        "logging": {"payloads": {"sampleRate": 0.05, "redact": [r"\b\d{11}\b"],
                                 "sink": "s3://audit-logs/lmo",
                                 "secretRef": {"name": "audit-store"}}},
    }),
    "minimal": lm({"task": "feature-extraction", "versions": [version("v1")]}),
    "tensorrt-gpu-from-resources": lm({
        "task": "feature-extraction",
        "versions": [version("v1", optimize={"precision": "fp16"})],
        "serving": {"accelerator": "tensorrt",
                    "resources": {"limits": {"nvidia.com/gpu": "1"}}},
    }),
    "chat-on-its-own-host": lm({
        "task": "text-generation",
        "versions": [version("v1")],
        "routing": {"hostname": "chat.example.com"},
        "chatTemplate": {"system": "<|system|>{content}\n", "user": "<|user|>{content}\n",
                         "assistant": "<|assistant|>{content}\n",
                         "generationPrompt": "<|assistant|>", "stop": "<|user|>"},
    }),
    "design-doc": lm(
        {
            "task": "text-generation",
            "versions": [
                version(
                    "v1",
                    90,
                    checkpoint={
                        "uri": "s3://models/gpt2/v1/",
                        "secretRef": {"name": "store-creds"},
                        "sha256": "a" * 64,
                    },
                    optimize={"precision": "int8", "accuracyGate": {"minScore": 0.99}},
                ),
                version("v2", 10, optimize={"precision": "int8-static", "calibrationSamples": 128}),
            ],
            "rollout": {
                "strategy": "Canary",
                "steps": [10, 25, 50, 100],
                "stepDuration": "2m",
                "analysis": {**PROM, "maxErrorRate": 0.01, "maxLatencyP99Ms": 300},
            },
            "routing": {
                "provider": "GatewayAPI",
                "parentRef": {"name": "inference-gateway", "namespace": "gateways"},
                "abTest": {"header": "x-lmo-version"},
                "mirror": {"version": "v2", "percent": 20},
            },
            "protection": {"timeout": "30s"},
            "serving": {
                "image": "nvcr.io/nvidia/tritonserver:24.08-py3",
                "gpus": 1,
                "accelerator": "cuda",
                "runtimeClassName": "nvidia",
                "nodeSelector": {"nvidia.com/gpu.present": "true"},
                "tolerations": [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                    {"operator": "Exists"},
                ],
                "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}},
                "batching": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 500},
                "affinity": {"nodeAffinity": {"anything": ["passes", {"through": 1}]}},
            },
            "autoscaling": {
                "engine": "HPA",
                "minReplicas": 1,
                "maxReplicas": 4,
                "metric": "GPUUtilization",
                "target": "70%",
            },
        }
    ),
    "every-field": lm(
        {
            "task": "text-generation",
            "versions": [
                version(
                    "stable",
                    80,
                    optimize={
                        "precision": "int8-static",
                        "accuracyGate": {"minScore": 0.97, "fallback": True},
                        "calibrationSamples": 32,
                        "evaluation": {"uri": "configmap://eval-zh/eval.jsonl",
                                       "field": "sentence", "limit": 256,
                                       "sha256": "e" * 64},
                    },
                ),
                version("canary", 20),
            ],
            "rollout": {
                "strategy": "Canary",
                "steps": [20, 60, 100],
                "stepDuration": "1m30s",
                "paused": True,
                "scaleDownDelay": "5m",
                "analysis": {
                    **PROM,
                    "maxErrorRate": 0.05,
                    "maxLatencyP99Ms": 250.5,
                    "maxQueueTimeMs": 20,
                    "maxOutputDrift": 0.1,
                    "minRequests": 0,
                    "inconclusiveLimit": 5,
                },
            },
            "routing": {
                "provider": "GatewayAPI",
                "parentRef": {"name": "gw", "namespace": "infra", "sectionName": "https"},
                "hostnames": ["chat.example.com"],
                "abTest": {"header": "x-version"},
                "mirror": {"version": "canary", "percent": 5},
            },
            "serving": {
                "image": "registry.local/triton:24.08",
                "backend": "python",
                "gpus": 2,
                "gpuResource": "amd.com/gpu",
                "replicas": 3,
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [
                    {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoExecute", "tolerationSeconds": 60}
                ],
                "affinity": {"podAntiAffinity": {}},
                "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}},
                "batching": {"maxBatchSize": 0, "maxQueueDelayMicroseconds": 0},
            },
            "autoscaling": {
                "engine": "KEDA",
                "minReplicas": 0,
                "maxReplicas": 10,
                "metric": "InferenceRate",
                "target": "100",
                "cooldownSeconds": 600,
            },
            "artifacts": {"uri": "s3://bucket/lmo", "secretRef": {"name": "s3-creds"}},
        }
    ),
    "keda-to-zero-service-routing": lm(
        {
            "task": "fill-mask",
            "versions": [version("a", 50), version("b", 50)],
            "routing": {"provider": "Service"},
            "autoscaling": {"engine": "KEDA", "minReplicas": 0, "maxReplicas": 2},
            "artifacts": {"uri": "pvc://shared/store", "secretRef": {"name": "s3"}},
        }
    ),
    "blue-green-defaults": lm(
        {
            "task": "text-classification",
            "versions": [version("blue", 100), version("green", 0)],
            "rollout": {"strategy": "BlueGreen", "analysis": PROM},
        }
    ),
    "eight-versions": lm(
        {
            "task": "fill-mask",
            "versions": [version(f"v{i}", 100 if i == 0 else 0) for i in range(8)],
        }
    ),
    "with-status": lm(
        {"task": "fill-mask", "versions": [version("v1")]},
        status={
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllVersionsReady",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 3,
                }
            ],
            "endpoint": "http://chat.default.svc:8000",
            "versions": [
                {
                    "name": "v1",
                    "phase": "Ready",
                    "artifact": {"uri": "s3://store/abc/", "sha256": "b" * 64, "sizeBytes": 9, "score": 0.999},
                    "traffic": 100,
                    "replicas": 2,
                    "readyReplicas": 2,
                }
            ],
            "rollout": {"phase": "Succeeded", "step": 3, "lastAnalysis": {"verdict": "pass", "x": {"y": 1}}},
            "trafficSummary": "v1=100",
            "readyVersions": "1/1",
        },
    ),
}


def _spec_with(**changes: Any) -> dict[str, Any]:
    return lm({"task": "text-generation", "versions": [version("v1", 90), version("v2", 10)], **changes})


# name -> (object, words the refusal must contain, "cel" when the CRD refuses it with a CEL rule)
INVALID: dict[str, tuple[dict[str, Any], str, str]] = {
    "chat-template-on-embeddings": (
        lm({"task": "feature-extraction", "versions": [version("v1")], "chatTemplate": {}}),
        "spec.chatTemplate is for task: text-generation",
        "cel",
    ),
    "experiment-three-arms": (
        lm({"task": "fill-mask", "versions": [version("v1", 50), version("v2", 25),
                                              version("v3", 25)],
            "rollout": {"strategy": "Experiment", "analysis": PROM}}),
        "an Experiment compares exactly two versions",
        "cel",
    ),
    "experiment-one-arm": (
        _spec_with(versions=[version("v1", 100), version("v2", 0)],
                   rollout={"strategy": "Experiment", "analysis": PROM}),
        "an Experiment compares exactly two versions",
        "cel",
    ),
    "experiment-half-queries": (
        _spec_with(rollout={"strategy": "Experiment", "analysis": PROM, "experiment": {
            "outcome": {"successQuery": "sum(x)"}}}),
        "successQuery and totalQuery go together",
        "cel",
    ),
    "experiment-feedback-and-queries": (
        _spec_with(rollout={"strategy": "Experiment", "analysis": PROM, "experiment": {
            "outcome": {"feedback": True, "successQuery": "sum(x)", "totalQuery": "sum(y)"}}}),
        "exclude each other",
        "cel",
    ),
    "experiment-no-outcome": (
        _spec_with(rollout={"strategy": "Experiment", "analysis": PROM, "experiment": {
            "outcome": {"feedback": False}}}),
        "feedback: false needs successQuery and totalQuery",
        "cel",
    ),
    "experiment-max-below-min": (
        _spec_with(rollout={"strategy": "Experiment", "analysis": PROM, "experiment": {
            "minSamples": 1000, "maxSamples": 100}}),
        "maxSamples must be at least minSamples",
        "cel",
    ),
    "experiment-confidence-too-low": (
        _spec_with(rollout={"strategy": "Experiment", "analysis": PROM, "experiment": {
            "confidence": 0.5}}),
        "confidence",
        "schema",
    ),
    "sticky-with-service": (
        _spec_with(routing={"provider": "Service", "sticky": {"header": "x-user-id"}}),
        "spec.routing.sticky needs provider: GatewayAPI",
        "cel",
    ),
    "metric-gate-without-bound": (
        _spec_with(rollout={"analysis": {**PROM, "metrics": [{"name": "tox", "query": "x"}]}}),
        "a gate needs a bound",
        "cel",
    ),
    "metric-gate-min-above-max": (
        _spec_with(rollout={"analysis": {**PROM, "metrics": [
            {"name": "tox", "query": "x", "min": 2, "max": 1}]}}),
        "min must not exceed max",
        "cel",
    ),
    "duplicate-version": (
        lm({"task": "fill-mask", "versions": [version("v1", 50), version("v1", 50)]}),
        "spec.versions[].name must be unique",
        "cel",
    ),
    "traffic-sum": (
        lm({"task": "fill-mask", "versions": [version("v1", 50), version("v2", 40)]}),
        "spec.versions[].traffic must sum to 100",
        "cel",
    ),
    "traffic-omitted-with-two": (
        lm({"task": "fill-mask", "versions": [version("v1", 100), version("v2")]}),
        "",
        "ok-by-sum",
    ),
    "mirror-unknown-version": (
        _spec_with(routing={"mirror": {"version": "v9"}}),
        "spec.routing.mirror.version must name a version in spec.versions",
        "cel",
    ),
    "auth-without-policies": (
        _spec_with(protection={"auth": {"apiKeys": {"secretRef": {"name": "k"}}}}),
        "spec.protection.auth needs spec.routing.policies: EnvoyGateway",
        "cel",
    ),
    "rate-limit-with-istio": (
        _spec_with(routing={"policies": "Istio"},
                   protection={"rateLimit": {"requestsPerSecond": 5}}),
        "spec.protection.rateLimit needs spec.routing.policies: EnvoyGateway",
        "cel",
    ),
    "circuit-breaker-without-policies": (
        _spec_with(protection={"circuitBreaker": {"consecutiveErrors": 5}}),
        "spec.protection.circuitBreaker needs spec.routing.policies: EnvoyGateway or Istio",
        "cel",
    ),
    "per-client-without-auth": (
        _spec_with(routing={"policies": "EnvoyGateway"},
                   protection={"rateLimit": {"requestsPerSecond": 5, "perClient": True}}),
        "spec.protection.rateLimit.perClient needs spec.protection.auth",
        "cel",
    ),
    "burst-with-envoy-gateway": (
        _spec_with(routing={"policies": "EnvoyGateway"},
                   protection={"rateLimit": {"requestsPerSecond": 5, "burst": 10}}),
        "spec.protection.rateLimit.burst must equal requestsPerSecond",
        "cel",
    ),
    "burst-below-rate": (
        _spec_with(routing={"policies": "EnvoyGateway"},
                   protection={"rateLimit": {"requestsPerSecond": 5, "burst": 2}}),
        "spec.protection.rateLimit.burst must be at least requestsPerSecond",
        "cel",
    ),
    "policies-with-service": (
        _spec_with(routing={"provider": "Service", "policies": "Istio"}),
        "spec.routing.policies needs provider: GatewayAPI",
        "cel",
    ),
    "tensorrt-without-gpu": (
        lm({"task": "feature-extraction", "versions": [version("v1")],
            "serving": {"accelerator": "tensorrt"}}),
        "serving.accelerator: tensorrt needs a GPU",
        "cel",
    ),
    "tensorrt-with-python-backend": (
        lm({"task": "feature-extraction", "versions": [version("v1")],
            "serving": {"accelerator": "tensorrt", "gpus": 1, "backend": "python"}}),
        "serving.accelerator: tensorrt needs a GPU (serving.gpus > 0) and serving.backend: "
        "onnxruntime",
        "cel",
    ),
    "tensorrt-for-text-generation": (
        _spec_with(serving={"accelerator": "tensorrt", "gpus": 1}),
        "tensorrt does not apply to text-generation",
        "cel",
    ),
    "queue-without-batching": (
        _spec_with(serving={"queue": {"maxSize": 8}, "batching": {"maxBatchSize": 0}}),
        "spec.serving.queue needs spec.serving.batching.maxBatchSize > 0",
        "cel",
    ),
    "timeout-with-service": (
        _spec_with(routing={"provider": "Service"}, protection={"timeout": "30s"}),
        "spec.protection.timeout needs provider: GatewayAPI",
        "cel",
    ),
    "timeout-not-a-gateway-duration": (
        _spec_with(protection={"timeout": "1.5s"}),
        "spec.protection.timeout",
        "schema",
    ),
    "ab-test-with-service": (
        _spec_with(routing={"provider": "Service", "abTest": {}}),
        "spec.routing.abTest and spec.routing.mirror need provider: GatewayAPI",
        "cel",
    ),
    "mirror-with-service": (
        _spec_with(routing={"provider": "Service", "mirror": {"version": "v2"}}),
        "spec.routing.abTest and spec.routing.mirror need provider: GatewayAPI",
        "cel",
    ),
    "blue-green-three-versions": (
        lm(
            {
                "task": "fill-mask",
                "versions": [version("a", 50), version("b", 25), version("c", 25)],
                "rollout": {"strategy": "BlueGreen", "analysis": PROM},
            }
        ),
        "spec.versions: BlueGreen serves at most two versions",
        "cel",
    ),
    "canary-without-prometheus": (
        _spec_with(rollout={"strategy": "Canary"}),
        "spec.rollout.analysis.prometheusUrl is required for Canary and BlueGreen",
        "cel",
    ),
    "canary-analysis-without-url": (
        _spec_with(rollout={"strategy": "Canary", "analysis": {"maxErrorRate": 0.1}}),
        "spec.rollout.analysis.prometheusUrl is required for Canary and BlueGreen",
        "cel",
    ),
    "gpu-metric-on-cpu": (
        _spec_with(autoscaling={"metric": "GPUUtilization", "target": "70%"}),
        "spec.autoscaling.metric: GPUUtilization needs spec.serving.gpus > 0",
        "cel",
    ),
    "gpu-metric-zero-gpus": (
        _spec_with(autoscaling={"metric": "GPUUtilization", "target": "70%"}, serving={"gpus": 0}),
        "spec.autoscaling.metric: GPUUtilization needs spec.serving.gpus > 0",
        "cel",
    ),
    "steps-not-increasing": (
        _spec_with(rollout={"steps": [10, 50, 50, 100]}),
        "rollout.steps must be strictly increasing",
        "cel",
    ),
    "steps-decreasing": (
        _spec_with(rollout={"steps": [50, 10]}),
        "rollout.steps must be strictly increasing",
        "cel",
    ),
    "min-above-max": (
        _spec_with(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        "cel",
    ),
    "queue-time-target-without-unit": (
        _spec_with(autoscaling={"metric": "QueueTime", "target": "50"}),
        "autoscaling.target: metric QueueTime needs a duration such as 50ms",
        "cel",
    ),
    "inference-rate-target-with-unit": (
        _spec_with(autoscaling={"metric": "InferenceRate", "target": "10ms"}),
        "autoscaling.target: metric InferenceRate needs inferences per second",
        "cel",
    ),
    "cpu-target-left-at-the-queue-time-default": (
        _spec_with(autoscaling={"metric": "CPU"}),
        "metrics GPUUtilization and CPU need a percentage such as 70%",
        "cel",
    ),
    "keda-cpu-to-zero": (
        _spec_with(autoscaling={"engine": "KEDA", "minReplicas": 0, "metric": "CPU", "target": "70%"}),
        "autoscaling.minReplicas: 0 cannot be used with metric: CPU",
        "cel",
    ),
    "hpa-to-zero": (
        _spec_with(autoscaling={"minReplicas": 0}),
        "autoscaling.minReplicas: 0 needs engine: KEDA",
        "cel",
    ),
    "toleration-exists-with-value": (
        lm({"task": "fill-mask", "versions": [version("v1")],
            "serving": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}]}}),
        "tolerations[].value must be empty when operator is Exists",
        "cel",
    ),
    "toleration-without-key-or-exists": (
        lm({"task": "fill-mask", "versions": [version("v1")],
            "serving": {"tolerations": [{"value": "yes", "effect": "NoSchedule"}]}}),
        "tolerations[].operator must be Exists when key is empty",
        "cel",
    ),
    "toleration-seconds-without-noexecute": (
        lm({"task": "fill-mask", "versions": [version("v1")],
            "serving": {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]}}),
        "tolerations[].tolerationSeconds needs effect: NoExecute",
        "cel",
    ),
    "payload-sink-not-stdout-or-s3": (
        _spec_with(logging={"payloads": {"sink": "kafka://broker/topic"}}),
        "spec.logging.payloads.sink must be stdout or s3://bucket/prefix",
        "cel",
    ),
    # refused by the schema alone
    "payload-sample-rate-above-one": (
        _spec_with(logging={"payloads": {"sampleRate": 1.5}}),
        "sampleRate",
        "schema",
    ),
    "bad-quantity": (
        lm({"task": "fill-mask", "versions": [version("v1")],
            "serving": {"resources": {"limits": {"memory": "4GB"}}}}),
        "memory",
        "schema",
    ),
    "too-many-tolerations": (
        lm({"task": "fill-mask", "versions": [version("v1")],
            "serving": {"tolerations": [{"operator": "Exists"}] * 33}}),
        "tolerations",
        "schema",
    ),
    "no-versions": (lm({"task": "fill-mask", "versions": []}), "versions", "schema"),
    "nine-versions": (
        lm({"task": "fill-mask", "versions": [version(f"v{i}", 100 if i == 0 else 0) for i in range(9)]}),
        "versions",
        "schema",
    ),
    "bad-task": (lm({"task": "translation", "versions": [version("v1")]}), "task", "schema"),
    "bad-version-name": (lm({"task": "fill-mask", "versions": [version("V_1")]}), "name", "schema"),
    "long-version-name": (lm({"task": "fill-mask", "versions": [version("v" * 21)]}), "name", "schema"),
    "bad-uri-scheme": (
        lm({"task": "fill-mask", "versions": [{"name": "v1", "checkpoint": {"uri": "ftp://x/y"}}]}),
        "uri",
        "schema",
    ),
    "traffic-over-100": (lm({"task": "fill-mask", "versions": [version("v1", 101)]}), "traffic", "schema"),
    "bad-precision": (
        lm({"task": "fill-mask", "versions": [version("v1", optimize={"precision": "int4"})]}),
        "precision",
        "schema",
    ),
    "evaluation-https-uri": (
        lm({"task": "fill-mask", "versions": [version("v1", optimize={
            "evaluation": {"uri": "https://example.com/eval.jsonl"}})]}),
        "evaluation.uri",
        "schema",
    ),
    "gate-above-one": (
        lm({"task": "fill-mask", "versions": [version("v1", optimize={"accuracyGate": {"minScore": 1.5}})]}),
        "minScore",
        "schema",
    ),
    "bad-duration": (_spec_with(rollout={"stepDuration": "2 minutes"}), "stepDuration", "schema"),
    "zero-latency-bound": (
        _spec_with(rollout={"analysis": {**PROM, "maxLatencyP99Ms": 0}}),
        "maxLatencyP99Ms",
        "schema",
    ),
    "bad-sha": (
        lm({"task": "fill-mask", "versions": [{"name": "v1", "checkpoint": {"uri": "s3://b/m", "sha256": "xyz"}}]}),
        "sha256",
        "schema",
    ),
    "long-name": (lm({"task": "fill-mask", "versions": [version("v1")]}, name="x" * 41), "name", "schema"),
    "bad-mirror-name": (_spec_with(routing={"mirror": {"version": "V2!"}}), "version", "schema"),
    "unknown-field": (
        lm({"task": "fill-mask", "versions": [version("v1")], "replicas": 3}),
        "replicas",
        "unknown",
    ),
    "unknown-nested-field": (
        lm({"task": "fill-mask", "versions": [version("v1", optimize={"precison": "int8"})]}),
        "precison",
        "unknown",
    ),
}


def _examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and doc.get("kind") == api.KIND:
                out.append((f"{path.name}#{i}", doc))
    return out


@pytest.mark.parametrize(
    "obj", [pytest.param(v, id=k) for k, v in VALID.items()] + [pytest.param(d, id=n) for n, d in _examples()]
)
def test_valid_samples_pass_both_pydantic_and_the_crd(obj, validator):
    api.parse(copy.deepcopy(obj))
    verdict = validator.validate(obj)
    assert verdict.ok, verdict.all()


@pytest.mark.parametrize("obj,words,where", [pytest.param(*v, id=k) for k, v in INVALID.items()])
def test_invalid_samples_are_refused_by_both(obj, words, where, validator):
    if where == "ok-by-sum":
        # an omitted traffic counts as 0: [100, omitted] is a valid split on both sides
        api.parse(copy.deepcopy(obj))
        assert validator.validate(obj).ok
        return
    with pytest.raises(SpecError) as refused:
        api.parse(copy.deepcopy(obj))
    pydantic_text = str(refused.value)
    assert words in pydantic_text
    verdict = validator.validate(obj)
    assert not verdict.ok, f"the CRD accepts what pydantic refuses: {pydantic_text}"
    assert not verdict.cel_errors, verdict.cel_errors
    if where == "cel":
        assert not verdict.unknown, verdict.all()
        assert all("Duplicate value" in p for p in verdict.schema), verdict.all()
        # the cluster and `lmo up` refuse with the same words
        assert any(pydantic_text.startswith(m) or m in pydantic_text for m in verdict.cel), (
            verdict.cel,
            pydantic_text,
        )
    elif where == "schema":
        assert any(words in p for p in verdict.schema), verdict.all()
    else:
        assert any(words in p for p in verdict.unknown), verdict.all()


def test_status_written_by_the_models_fits_the_crd(validator):
    """What the operator writes (LanguageModelStatus.to_dict) is accepted by the status schema."""
    status = api.LanguageModelStatus.model_validate(VALID["with-status"]["status"])
    obj = lm({"task": "fill-mask", "versions": [version("v1")]}, status=status.to_dict())
    verdict = validator.validate(obj)
    assert verdict.ok, verdict.all()


def test_conditions_the_operator_writes_fit_the_crd(validator):
    """lmo.conditions builds status.conditions by hand: nothing in it may be pruned or refused."""
    from datetime import datetime, timezone

    from lmo import conditions as C

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    conds = C.set_condition([], C.CONVERTED, C.TRUE, "Converted", "1 version(s) converted", 4, now)
    conds = C.set_condition(conds, C.DEPLOYED, C.FALSE, "Deploying", "waiting for v1", 4, now)
    conds = C.aggregate_ready(conds, 4, now)
    obj = lm({"task": "fill-mask", "versions": [version("v1")]}, status={"conditions": conds})
    verdict = validator.validate(obj)
    assert verdict.ok, verdict.all()
    assert {c["type"] for c in conds} >= {"Converted", "Deployed", "Ready"}


def _guaranteed(node: dict[str, Any], name: str) -> bool:
    """A property that is always present once the API server has defaulted the object."""
    prop = node.get("properties", {}).get(name, {})
    return name in node.get("required", []) or "default" in prop


def test_cel_rules_guard_every_optional_field(schema):
    """cel-go (the API server) errors on a missing field where cel-python returns false for
    `has(a.b.c)` with `a.b` absent, so check statically: every optional field a rule
    selects, on the way to its target or as its target, is guarded by `has()` in that rule."""
    problems = []
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations", []):
            text = rule["rule"]
            guarded = set(re.findall(r"has\((self(?:\.\w+)+)\)", text))
            for match in re.finditer(r"(has\()?(self(?:\.\w+)+)", text):
                in_has, chain = match.group(1), match.group(2)
                parts = chain.split(".")[1:]
                current = node
                for i, part in enumerate(parts):
                    if part not in current.get("properties", {}):
                        break  # a method call such as .isSorted or .all
                    prefix = ".".join(["self", *parts[: i + 1]])
                    last = i == len(parts) - 1
                    if not (_guaranteed(current, part) or prefix in guarded or (in_has and last)):
                        problems.append(f"{path}: {rule['rule']!r} selects {prefix} unguarded")
                    current = current["properties"][part]
                    if current.get("type") == "array":
                        break
    assert not problems, problems


def _leaves(obj: Any, path: str = "") -> set[str]:
    if isinstance(obj, dict):
        out = set()
        for k, v in obj.items():
            out |= _leaves(v, f"{path}.{k}") | {f"{path}.{k}"}
        return out
    if isinstance(obj, list):
        return set().union(*(_leaves(v, f"{path}[]") for v in obj)) if obj else set()
    return set()


def test_valid_samples_use_every_spec_field(schema):
    """A field added to lmo.api needs a sample here, so both doors are tested on it."""
    used = set().union(*(_leaves(obj["spec"], ".spec") for obj in VALID.values()))
    declared = set()
    for path, node in walk(schema["properties"]["spec"], ".spec"):
        if node.get("x-kubernetes-preserve-unknown-fields"):
            continue
        for name in node.get("properties", {}):
            declared.add(f"{path}.{name}")
    missing = sorted(p for p in declared if p not in used and "{}" not in p)
    assert not missing, f"no valid sample sets: {missing}"


def test_cel_rules_inside_lists_have_bounded_lists_and_strings(schema):
    """The API server estimates a rule's cost times how many times it can run: every list
    above a rule needs maxItems, and every string the rule reads needs maxLength or enum,
    or the CRD is refused for exceeding the CEL cost budget."""
    problems = []

    def visit(node: dict[str, Any], path: str, arrays: list[tuple[str, dict[str, Any]]]) -> None:
        rules = node.get("x-kubernetes-validations", [])
        if rules and arrays:
            problems.extend(f"{p}: no maxItems above a rule" for p, a in arrays if "maxItems" not in a)
            for rule in rules:
                for name in re.findall(r"self\.(\w+)", rule["rule"]):
                    prop = node.get("properties", {}).get(name, {})
                    if prop.get("type") == "string" and not ("maxLength" in prop or "enum" in prop):
                        problems.append(f"{path}.{name}: string read by a rule in a list, no maxLength")
        for name, sub in node.get("properties", {}).items():
            visit(sub, f"{path}.{name}", arrays)
        if "items" in node:
            visit(node["items"], f"{path}[]", [*arrays, (path, node)])

    visit(schema, "", [])
    assert not problems, problems
