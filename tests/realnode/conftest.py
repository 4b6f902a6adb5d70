"""The real-node suite: lmo's images in a real registry, run as real pods on a real node.

Needs root and the Debian packages of `make node-packages` (containerd, runc, the CNI
plugins, iptables, conntrack, skopeo, umoci, docker-registry, mmdebstrap) and Prometheus
(`make prometheus`; the canary is judged on it), plus the kube
binaries beside kube-apiserver (`KUBEBUILDER_ASSETS`, else ../shared/kube/bin: kubelet,
kube-scheduler and kube-proxy as .xz, pause). Without them the suite skips naming what is
missing; under `CI=true` it fails instead. One node per session; its teardown fails the run if
the host is not left as it was found (sysctls, iptables, links, mounts, cgroups, folders).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fixtures.node import missing
from tests.fixtures.prometheus import prometheus_binary

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
TIMINGS = Path(__file__).resolve().parents[2] / "build" / "realnode-timings.json"


@pytest.fixture(scope="session")
def cluster():
    gone = missing()
    if prometheus_binary() is None:
        gone.append("`prometheus` (make prometheus)")
    if gone:
        message = "the real-node suite needs: " + ", ".join(gone)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from tests.fixtures.node import RealNode
    from tests.fixtures.node_cluster import NodeCluster

    for undone in RealNode.recover_stale():  # a killed earlier run's node
        print(f"undid a stale node: {undone}")
    c = NodeCluster()
    try:
        c.start()
    except BaseException:
        c.stop()
        raise
    yield c
    problems = c.stop()
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    TIMINGS.write_text(json.dumps({k: round(v, 1) for k, v in c.timings.items()}, indent=1))
    assert not problems, "the node left the host changed:\n" + "\n".join(problems)
