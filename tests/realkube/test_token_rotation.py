"""lmo's client through a rotated ServiceAccount token, on a real kube-apiserver.

In a pod the kubelet rewrites the projected token file before the token expires (hourly by
default), and the API server refuses the old token once it expires or the object it is
bound to is gone. Here the token is bound to a Secret: deleting that Secret revokes it at
once, as expiry would. The operator's client, whose requests are then answered 401, must
read its credentials again (in a pod: the token file, as here) and carry on, for reads and for the Lease's writes alike.
"""

from __future__ import annotations

import asyncio

from urllib.parse import urlsplit

import pytest

from lmo.handlers import Runtime
from lmo.kube import KubeError
from lmo.leader import Elector
from lmo.settings import OperatorSettings
from tests.fixtures.control_plane import ControlPlane
from tests.fixtures.kubelet import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"
SA = "rotating"


@pytest.fixture(scope="module")
def api():
    from tests.realkube.conftest import require_binaries

    require_binaries()
    with ControlPlane(with_controller_manager=False) as cp:
        s = cp.session()
        base = cp.url + f"/api/v1/namespaces/{NS}"
        for url, body in [
            (base + "/serviceaccounts", {"metadata": {"name": SA}}),
            (base + "/configmaps", {"metadata": {"name": "probe"}, "data": {"k": "v"}}),
            (cp.url + f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles", {
                "metadata": {"name": SA},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                          {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                           "verbs": ["get", "create", "update"]}]}),
            (cp.url + f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings", {
                "metadata": {"name": SA},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA},
                "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": NS}]}),
        ]:
            r = s.post(url, json=body, timeout=10)
            assert r.status_code == 201, r.text
        yield cp


def bound_token(cp: ControlPlane, secret: str) -> str:
    """A token of the ServiceAccount bound to a new Secret `secret` (valid while it exists)."""
    s = cp.session()
    r = s.post(cp.url + f"/api/v1/namespaces/{NS}/secrets",
               json={"metadata": {"name": secret}}, timeout=10)
    assert r.status_code == 201, r.text
    uid = r.json()["metadata"]["uid"]
    r = s.post(cp.url + f"/api/v1/namespaces/{NS}/serviceaccounts/{SA}/token", json={
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret, "uid": uid}},
    }, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["status"]["token"]


def refused(cp: ControlPlane, token: str) -> bool:
    s = cp.session()
    s.cert = None
    r = s.get(cp.url + f"/api/v1/namespaces/{NS}/configmaps/probe",
              headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return r.status_code == 401


async def test_a_rotated_token_is_read_again_after_a_401(api, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(bound_token(api, "token-a"))
    # the pod's view: the in-cluster environment and its ServiceAccount files
    import kubernetes.config.incluster_config as incluster

    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token_file))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(api.pki.ca))
    host, port = urlsplit(api.url).hostname, urlsplit(api.url).port
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))

    rt = Runtime(settings=OperatorSettings())
    await rt.login(rt.credentials())
    lease = rt.client(rt.credentials())  # the Lease's own client (lmo.operator_main)
    elector = Elector(lease, NS, "rotation", "replica-0")
    try:
        assert (await rt.kube.get("v1", "configmaps", NS, "probe"))["data"] == {"k": "v"}
        assert await elector.try_acquire_or_renew()

        # the kubelet writes a new token; the old one is revoked
        token_file.write_text(bound_token(api, "token-b"))
        old = rt.kube.info.token
        assert api.session().delete(api.url + f"/api/v1/namespaces/{NS}/secrets/token-a",
                                    timeout=10).status_code == 200
        await asyncio.to_thread(wait_for, lambda: refused(api, old), 30, "the old token refused")

        assert (await rt.kube.get("v1", "configmaps", NS, "probe"))["data"] == {"k": "v"}
        assert rt.kube.info.token != old
        assert await elector.try_acquire_or_renew()  # a write (PUT) after a 401 too
        assert lease.info.token == rt.kube.info.token

        # a token that is refused after a fresh read is an error, not a loop
        assert api.session().delete(api.url + f"/api/v1/namespaces/{NS}/secrets/token-b",
                                    timeout=10).status_code == 200
        await asyncio.to_thread(wait_for, lambda: refused(api, lease.info.token), 30,
                                "the second token refused")
        with pytest.raises(KubeError) as err:
            await rt.kube.get("v1", "configmaps", NS, "probe")
        assert err.value.status == 401
    finally:
        await lease.close()
        await rt.close()
