"""The experiment's statistics and verdicts (lmo.decide.experiment, lmo.decide.statistics), checked by simulation.

Simulations are numpy-vectorised over thousands of experiments, each looked at a hundred
times or more (what the operator does: one look per analysis), with fixed seeds.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from lmo.decide import experiment as X
from lmo.decide.statistics import sequential_test
from lmo.api import Experiment, ExperimentStatus, LanguageModelSpec, RolloutStatus
from lmo.conditions import Reason
from lmo.decide.vocabulary import AnalysisResult
from lmo.rollout import decide, desired_key, VersionObservation

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
RUNS = 2000


def looks(rate_b, rate_c, *, runs=RUNS, per_look=50, n_looks=200, seed=0, scores=False):
    """Cumulative (successes_b, n, successes_c, n) at every look of `runs` experiments."""
    rng = np.random.default_rng(seed)
    if scores:  # Beta-distributed scores in [0, 1] with the given means
        def draw(mean):
            s = rng.beta(mean * 4, (1 - mean) * 4, size=(runs, n_looks, per_look))
            return s.sum(axis=2)
    else:
        def draw(rate):
            return rng.binomial(per_look, rate, size=(runs, n_looks)).astype(float)
    sb, sc = draw(rate_b).cumsum(axis=1), draw(rate_c).cumsum(axis=1)
    n = np.broadcast_to(np.arange(1, n_looks + 1) * per_look, (runs, n_looks)).astype(float)
    return sb, n, sc, n


def declared(sb, nb, sc, nc, min_samples=1000, confidence=0.95):
    """Per experiment: did any look decide, and was the first decision for the candidate."""
    t = sequential_test(sb, nb, sc, nc, min_samples, confidence)
    decided = t.ready & (t.p_value <= 1 - confidence)
    any_ = decided.any(axis=1)
    first = decided.argmax(axis=1)
    lift_then = t.lift[np.arange(len(first)), first]
    return any_, any_ & (lift_then > 0), t


@pytest.mark.parametrize("rate", [0.02, 0.1, 0.5])
def test_equal_rates_rarely_declare_a_winner_however_often_one_looks(rate):
    sb, nb, sc, nc = looks(rate, rate, seed=int(rate * 1000))
    any_, _, t = declared(sb, nb, sc, nc)
    share = any_.mean()
    print(f"rate {rate}: {share:.4f} of {RUNS} experiments with 200 looks declared a winner")
    assert share <= 0.05
    # The same looks with a fixed-horizon z-test at 5% declare far more often: the
    # simulation does peek enough for peeking to matter.
    pooled = (sb + sc) / (nb + nc)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (sc / nc - sb / nb) / np.sqrt(pooled * (1 - pooled) * (1 / nb + 1 / nc))
    naive = ((np.abs(z) > 1.96) & t.ready).any(axis=1).mean()
    print(f"rate {rate}: a plain z-test at every look declared {naive:.4f}")
    assert naive > 0.15, naive


@pytest.mark.parametrize("min_samples,rate", [(10, 0.01), (10, 0.5), (100, 0.05), (100, 0.5)])
def test_small_samples_and_rare_successes_keep_the_error_rate(min_samples, rate):
    """The normal approximation at its edges: minSamples down to the API's 10, rare
    successes, a look every 10 outcomes per version."""
    sb, nb, sc, nc = looks(rate, rate, per_look=10, n_looks=300, seed=min_samples)
    any_, _, _ = declared(sb, nb, sc, nc, min_samples=min_samples)
    assert any_.mean() <= 0.05


def test_equal_rates_at_higher_confidence_stay_below_its_error():
    sb, nb, sc, nc = looks(0.2, 0.2, seed=7)
    any_, _, _ = declared(sb, nb, sc, nc, min_samples=500, confidence=0.99)
    assert any_.mean() <= 0.01


def test_a_real_lift_is_found_and_credited_to_the_candidate():
    sb, nb, sc, nc = looks(0.10, 0.12, seed=3)
    any_, for_candidate, _ = declared(sb, nb, sc, nc)
    power = for_candidate.mean()
    print(f"0.10 vs 0.12, up to 10,000 per arm: power {power:.3f}")
    assert power >= 0.9
    assert (any_ & ~for_candidate).mean() <= 0.001  # never the wrong way round


def test_a_worse_candidate_is_decided_for_the_baseline():
    sb, nb, sc, nc = looks(0.30, 0.25, runs=500, seed=4)
    any_, for_candidate, _ = declared(sb, nb, sc, nc)
    assert any_.mean() >= 0.9 and for_candidate.sum() == 0


def test_scores_in_0_1_keep_the_error_rate_and_find_a_lift():
    sb, nb, sc, nc = looks(0.6, 0.6, runs=1000, per_look=20, n_looks=100, seed=5, scores=True)
    any_, _, _ = declared(sb, nb, sc, nc, min_samples=200)
    assert any_.mean() <= 0.05
    sb, nb, sc, nc = looks(0.6, 0.7, runs=1000, per_look=20, n_looks=100, seed=6, scores=True)
    _, for_candidate, _ = declared(sb, nb, sc, nc, min_samples=200)
    print(f"scores 0.60 vs 0.70, up to 2,000 per arm: power {for_candidate.mean():.3f}")
    assert for_candidate.mean() >= 0.8


def test_the_interval_covers_the_true_lift_at_every_look():
    sb, nb, sc, nc = looks(0.3, 0.33, runs=1000, seed=8)
    t = sequential_test(sb, nb, sc, nc, 1000, 0.95)
    missed = (t.ready & ((t.low > 0.03) | (t.high < 0.03))).any(axis=1)
    assert missed.mean() <= 0.05


def test_interval_excludes_zero_exactly_when_p_is_below_alpha():
    sb, nb, sc, nc = looks(0.1, 0.115, runs=200, seed=9)
    t = sequential_test(sb, nb, sc, nc, 1000, 0.95)
    excludes = (t.low > 0) | (t.high < 0)
    assert np.array_equal(excludes, t.p_value < 0.05) or np.mean(
        excludes != (t.p_value < 0.05)) < 1e-3  # equal but for floating-point ties


# --------------------------------------------------------------------------- evaluate


def status() -> ExperimentStatus:
    return ExperimentStatus(baseline="v1", candidate="v2", started_at="2026-01-01T12:00:00Z")


def test_running_until_both_arms_have_min_samples_however_large_the_gap():
    s = X.evaluate(Experiment(minSamples=100), X.arm("v1", 99, 5), X.arm("v2", 500, 450),
                   status(), T0)
    assert s.phase == "Running" and not s.winner
    assert "99 of minSamples 100" in s.message
    assert s.lift == pytest.approx(0.9 - 5 / 99, abs=1e-6)


def test_decided_for_the_candidate_with_interval_and_p_value():
    s = X.evaluate(Experiment(minSamples=100), X.arm("v1", 1000, 100), X.arm("v2", 1000, 200),
                   status(), T0)
    assert s.phase == "Decided" and s.winner == "v2" and s.decided_at == "2026-01-01T12:00:00Z"
    assert s.interval[0] > 0 and s.interval[0] < 0.1 < s.interval[1]
    assert s.p_value < 0.05 and s.relative_lift == pytest.approx(1.0)
    assert [a.rate for a in s.arms] == [0.1, 0.2]
    # a verdict is final: later looks do not change it
    again = X.evaluate(Experiment(minSamples=100), X.arm("v1", 2000, 200),
                       X.arm("v2", 2000, 200), s, T0 + timedelta(hours=1))
    assert again == s


def test_inconclusive_at_max_samples_or_max_duration():
    even = (X.arm("v1", 5000, 500), X.arm("v2", 5000, 505))
    s = X.evaluate(Experiment(minSamples=100, maxSamples=5000), *even, status(), T0)
    assert s.phase == "Inconclusive" and not s.winner and "maxSamples 5000" in s.message
    s = X.evaluate(Experiment(minSamples=100, maxDuration="1h"), *even, status(),
                   T0 + timedelta(minutes=59))
    assert s.phase == "Running"
    s = X.evaluate(Experiment(minSamples=100, maxDuration="1h"), *even, status(),
                   T0 + timedelta(hours=1))
    assert s.phase == "Inconclusive" and "maxDuration 1h" in s.message


def test_too_little_traffic_ends_inconclusive_at_max_duration():
    settings = Experiment(minSamples=1000, maxDuration="2h")
    few = (X.arm("v1", 40, 4), X.arm("v2", 38, 30))
    s = X.evaluate(settings, *few, status(), T0 + timedelta(hours=1))
    assert s.phase == "Running" and "collecting" in s.message
    s = X.evaluate(settings, *few, status(), T0 + timedelta(hours=2))
    assert s.phase == "Inconclusive" and not s.winner
    assert s.message == "maxDuration 2h reached with 38 of minSamples 1000 per version"


def test_the_p_value_is_a_running_minimum_once_both_arms_are_large_enough():
    settings = Experiment(minSamples=1000)
    s1 = X.evaluate(settings, X.arm("v1", 1000, 100), X.arm("v2", 1000, 130), status(), T0)
    s2 = X.evaluate(settings, X.arm("v1", 2000, 200), X.arm("v2", 2000, 200), s1, T0)
    assert s2.phase == "Running" and s2.p_value == s1.p_value < 1


# --------------------------------------------------------------------------- the rollout


def spec(**experiment) -> LanguageModelSpec:
    return LanguageModelSpec.model_validate({
        "task": "feature-extraction",
        "versions": [{"name": n, "checkpoint": {"uri": f"s3://m/{n}/"}, "traffic": 50}
                     for n in ("v1", "v2")],
        "rollout": {"strategy": "Experiment", "stepDuration": "1m",
                    "analysis": {"prometheusUrl": "http://prom:9090"},
                    "experiment": {"minSamples": 100, **experiment}},
    })


def obs(s: LanguageModelSpec, *ready: str) -> list[VersionObservation]:
    return [VersionObservation(n, n in ready, desired_key(s, n)) for n in ("v1", "v2")]


def counts(b, c) -> AnalysisResult:
    return AnalysisResult("pass", {"requests": 500.0}, ["error ratio ok"],
                          outcomes={"v1": b, "v2": c})


def run(s, analysis, seconds, current=None, exp=None, ready=("v1", "v2")):
    at = T0 + timedelta(seconds=seconds)
    return decide(s, current, obs(s, *ready), at, analysis, experiment=exp)


def test_experiment_holds_the_spec_weights_and_looks_every_step_duration():
    s = spec()
    d = run(s, None, 0, ready=("v1",))
    assert d.traffic == {"v1": 100, "v2": 0} and Reason.EXPERIMENT_STARTED in [e[1] for e in d.events]
    assert d.experiment.phase == "Running" and d.rollout.phase == "Waiting"
    d = run(s, None, 5, d.rollout, d.experiment)
    assert d.traffic == {"v1": 50, "v2": 50} and d.rollout.phase == "Progressing"
    assert d.requeue_after == 60 and not d.analyse
    d2 = run(s, None, 65, d.rollout, d.experiment)
    assert d2.analyse and d2.traffic == {"v1": 50, "v2": 50}
    d3 = run(s, counts((150, 15), (150, 18)), 65, d.rollout, d.experiment)
    assert d3.experiment.phase == "Running" and d3.experiment.arms[1].samples == 150
    assert d3.rollout.step_started_at == "2026-01-01T12:01:05Z" and d3.requeue_after == 60


def test_decided_promote_sends_everything_to_the_winner_and_stays_there():
    s = spec()
    d = run(s, None, 0)
    d = run(s, counts((1000, 100), (1000, 200)), 61, d.rollout, d.experiment)
    assert d.experiment.phase == "Decided" and d.experiment.winner == "v2"
    assert d.traffic == {"v1": 0, "v2": 100}
    assert d.rollout.phase == "Succeeded" and d.rollout.stable == "v2"
    assert d.rollout.previous == "v1"
    assert [e[1] for e in d.events] == [Reason.EXPERIMENT_DECIDED]
    later = run(s, None, 3600, d.rollout, d.experiment)
    assert later.traffic == {"v1": 0, "v2": 100} and not later.events and not later.analyse


def test_report_keeps_the_weights_and_the_baseline_can_win():
    s = spec(onDecision="Report")
    d = run(s, None, 0)
    d = run(s, counts((1000, 300), (1000, 200)), 61, d.rollout, d.experiment)
    assert d.experiment.winner == "v1" and d.rollout.phase == "Concluded"
    assert d.traffic == {"v1": 50, "v2": 50}


def test_a_candidate_failing_the_gates_is_rolled_back_and_the_experiment_stops():
    s = spec()
    d = run(s, None, 0)
    fail = AnalysisResult("fail", {"error_ratio": 0.3}, ["error ratio 0.3000 > maxErrorRate 0.0100"])
    d = run(s, fail, 61, d.rollout, d.experiment)
    assert d.traffic == {"v1": 100, "v2": 0} and d.rollout.phase == "RolledBack"
    assert "maxErrorRate" in d.experiment.message
    assert run(s, None, 600, d.rollout, d.experiment).traffic == {"v1": 100, "v2": 0}


def test_changing_the_spec_starts_a_new_experiment():
    s = spec()
    d = run(s, None, 0)
    d = run(s, counts((1000, 100), (1000, 200)), 61, d.rollout, d.experiment)
    s2 = spec(minSamples=200)
    d2 = run(s2, None, 100, d.rollout, d.experiment)
    assert d2.experiment.phase == "Running" and d2.experiment.arms[0].samples == 0
    assert d2.traffic == {"v1": 50, "v2": 50}


def test_paused_takes_no_look():
    s = LanguageModelSpec.model_validate(spec().to_dict() | {
        "rollout": spec().rollout.to_dict() | {"paused": True}})
    d = run(s, None, 0)
    d = run(s, None, 600, d.rollout, d.experiment)
    assert d.rollout.phase == "Paused" and not d.analyse and d.traffic == {"v1": 50, "v2": 50}


def test_restart_resumes_from_status_alone():
    s = spec()
    d = run(s, None, 0)
    d = run(s, counts((150, 15), (150, 18)), 61, d.rollout, d.experiment)
    ro = RolloutStatus.model_validate(d.rollout.to_dict())
    exp = ExperimentStatus.model_validate(d.experiment.to_dict())
    again = run(s, None, 70, ro, exp)
    assert not again.events and again.experiment == exp


def test_the_status_an_experiment_writes_fits_the_crd():
    from tests.chart.crd_schema import CrdValidator

    s = spec()
    d = run(s, None, 0)
    d = run(s, counts((1000, 100), (1000, 200)), 61, d.rollout, d.experiment)
    obj = {"apiVersion": "lmo.dev/v1alpha1", "kind": "LanguageModel",
           "metadata": {"name": "exp", "namespace": "default"}, "spec": s.to_dict(),
           "status": {"rollout": d.rollout.to_dict(), "experiment": d.experiment.to_dict()}}
    verdict = CrdValidator().validate(obj)
    assert verdict.ok, verdict.all()
    assert obj["status"]["experiment"]["interval"] == d.experiment.interval
