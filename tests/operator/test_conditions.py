"""Unit tables for the metav1.Condition helpers and the no-op compare of the API door."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lmo import conditions as C
from lmo.api import Condition
from lmo.kube import api_path, is_subset, merge_diff

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_has_the_metav1_shape():
    out = C.set_condition([], C.CONVERTED, C.TRUE, C.Reason.CONVERTED, "done", 3, T0)
    assert out == [
        {
            "type": "Converted",
            "status": "True",
            "reason": "Converted",
            "message": "done",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
            "observedGeneration": 3,
        }
    ]
    Condition.model_validate(out[0])  # the API's own model of the shape accepts it


@pytest.mark.parametrize(
    "old_status, new_status, reason, expect_time",
    [
        ("True", "True", "Converted", "2026-01-02T03:04:05Z"),  # nothing changed
        ("True", "True", "OtherReason", "2026-01-02T03:04:05Z"),  # reason alone: no transition
        ("True", "False", "ConversionFailed", "2026-01-02T03:09:05Z"),  # a transition
        ("False", "Unknown", "Pending", "2026-01-02T03:09:05Z"),
    ],
)
def test_last_transition_time_moves_only_with_status(old_status, new_status, reason, expect_time):
    first = C.set_condition([], C.CONVERTED, old_status, "Converted", "a", 1, T0)
    second = C.set_condition(first, C.CONVERTED, new_status, reason, "b", 2, T1)
    (cond,) = second
    assert cond["lastTransitionTime"] == expect_time
    assert cond["reason"] == reason and cond["message"] == "b" and cond["observedGeneration"] == 2
    assert first[0]["message"] == "a"  # input untouched


def test_canonical_order_and_one_entry_per_type():
    conds: list[dict] = []
    for t in (C.READY, "Custom", C.ROUTED, C.CONVERTED, C.DEPLOYED, C.ROUTED):
        conds = C.set_condition(conds, t, C.TRUE, "R", "", None, T0)
    assert [c["type"] for c in conds] == ["Converted", "Deployed", "Routed", "Ready", "Custom"]
    assert "observedGeneration" not in conds[0]


def test_invalid_status_is_refused():
    with pytest.raises(ValueError, match="True, False or Unknown"):
        C.set_condition([], C.READY, "Yes", "R", "", 1, T0)


@pytest.mark.parametrize(
    "components, expect",
    [
        ({}, ("Unknown", "Pending")),
        ({"Converted": "True", "Deployed": "True", "Routed": "True"}, ("True", "Ready")),
        ({"Converted": "False", "Deployed": "True", "Routed": "True"}, ("False", "ConversionRefused")),
        ({"Converted": "True", "Deployed": "Unknown", "Routed": "False"}, ("Unknown", "Deploying")),
        ({"Converted": "True", "Deployed": "True", "Routed": "False"}, ("False", "RoutePending")),
    ],
)
def test_ready_aggregates_the_first_component_not_true(components, expect):
    reasons = {"Converted": "ConversionRefused", "Deployed": "Deploying", "Routed": "RoutePending"}
    conds: list[dict] = []
    for t, status in components.items():
        conds = C.set_condition(conds, t, status, reasons[t] if status != "True" else t, f"{t} msg", 4, T0)
    ready = C.get_condition(C.aggregate_ready(conds, 4, T0), C.READY)
    assert (ready["status"], ready["reason"]) == expect
    assert ready["observedGeneration"] == 4
    if expect[0] != "True" and components:
        assert ready["message"].endswith("msg")  # the cause is repeated on Ready


@pytest.mark.parametrize(
    "desired, observed, expect",
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),  # server-added fields are not drift
        ({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}, True),
        ({"a": {"b": 1}}, {"a": {"b": 2}}, False),
        ({"a": 1}, {}, False),
        ({"l": [{"x": 1}]}, {"l": [{"x": 1, "default": "y"}]}, True),  # defaults in list items
        ({"l": [{"x": 1}]}, {"l": [{"x": 1}, {"x": 2}]}, False),  # a list item too many
        ({"l": [1, 2]}, {"l": [2, 1]}, False),  # order matters
        ({"n": 1}, {"n": 1.0}, True),
        ({"a": {}}, {"a": "x"}, False),
        # a real API server drops zero values of omitempty fields: they never read back
        ({"m": [{"name": "x", "readOnly": False}]}, {"m": [{"name": "x"}]}, True),
        ({"a": 0, "b": "", "c": {}, "d": [], "e": None}, {}, True),
        ({"m": [{"readOnly": True}]}, {"m": [{}]}, False),
    ],
)
def test_is_subset(desired, observed, expect):
    assert is_subset(desired, observed) is expect


def test_api_paths():
    assert api_path("v1", "pods", "ns", "p") == "/api/v1/namespaces/ns/pods/p"
    assert api_path("apps/v1", "deployments", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert api_path("v1", "namespaces", None, "x") == "/api/v1/namespaces/x"


@pytest.mark.parametrize(
    "old, new, patch",
    [
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),  # removed keys are nulled
        ({"r": {"candidate": "v2", "step": 1}}, {"r": {"step": 2}}, {"r": {"candidate": None, "step": 2}}),
        ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),  # lists are replaced whole
        ({}, {"x": {"y": 1}}, {"x": {"y": 1}}),
    ],
)
def test_merge_diff(old, new, patch):
    assert merge_diff(old, new) == patch
