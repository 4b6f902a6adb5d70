"""The Helm chart: lints clean, renders valid Kubernetes objects for every values shape, grants
exactly the rights the operator uses, runs locked down, and the plain install file is a fresh
render. helm is the real binary (tests/fixtures/k8s_tools.py); objects are checked with
kubernetes-validate against the Kubernetes 1.30 schemas.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from lmo import crd
from lmo.builders import CHILD_KINDS
from lmo.settings import OperatorSettings
from tests.fixtures import crd_schemas

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lmo"
K8S_VERSION = "1.30"
# API groups whose objects kubernetes-validate knows (the rest are CRDs of other projects).
CORE_GROUPS = {"", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "batch", "policy"}

# What the operator does (lmo.kube + Kopf), per (apiGroup, resource). Changing the operator's
# calls means changing this table and the ClusterRole together.
WATCHED_CHILD_VERBS = ["list", "watch", "create", "patch", "delete"]  # Jobs, Deployments
CHILD_VERBS = ["list", "create", "patch", "delete"]
EXPECTED_RULES = {
    ("lmo.dev", "languagemodels"): ["get", "list", "watch", "patch"],
    ("lmo.dev", "languagemodels/status"): ["get", "patch"],
    ("lmo.dev", "languagemodels/finalizers"): ["update"],
    ("apps", "deployments"): WATCHED_CHILD_VERBS,
    ("batch", "jobs"): WATCHED_CHILD_VERBS,
    ("", "services"): CHILD_VERBS,
    ("autoscaling", "horizontalpodautoscalers"): CHILD_VERBS,
    ("gateway.networking.k8s.io", "httproutes"): CHILD_VERBS,
    ("keda.sh", "scaledobjects"): CHILD_VERBS,
    ("networking.k8s.io", "networkpolicies"): CHILD_VERBS,
    ("gateway.envoyproxy.io", "backendtrafficpolicies"): CHILD_VERBS,
    ("gateway.envoyproxy.io", "securitypolicies"): CHILD_VERBS,
    ("networking.istio.io", "destinationrules"): CHILD_VERBS,
    ("security.istio.io", "authorizationpolicies"): CHILD_VERBS,
    ("", "pods"): ["list"],
    ("", "secrets"): ["get"],
    ("", "events"): ["get", "create", "patch"],
}
EXPECTED_CLUSTER_RULES = {
    ("apiextensions.k8s.io", "customresourcedefinitions"): ["list", "watch"],
    ("", "namespaces"): ["list", "watch"],
}
LEASE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lmo"],
     "verbs": ["get", "update"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
]

VALUES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {
        "watchNamespaces": ["team-a", "team-b"],
        "workloads": {"serviceAccount": {"create": True, "name": "lmo-workload"}},
    },
    "one-replica": {"replicas": 1, "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}}},
    "replicas-namespaced": {"replicas": 3, "watchNamespaces": ["ml"]},
    "monitoring": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "tritonPodMonitor": {"enabled": True},
    },
    "s3-and-settings": {
        "artifactStore": {"uri": "s3://models/lmo", "secret": "store-creds"},
        "imagePullSecrets": ["regcred"],
        "converter": {"resources": {"requests": {"cpu": "4", "memory": "16Gi"}}},
        "workloads": {"serviceAccount": {"name": "irsa"}},
        "settings": {"jobTtlSeconds": 600, "gatewayName": "edge", "converterNodeSelector": {"pool": "cpu"}},
        "logFormat": "text",
        "image": {"repository": "registry.local/lmo", "tag": "dev", "pullPolicy": "Always"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


def helm(tools, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tools.helm), *args], capture_output=True, text=True, cwd=REPO, check=check
    )


def render(tools, values: dict[str, Any], tmp_path: Path, name: str = "v") -> list[dict[str, Any]]:
    values_file = tmp_path / f"{name}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = helm(
        tools, "template", "lmo", str(CHART), "--namespace", "lmo-system", "--include-crds",
        "-f", str(values_file),
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def renders(k8s_tools, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("values")
    return {name: render(k8s_tools, values, tmp, name) for name, values in VALUES.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs) -> dict[str, Any]:
    (dep,) = by_kind(docs, "Deployment")
    return dep


def container(docs) -> dict[str, Any]:
    (c,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    return c


def env(docs) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(docs)["env"]}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key not in out, f"{role['metadata']['name']}: {key} granted twice"
                out[key] = rule["verbs"]
    return out


@pytest.mark.parametrize("name", list(VALUES))
def test_helm_lint_strict_is_clean(k8s_tools, tmp_path, name):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VALUES[name]))
    result = helm(k8s_tools, "lint", "--strict", str(CHART), "-f", str(values_file), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("name", list(VALUES))
def test_every_rendered_core_object_is_valid_kubernetes(renders, name):
    docs = renders[name]
    kinds = sorted(d["kind"] for d in docs)
    assert {"Deployment", "ServiceAccount", "ClusterRole", "CustomResourceDefinition"} <= set(kinds)
    for doc in docs:
        group = doc["apiVersion"].rpartition("/")[0]
        if group in CORE_GROUPS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        # every namespaced object lands where it should
        if doc["kind"] in {"Deployment", "Service", "ServiceMonitor", "PodMonitor"}:
            assert doc["metadata"]["namespace"] == "lmo-system"


def test_the_chart_ships_the_generated_crd(renders):
    (lm_crd,) = [d for d in by_kind(renders["default"], "CustomResourceDefinition")
                 if d["metadata"]["name"] == "languagemodels.lmo.dev"]
    assert lm_crd == crd.crd()


@pytest.mark.parametrize("name", list(VALUES))
def test_rbac_grants_exactly_what_the_operator_uses(renders, name):
    docs = renders[name]
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"wildcard in {role['metadata']['name']}: {rule}"
    roles = {
        r["metadata"]["name"]: rules_of(r)
        for r in by_kind(docs, "ClusterRole")
        if not r["metadata"]["name"].endswith(("-edit", "-view"))
    }
    namespaced = "watchNamespaces" in VALUES[name]
    expected = dict(EXPECTED_RULES)
    expected_cluster = dict(EXPECTED_CLUSTER_RULES)
    assert roles == {"lmo": expected, "lmo-cluster": expected_cluster}
    # leader election: its one Lease in the release namespace, nothing cluster-wide
    (lease_role,) = by_kind(docs, "Role")
    assert lease_role["metadata"]["namespace"] == "lmo-system"
    assert lease_role["rules"] == LEASE_RULES

    # every kind the builders can make is writable (server-side apply creates with PATCH)
    for api_version, _kind, plural in CHILD_KINDS:
        group = api_version.rpartition("/")[0]
        assert {"create", "patch", "delete", "list"} <= set(expected[(group, plural)])

    sa = {"kind": "ServiceAccount", "name": "lmo", "namespace": "lmo-system"}
    cluster_bindings = {b["metadata"]["name"]: b for b in by_kind(docs, "ClusterRoleBinding")}
    assert cluster_bindings["lmo-cluster"]["subjects"] == [sa]
    role_bindings = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "ClusterRole"]
    (lease_binding,) = [b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["kind"] == "Role"]
    assert lease_binding["roleRef"]["name"] == lease_role["metadata"]["name"]
    assert lease_binding["subjects"] == [sa]
    if namespaced:
        assert "lmo" not in cluster_bindings, "a namespaced install must not bind cluster-wide"
        assert sorted(b["metadata"]["namespace"] for b in role_bindings) == sorted(
            VALUES[name]["watchNamespaces"]
        )
        for b in role_bindings:
            assert b["roleRef"]["name"] == "lmo" and b["subjects"] == [sa]
    else:
        assert not role_bindings
        assert cluster_bindings["lmo"]["roleRef"]["name"] == "lmo"


@pytest.mark.parametrize("name", list(VALUES))
def test_pod_runs_locked_down(renders, name):
    pod = deployment(renders[name])["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(renders[name])["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    tmp = [v for v in pod["volumes"] if v["name"] == "tmp"]
    assert tmp and "emptyDir" in tmp[0]
    assert {"name": "tmp", "mountPath": "/tmp"} in container(renders[name])["volumeMounts"]


def test_operator_command_probes_and_namespaces(renders):
    default = container(renders["default"])
    assert default["command"] == ["lmo"]
    assert default["args"] == ["operator", "--all-namespaces", "--liveness=http://0.0.0.0:8081/healthz",
                               "--leader-election=lmo", "--lease-duration=10"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert default[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in default["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert deployment(renders["default"])["spec"]["strategy"] == {"type": "RollingUpdate"}

    namespaced = container(renders["namespaced"])["args"]
    assert "--namespace=team-a" in namespaced and "--namespace=team-b" in namespaced
    assert "--all-namespaces" not in namespaced


def test_two_replicas_with_one_lease_a_budget_and_spread(renders):
    docs = renders["default"]
    assert deployment(docs)["spec"]["replicas"] == 2
    assert not any(d["apiVersion"].startswith("kopf.dev") for d in docs)
    selector = deployment(docs)["spec"]["selector"]["matchLabels"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    anti = deployment(docs)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {"topologyKey": "kubernetes.io/hostname",
                                       "labelSelector": {"matchLabels": selector}}

    # the Lease's requests in the leader-election priority level, nothing else of the operator
    (fs,) = by_kind(docs, "FlowSchema")
    assert fs["spec"]["priorityLevelConfiguration"] == {"name": "leader-election"}
    (rule,) = fs["spec"]["rules"]
    assert rule["subjects"] == [{"kind": "ServiceAccount",
                                 "serviceAccount": {"name": "lmo", "namespace": "lmo-system"}}]
    assert rule["resourceRules"] == [{"apiGroups": ["coordination.k8s.io"],
                                      "namespaces": ["lmo-system"], "resources": ["leases"],
                                      "verbs": ["get", "create", "update"]}]
    assert not by_kind(renders["one-replica"], "PodDisruptionBudget")  # it would block drains
    assert "--leader-election=lmo" in container(renders["one-replica"])["args"]
    docs = renders["replicas-namespaced"]
    assert deployment(docs)["spec"]["replicas"] == 3 and by_kind(docs, "PodDisruptionBudget")
    own = VALUES["one-replica"]["affinity"]  # a user's affinity replaces the spread
    assert deployment(renders["one-replica"])["spec"]["template"]["spec"]["affinity"] == own


def test_monitoring_objects(renders):
    assert not by_kind(renders["default"], "ServiceMonitor")
    assert not by_kind(renders["default"], "PodMonitor")
    docs = renders["monitoring"]
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    (svc,) = by_kind(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    (pm,) = by_kind(docs, "PodMonitor")
    relabel = {r["targetLabel"]: r["sourceLabels"][0] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    # the label convention rollout analysis queries (contracts: lmo_model, lmo_version)
    assert relabel["lmo_model"] == "__meta_kubernetes_pod_label_lmo_dev_model"
    assert relabel["lmo_version"] == "__meta_kubernetes_pod_label_lmo_dev_version"
    assert relabel["namespace"] == "__meta_kubernetes_namespace"
    # and the Prometheus Operator's own CRD schemas accept both
    assert crd_schemas.validate([sm, pm]) == 2


def test_operator_env_parses_as_operator_settings(renders):
    """The LMO_* variables the chart sets are read by lmo.settings (none is ignored or invalid)."""
    setting_names = {"LMO_" + f.upper() for f in OperatorSettings.model_fields}
    # read by the operator entry point, or by OperatorSettings
    operator_only = {"LMO_LOG_FORMAT", "LMO_METRICS_PORT"}
    sources = "".join(p.read_text() for p in (REPO / "operator" / "lmo").glob("*.py"))
    for variable in operator_only - setting_names:
        assert f'"{variable}"' in sources, f"{variable} is set by the chart but read nowhere"
    for name, docs in renders.items():
        variables = {k: v for k, v in env(docs).items() if k.startswith("LMO_")}
        unknown = set(variables) - setting_names - operator_only
        assert not unknown, f"{name}: the chart sets variables nobody reads: {unknown}"
        settings = OperatorSettings.from_env(variables)
        assert settings.converter_image.startswith(("ghcr.io/lmo-dev/lmo-converter:",))

    custom = OperatorSettings.from_env(env(renders["s3-and-settings"]))
    assert custom.artifact_store == "s3://models/lmo"
    assert custom.artifact_store_secret == "store-creds"
    assert custom.image_pull_secrets == ["regcred"]
    assert custom.service_account == "irsa"
    assert custom.job_ttl_seconds == 600
    assert custom.gateway_name == "edge"
    assert custom.converter_node_selector == {"pool": "cpu"}
    assert custom.converter_resources == {"requests": {"cpu": "4", "memory": "16Gi"}}
    assert env(renders["s3-and-settings"])["LMO_LOG_FORMAT"] == "text"
    assert container(renders["s3-and-settings"])["image"] == "registry.local/lmo:dev"


def test_workload_service_accounts_in_watched_namespaces(renders):
    accounts = {(d["metadata"].get("namespace"), d["metadata"]["name"]) for d in by_kind(renders["namespaced"], "ServiceAccount")}
    assert accounts == {("lmo-system", "lmo"), ("team-a", "lmo-workload"), ("team-b", "lmo-workload")}
    assert env(renders["namespaced"])["LMO_SERVICE_ACCOUNT"] == "lmo-workload"


@pytest.mark.parametrize(
    "values,words",
    [
        ({"bogus": 1}, "bogus"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"artifactStore": {"uri": "file:///tmp/store"}}, "uri"),
        ({"settings": {"artifactStore": "s3://x/y"}}, "artifactStore"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"replicas": -1}, "replicas"),
        ({"workloads": {"serviceAccount": {"create": True, "name": "w"}}}, "watchNamespaces"),
    ],
)
def test_bad_values_are_refused(k8s_tools, tmp_path, values, words):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = helm(k8s_tools, "template", "lmo", str(CHART), "-f", str(values_file), check=False)
    assert result.returncode != 0, f"accepted: {json.dumps(values)}"
    assert words in result.stderr, result.stderr


def test_install_manifest_is_a_fresh_render(k8s_tools):
    expected = crd.render_install(str(k8s_tools.helm))
    assert crd.INSTALL_PATH.read_text() == expected, (
        "manifests/install.yaml drifted: run `python -m lmo.crd --manifests`"
    )
    docs = [d for d in yaml.safe_load_all(expected) if d]
    assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == "lmo-system"
    assert any(d["kind"] == "CustomResourceDefinition" for d in docs)


def test_notes_tell_how_to_start(k8s_tools):
    out = helm(
        k8s_tools, "install", "lmo", str(CHART), "--dry-run=client", "--namespace", "lmo-system",
        "--set", "artifactStore.uri=pvc://shared-models/lmo",
    ).stdout
    notes = out[out.index("NOTES:"):]
    assert "kubectl get lm" in notes
    assert "PersistentVolumeClaim shared-models must exist" in notes
    assert "rollout status deployment/lmo" in notes


def test_default_roles_get_languagemodel_rights(renders, k8s_tools, tmp_path):
    roles = {r["metadata"]["name"]: r for r in by_kind(renders["default"], "ClusterRole")}
    edit, view = roles["lmo-edit"], roles["lmo-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert rules_of(view) == {
        ("lmo.dev", "languagemodels"): ["get", "list", "watch"],
        ("lmo.dev", "languagemodels/status"): ["get", "list", "watch"],
    }
    assert "create" in rules_of(edit)[("lmo.dev", "languagemodels")]
    off = render(k8s_tools, {"aggregateToDefaultRoles": False}, tmp_path)
    assert not [r for r in by_kind(off, "ClusterRole") if r["metadata"]["name"].endswith(("-edit", "-view"))]
