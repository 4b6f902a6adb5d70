"""The chart's RBAC against what the real operator really asks the API server for.

The real Kopf operator (lmo.handlers) runs against the KMock emulator through a full life:
create a LanguageModel with a Secret reference and an autoscaler, convert, serve, become
Ready, drop the autoscaler, delete. Every request the operator sent (User-Agent `kopf/...`
from Kopf, `lmo-operator` from lmo.kube) is turned into the RBAC verb a real API server
would authorise, and must be granted by the ClusterRoles the chart renders. So a new call in
the operator without a matching rule fails here instead of as a 403 in a cluster.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.chart.test_chart import CHART, helm
from tests.fixtures.kmock_fixture import LM_RESOURCE, job_for, manifest_for, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

# /api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]] or /apis/GROUP/VERSION[/namespaces/NS]/...
PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)

APPLY = "application/apply-patch+yaml"

SPEC = {
    "task": "feature-extraction",
    "versions": [
        {
            "name": "v1",
            "checkpoint": {"uri": "s3://models/minilm/v1/", "secretRef": {"name": "store-creds"}},
        }
    ],
    "autoscaling": {"minReplicas": 1, "maxReplicas": 3},
}


def rbac_request(method: str, path: str, params: dict[str, str]) -> tuple[str, str, str] | None:
    """(apiGroup, resource[/subresource], verb) as the API server authorises it; None for
    discovery and other non-resource URLs (granted to every account by system:discovery)."""
    m = PATH.match(path)
    if m is None:
        return None
    group = "" if m["core"] else m["group"]
    resource = m["plural"] + (f"/{m['sub']}" if m["sub"] else "")
    method = method.upper()
    if method == "GET":
        verb = "watch" if params.get("watch") in {"true", "1"} else ("get" if m["name"] else "list")
    else:
        verb = {
            "POST": "create",
            "PATCH": "patch",
            "PUT": "update",
            "DELETE": "delete" if m["name"] else "deletecollection",
        }[method]
    return group, resource, verb


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """What the operator's ServiceAccount may do cluster-wide: the rules of the ClusterRoles
    bound to it (not the aggregated roles the chart adds for people)."""
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
               "namespace": sa["metadata"]["namespace"]}
    bound = {
        b["roleRef"]["name"]
        for b in docs
        if b["kind"] == "ClusterRoleBinding" and subject in b["subjects"]
    }
    assert bound, "no ClusterRoleBinding for the operator's ServiceAccount"
    out = set()
    for role in docs:
        if role["kind"] != "ClusterRole" or role["metadata"]["name"] not in bound:
            continue
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((group, resource, verb))
    return out


async def test_every_request_of_the_operator_is_granted_by_the_chart(k8s_tools):
    rendered = helm(k8s_tools, "template", "lmo", str(CHART), "--namespace", "lmo-system").stdout
    allowed = granted([d for d in yaml.safe_load_all(rendered) if d])

    async with await start_cluster() as (cluster, _operator):
        await cluster.create_secret("store-creds")
        await cluster.apply_lm("rbac", SPEC)
        job = job_for(SPEC, "rbac", "v1")
        await cluster.wait(lambda: cluster.get("batch/v1/jobs", "default", job), what="the Job")
        await cluster.finish_job("default", job, manifest_for(SPEC, "v1"))
        await cluster.wait(
            lambda: cluster.get("apps/v1/deployments", "default", "rbac-v1"), what="the Deployment"
        )
        await cluster.ready_deployment("default", "rbac-v1")
        await cluster.wait(
            lambda: (cluster.condition("rbac", "Ready") or {}).get("status") == "True", what="Ready"
        )
        without_autoscaling = {k: v for k, v in SPEC.items() if k != "autoscaling"}
        await cluster.apply_lm("rbac", without_autoscaling)
        await cluster.wait(
            lambda: cluster.get("autoscaling/v2/horizontalpodautoscalers", "default", "rbac-v1") is None,
            what="the HPA pruned",
        )
        await cluster.delete_lm("rbac")
        await cluster.wait(lambda: cluster.get(LM_RESOURCE, "default", "rbac") is None, what="deletion")

        used: set[tuple[str, str, str]] = set()
        for request in list(cluster.kmock):  # the emulator iterates over its request log
            agent = dict(request.headers).get("User-Agent", "")
            if not (agent.startswith("kopf/") or agent == "lmo-operator"):
                continue  # the test's own requests
            found = rbac_request(str(request.method.value), request.url.path, dict(request.url.query))
            if found is not None:
                used.add(found)
                if dict(request.headers).get("Content-Type", "").startswith(APPLY):
                    # server-side apply creates a missing object: authorised as create too
                    used.add((found[0], found[1], "create"))

    verbs = {v for _, _, v in used}
    # the life above exercises every kind of access the operator has
    assert {"get", "list", "watch", "create", "patch", "delete"} <= verbs, sorted(used)
    assert ("lmo.dev", "languagemodels/status", "patch") in used
    denied = sorted(used - allowed)
    assert not denied, f"the operator made requests the chart's RBAC would refuse: {denied}"
