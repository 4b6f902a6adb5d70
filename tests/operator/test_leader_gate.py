"""With leader election, Kopf's own writes are gated by the Lease as lmo's are.

Kopf writes on its own (its annotations, progress records, finalizers) through its own HTTP
session. The login handler gives Kopf a session (`Runtime.kopf_session`) that refuses every
write while the replica does not hold the Lease: a leader cut off long enough for another
replica to take over writes nothing once it is back, until it learns that it lost. Against
the KMock emulator, with the Lease's verdict in the test's hands.
"""

from __future__ import annotations

import json

import aiohttp
import kopf
import pytest
import pytest_asyncio

from lmo.handlers import Runtime
from lmo.settings import OperatorSettings
from tests.fixtures.kmock_fixture import LM_RESOURCE, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

NS = "default"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster():
    async with await start_cluster(operator=False) as (c, _):
        yield c


async def test_kopf_writes_only_while_leading(cluster):
    await cluster.apply_lm("gated", {"task": "fill-mask", "versions": [
        {"name": "a", "checkpoint": {"uri": "s3://m/a/"}, "traffic": 100}]}, NS)
    info = kopf.ConnectionInfo(server=str(cluster.kmock.url), insecure=True)
    rt = Runtime(settings=OperatorSettings(), connection=info)
    leading = [True]
    rt.leading = lambda: leading[0]
    rt.identity = "replica-a"
    session = rt.kopf_session(info).aiohttp_session
    url = f"{cluster.kmock.url}/apis/lmo.dev/v1alpha1/namespaces/{NS}/languagemodels/gated"
    patch = {"metadata": {"annotations": {"lmo.dev/last-handled-configuration": "{}"}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    try:
        async with session.patch(url, data=json.dumps(patch), headers=headers) as r:
            assert r.status == 200
        leading[0] = False  # the Lease not renewed in time: another replica may lead
        async with session.get(url) as r:  # reads go on (Kopf's watches, its GETs)
            assert r.status == 200
        patch["metadata"]["annotations"]["lmo.dev/last-handled-configuration"] = '{"x": 1}'
        with pytest.raises(aiohttp.ClientConnectionError, match="not the leader"):
            await session.patch(url, data=json.dumps(patch), headers=headers)
        annotations = cluster.get(LM_RESOURCE, NS, "gated")["metadata"]["annotations"]
        assert annotations["lmo.dev/last-handled-configuration"] == "{}"
        sent = [r for r in list(cluster.kmock) if r.url.path.endswith("/gated")]
        assert {r.headers.get("User-Agent") for r in sent if r.headers.get("User-Agent", "").startswith("kopf")} \
            == {f"kopf/{kopf.__version__} (replica-a)"}
    finally:
        await session.close()
