"""The operator's own metrics that alerts read: one-hot version phases and rollbacks."""

from __future__ import annotations

from prometheus_client import generate_latest

from lmo import metrics
from lmo.reconcile import Result


def text() -> str:
    return generate_latest(metrics.REGISTRY).decode()


def test_version_phases_are_one_hot_and_forgotten_with_the_version_or_the_resource():
    metrics.record(Result("failed", phases={"v1": "Ready", "v2": "Failed"}), 0.1, "ml", "chat")
    out = text()
    assert 'lmo_version_phase{name="chat",namespace="ml",phase="Failed",version="v2"} 1.0' in out
    assert 'lmo_version_phase{name="chat",namespace="ml",phase="Ready",version="v2"} 0.0' in out
    assert 'lmo_version_phase{name="chat",namespace="ml",phase="Ready",version="v1"} 1.0' in out
    metrics.record(Result("ready", ready=True, phases={"v1": "Ready"}), 0.1, "ml", "chat")
    assert 'version="v2"' not in text()  # a removed version leaves no stale series
    metrics.forget("ml", "chat")
    assert 'name="chat",namespace="ml"' not in text()


def test_rollbacks_are_counted_from_the_events_of_a_pass():
    events = [("Warning", "RolloutRolledBack", "analysis failed at step 1/2: ..."),
              ("Normal", "RolloutStep", "step 1/2")]
    metrics.record(Result("progressing", events=events), 0.1, "ml", "back")
    assert 'lmo_rollbacks_total{name="back",namespace="ml"} 1.0' in text()


def test_traffic_and_rollout_step_for_the_dashboard():
    metrics.record(Result("progressing", phases={"v1": "Ready", "v2": "Ready"},
                          traffic={"v1": 75, "v2": 25}, rollout_step=2), 0.1, "ml", "walk")
    out = text()
    assert 'lmo_version_traffic_percent{name="walk",namespace="ml",version="v2"} 25.0' in out
    assert 'lmo_rollout_step{name="walk",namespace="ml"} 2.0' in out
    metrics.forget("ml", "walk")
    assert 'name="walk"' not in text()
