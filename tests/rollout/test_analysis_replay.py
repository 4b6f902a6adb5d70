"""Analysis and replay pieces that need no server."""

from __future__ import annotations

import numpy as np
import pytest

from lmo.api import Analysis
from lmo.decide.measure import analyse
from lmo.replay import compare, replay_drift, ReplayError, ReplayTargets, token_agreement


def test_unreachable_prometheus_is_inconclusive_not_a_rollback():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = Analysis(prometheus_url=f"http://127.0.0.1:{port}")
    r = analyse(a, "ns", "lm", "v2", "v1", 60)
    assert r.verdict == "inconclusive" and "did not answer" in r.reasons[0]


def test_missing_prometheus_url_is_inconclusive():
    r = analyse(Analysis(), "ns", "lm", "v2", "v1", 60)
    assert r.verdict == "inconclusive" and "prometheusUrl" in r.reasons[0]


@pytest.mark.parametrize(
    "kind, cand, stable, drift",
    [
        ("label", ["pos", "neg", "pos", "pos"], ["pos", "neg", "neg", "pos"], 0.25),
        ("token", ["paris", "rome"], ["paris", "rome"], 0.0),
        ("tokens", ["a b c d", "x y"], ["a b c e", "x y"], 0.125),
    ],
)
def test_compare_agreement(kind, cand, stable, drift):
    d = compare(kind, cand, stable)
    assert d.drift == pytest.approx(drift) and d.metric == "1-agreement" and d.samples == len(cand)


def test_compare_embeddings_is_one_minus_mean_cosine():
    a = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    b = [np.array([1.0, 0.0]), np.array([1.0, 0.0])]
    d = compare("embedding", a, b)
    assert d.drift == pytest.approx(0.5) and d.metric == "1-cosine"


def test_token_agreement_counts_length_differences():
    assert token_agreement("a b", "a b c d") == 0.5
    assert token_agreement("", "") == 1.0


def test_replay_refuses_unknown_entry_model_and_empty_inputs():
    with pytest.raises(ReplayError, match="no golden replay"):
        replay_drift(ReplayTargets("http://a", "http://b", "something_else", ("x",)))
    with pytest.raises(ReplayError, match="no golden inputs"):
        replay_drift(ReplayTargets("http://a", "http://b", "feature_extraction", ()))
