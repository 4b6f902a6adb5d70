"""Feedback counting and sticky routing of `lmo up`, without Triton (lmo.local.feedback,
lmo.local.routing); tests/local/test_experiment_local.py runs them through a real `lmo up`."""

from __future__ import annotations

from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmo.local.feedback import Feedback, FeedbackError
from lmo.local.routing import Router


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_reports_count_per_version_once_each():
    fb = Feedback()
    a, b, c = fb.remember("v1"), fb.remember("v2"), fb.remember("v2")
    assert fb.record({"requestId": a, "success": True}) == ("v1", 1.0)
    assert fb.record({"requestId": b, "success": False}) == ("v2", 0.0)
    assert fb.record({"requestId": c, "score": 0.7}) == ("v2", 0.7)
    assert fb.counts() == {"v1": (1.0, 1.0), "v2": (2.0, 0.7)}
    with pytest.raises(FeedbackError) as again:
        fb.record({"requestId": a, "success": True})
    assert again.value.status == 404 and "already reported" in str(again.value)
    assert fb.counts()["v1"] == (1.0, 1.0)


@pytest.mark.parametrize("body,words", [
    ([1, 2], "JSON object"),
    ({"success": True}, "requestId must be"),
    ({"requestId": 7, "success": True}, "requestId must be"),
    ({"requestId": "x"}, "exactly one of success"),
    ({"requestId": "x", "success": True, "score": 1}, "exactly one of success"),
    ({"requestId": "x", "success": "yes"}, "success must be true or false"),
    ({"requestId": "x", "score": 1.5}, "score must be a number from 0 to 1"),
    ({"requestId": "x", "score": True}, "score must be a number from 0 to 1"),
    ({"requestId": "x", "score": float("nan")}, "score must be a number from 0 to 1"),
    ({"requestId": "x", "success": True, "user": "u1"}, "unknown field(s) user"),
])
def test_bad_bodies_are_400_naming_what_is_wrong(body, words):
    fb = Feedback()
    with pytest.raises(FeedbackError) as err:
        fb.record(body)
    assert err.value.status == 400 and words in str(err.value)


def test_memory_is_bounded_and_old_ids_expire():
    clock = Clock()
    fb = Feedback(capacity=100, ttl=60, clock=clock)
    ids = [fb.remember("v1") for _ in range(1000)]
    assert fb.remembered() == 100
    with pytest.raises(FeedbackError) as gone:
        fb.record({"requestId": ids[0], "success": True})
    assert gone.value.status == 404 and "unknown or expired" in str(gone.value)
    fb.record({"requestId": ids[-1], "success": True})
    clock.t = 61
    with pytest.raises(FeedbackError):
        fb.record({"requestId": ids[-2], "success": True})
    with pytest.raises(FeedbackError) as unknown:
        fb.record({"requestId": "never-issued", "success": True})
    assert unknown.value.status == 404


def test_exposition_parses_with_the_cluster_labels():
    fb = Feedback(namespace="shop", model="chat")
    for ok in (True, False, True):
        fb.record({"requestId": fb.remember("v2"), "success": ok})
    fb.record({"requestId": fb.remember("v1"), "score": 0.25})
    samples = {(s.name, s.labels["lmo_version"]): (s.value, s.labels)
               for fam in text_string_to_metric_families(fb.exposition("shop", "chat"))
               for s in fam.samples}
    assert samples[("lmo_feedback_samples_total", "v2")][0] == 3
    assert samples[("lmo_feedback_successes_total", "v2")][0] == 2
    assert samples[("lmo_feedback_successes_total", "v1")][0] == 0.25
    labels = samples[("lmo_feedback_samples_total", "v1")][1]
    assert labels == {"namespace": "shop", "lmo_model": "chat", "lmo_version": "v1"}
    # the spec's versions are there from 0 before any report (increase() needs the 0)
    fb.versions = ["v1", "v2", "v3"]
    text = fb.exposition("shop", "chat")
    assert 'lmo_feedback_samples_total{namespace="shop",lmo_model="chat",lmo_version="v3"} 0.0' in text


@pytest.mark.parametrize("weights", [{"v1": 50, "v2": 50}, {"v1": 70, "v2": 30},
                                     {"v1": 10, "v2": 60, "v3": 30}])
def test_sticky_users_keep_their_version_and_split_as_the_weights(weights):
    router = Router(weights=weights, sticky="x-user-id")
    users = [f"user-{i}" for i in range(1000)]
    first = {u: router.choose(None, u).version for u in users}
    for _ in range(3):  # whatever else is routed in between, a user stays put
        router.choose()
        assert all(router.choose(None, u).version == first[u] for u in users)
    share = Counter(first.values())
    for v, w in weights.items():
        assert abs(share[v] / 10 - w) <= 3, (v, share)


def test_sticky_follows_the_weights_and_falls_back_when_a_version_is_down():
    router = Router(weights={"v1": 50, "v2": 50}, sticky="x-user-id")
    users = [f"u{i}" for i in range(1000)]
    before = {u: router.choose(None, u).version for u in users}
    router.set_weights({"v1": 0, "v2": 100})
    assert {router.choose(None, u).version for u in users} == {"v2"}
    router.set_weights({"v1": 50, "v2": 50})
    assert {u: router.choose(None, u).version for u in users} == before
    router.available = {"v1"}
    assert {router.choose(None, u).version for u in users} == {"v1"}
    router.available = set()
    with pytest.raises(LookupError, match="no version is ready"):
        router.choose(None, "u1")


def test_without_the_sticky_header_the_weights_split_exactly_as_before():
    router = Router(weights={"v1": 70, "v2": 30}, sticky="x-user-id")
    assert Counter(router.choose().version for _ in range(100)) == {"v1": 70, "v2": 30}
