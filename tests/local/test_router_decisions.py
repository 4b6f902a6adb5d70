"""The router takes the weights a rollout decided as they are: they are not user input.

When the stable version leaves spec.versions mid-rollout and the version taking over has no
ready server yet, the rollout routes 0% everywhere (never 100% to a server that cannot
answer). The router used to check those weights like `lmo set-traffic` input ("must sum to
100") and raise inside the control loop's tick, so the routing kept the old weights.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from lmo.api import LanguageModel, RolloutStatus
from lmo.conditions import Reason
from lmo.local.controller import Controller
from lmo.local.routing import Router

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def test_a_decision_that_routes_nothing_is_routed_and_requests_get_the_reason():
    router = Router(weights={"v1": 100, "v2": 0}, available={"v1", "v2"})
    router.set_weights({"v1": 0, "v2": 0})
    assert router.weights == {"v1": 0, "v2": 0}
    with pytest.raises(LookupError, match="no version with traffic is ready"):
        router.choose()


def test_a_removed_stable_routes_nothing_until_its_successor_is_ready():
    lm = LanguageModel.model_validate({
        "apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel", "metadata": {"name": "chat"},
        "spec": {"task": "text-classification",
                 "versions": [{"name": "v1", "checkpoint": {"uri": "s3://m/v1/"}, "traffic": 100},
                              {"name": "v2", "checkpoint": {"uri": "s3://m/v2/"}, "traffic": 0}],
                 "rollout": {"strategy": "Canary", "steps": [50],
                             "analysis": {"prometheusUrl": "http://prometheus:9090"}}}})
    controller = Controller(lm, backends={})
    # a rollout was under way over a stable that the spec no longer lists
    controller.rollout = RolloutStatus(phase="Progressing", step=0, stable="v0", candidate="v2",
                                       spec_hash="x", step_started_at="2026-01-01T11:59:00Z")
    decision = controller.decide(NOW)
    assert decision.traffic == {"v1": 0, "v2": 0}
    assert controller.router.weights == {"v1": 0, "v2": 0}
    assert any(e.reason == Reason.STABLE_REMOVED for e in controller.events)
