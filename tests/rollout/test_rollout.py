"""Unit tables for the rollout state machine, driven with an injected clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from lmo.api import LanguageModelSpec, RolloutStatus
from lmo.conditions import Reason
from lmo.decide.vocabulary import AnalysisResult
from lmo.rollout import (
    Decision,
    VersionObservation,
    decide,
    desired_key,
    parse_duration,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
PASS = AnalysisResult("pass", {"error_ratio": 0.0, "requests": 120.0}, ["error ratio 0.0000 <= 0.0100"])
FAIL = AnalysisResult(
    "fail", {"error_ratio": 0.31, "requests": 100.0}, ["error ratio 0.3100 > maxErrorRate 0.0100"]
)
INCONCLUSIVE = AnalysisResult("inconclusive", {"requests": 3.0}, ["3 candidate requests < minRequests 20"])


def spec(strategy="Canary", *, steps=(10, 50, 100), versions=("v1", "v2"), traffic=None, **rollout) -> LanguageModelSpec:
    traffic = traffic or ([100] + [0] * (len(versions) - 1))
    return LanguageModelSpec.model_validate(
        {
            "task": "feature-extraction",
            "versions": [
                {"name": n, "checkpoint": {"uri": f"s3://m/{n}/"}, "traffic": t} for n, t in zip(versions, traffic)
            ],
            "rollout": {
                "strategy": strategy,
                "steps": list(steps),
                "stepDuration": "1m",
                "scaleDownDelay": "5m",
                "analysis": {"prometheusUrl": "http://prom:9090", "inconclusiveLimit": 2},
                **rollout,
            },
            "autoscaling": {"minReplicas": 1, "maxReplicas": 10},
        }
    )


def obs(*ready: str, keys: dict[str, str | None] | None = None, names=("v1", "v2", "v3")) -> list[VersionObservation]:
    """Versions as the reconciler sees them; by default each serves the artifact its spec asks for."""
    keys = keys or {}
    base = spec(versions=("v1", "v2", "v3"), traffic=[100, 0, 0])
    return [VersionObservation(n, n in ready, keys.get(n, desired_key(base, n))) for n in names]


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def reasons(d: Decision) -> list[str]:
    return [r for _, r, _ in d.events]


def test_manual_obeys_spec_exactly_and_keeps_no_status():
    s = spec("Manual", traffic=[70, 30])
    d = decide(s, None, obs("v1"), T0)
    assert d.traffic == {"v1": 70, "v2": 30}
    assert d.rollout is None and d.events == [] and not d.analyse and d.bounds == {}
    no_rollout = LanguageModelSpec.model_validate(
        {"task": "fill-mask", "versions": [{"name": "a", "checkpoint": {"uri": "s3://x/"}}]}
    )
    assert decide(no_rollout, None, [], T0).traffic == {"a": 100}


def test_single_version_canary_is_idle():
    s = spec(versions=("v1",), traffic=[100])
    d = decide(s, None, obs("v1", names=("v1",)), T0)
    assert d.traffic == {"v1": 100}
    assert d.rollout.phase == "Idle" and d.rollout.stable == "v1" and not d.rollout.candidate
    assert d.events == []


def test_waits_for_candidate_ready_and_never_routes_to_it_before():
    s = spec()
    d = decide(s, None, obs("v1"), T0)
    assert d.traffic == {"v1": 100, "v2": 0}
    assert d.rollout.phase == "Waiting" and d.rollout.candidate == "v2" and d.rollout.stable == "v1"
    assert reasons(d) == [Reason.ROLLOUT_STARTED]
    assert d.requeue_after == 15.0 and not d.analyse
    # the candidate gets the replicas of its first step before it takes traffic
    assert d.bounds == {"v2": (1, 1)}
    again = decide(s, d.rollout, obs("v1"), at(10))
    assert again.traffic == {"v1": 100, "v2": 0} and again.events == []


def test_canary_walks_every_step_to_success():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    assert reasons(d) == [Reason.ROLLOUT_STARTED, Reason.ROLLOUT_STEP]
    assert d.traffic == {"v1": 90, "v2": 10} and d.rollout.phase == "Progressing" and d.rollout.step == 0
    assert d.requeue_after == 60 and d.bounds == {"v2": (1, 1)}
    expected = [(50, 1, (1, 5)), (100, 2, (1, 10))]
    t = 0.0
    for pct, step, bounds in expected:
        hold = decide(s, d.rollout, obs("v1", "v2"), at(t + 30))
        assert hold.traffic == d.traffic and hold.requeue_after == pytest.approx(30) and not hold.analyse
        assert hold.events == []
        due = decide(s, d.rollout, obs("v1", "v2"), at(t + 60))
        assert due.analyse and due.traffic == d.traffic and due.events == [] and due.requeue_after is None
        # an analysis handed in before the hold elapsed is ignored
        early = decide(s, d.rollout, obs("v1", "v2"), at(t + 59), FAIL)
        assert early.rollout.phase == "Progressing" and early.traffic == d.traffic
        t += 60
        d = decide(s, d.rollout, obs("v1", "v2"), at(t), PASS)
        assert d.traffic == {"v1": 100 - pct, "v2": pct}
        assert d.rollout.step == step and reasons(d) == [Reason.ROLLOUT_STEP]
        assert d.rollout.last_analysis["verdict"] == "pass"
        assert d.bounds == {"v2": bounds}
    t += 60
    d = decide(s, d.rollout, obs("v1", "v2"), at(t), PASS)
    assert d.traffic == {"v1": 0, "v2": 100}
    assert d.rollout.phase == "Succeeded" and d.rollout.stable == "v2" and not d.rollout.candidate
    assert d.rollout.previous == "v1"  # where `lmo rollback` goes back to
    assert reasons(d) == [Reason.ROLLOUT_SUCCEEDED]
    # settled: v1 stays listed but is neither stable nor a newer candidate
    after = decide(s, d.rollout, obs("v1", "v2"), at(t + 600))
    assert after.traffic == {"v1": 0, "v2": 100} and after.rollout.phase == "Succeeded"
    assert after.events == [] and not after.analyse
    # every later reconcile still says where `lmo rollback` goes back to (a real node's
    # status lost it one reconcile after the promotion)
    assert after.rollout.previous == "v1"
    assert decide(s, after.rollout, obs("v1", "v2"), at(t + 900)).rollout.previous == "v1"


def test_last_step_below_100_still_promotes():
    s = spec(steps=(20, 60))
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    assert d.traffic == {"v1": 40, "v2": 60}
    d = decide(s, d.rollout, obs("v1", "v2"), at(120), PASS)
    assert d.traffic == {"v1": 0, "v2": 100} and d.rollout.phase == "Succeeded"


def test_fail_rolls_back_at_once_with_numbers_and_does_not_retry():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    d = decide(s, d.rollout, obs("v1", "v2"), at(120), FAIL)
    assert d.traffic == {"v1": 100, "v2": 0}
    assert d.rollout.phase == "RolledBack"
    ((kind, reason, message),) = d.events
    assert (kind, reason) == ("Warning", Reason.ROLLOUT_ROLLED_BACK)
    assert "0.3100 > maxErrorRate 0.0100" in message and "analysis failed at step 2/3" in message
    assert d.rollout.last_analysis["measurements"]["error_ratio"] == 0.31
    # hours later, same spec: still rolled back, nothing posted again, no timer
    for t in (180, 3600, 86400):
        again = decide(s, d.rollout, obs("v1", "v2"), at(t))
        assert again.traffic == {"v1": 100, "v2": 0} and again.rollout.phase == "RolledBack"
        assert again.events == [] and again.requeue_after is None and not again.analyse
    # pausing/unpausing is not a spec change
    assert decide(spec(paused=True), d.rollout, obs("v1", "v2"), at(200)).rollout.phase == "RolledBack"


def test_spec_change_after_rollback_starts_a_new_rollout():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), FAIL)
    assert d.rollout.phase == "RolledBack"
    fixed = s.model_copy(deep=True)
    fixed.versions[1].checkpoint.uri = "s3://m/v2-fixed/"
    # the new artifact is converting: the old candidate pods are not ready meanwhile
    d2 = decide(fixed, d.rollout, obs("v1", keys={"v2": None}), at(100))
    assert d2.rollout.phase == "Waiting" and reasons(d2) == [Reason.ROLLOUT_STARTED]
    assert d2.traffic == {"v1": 100, "v2": 0}
    # the fixed artifact converted; until then the old pods were ready but served the old one
    old = decide(fixed, d2.rollout, obs("v1", "v2"), at(120))
    assert old.rollout.phase == "Waiting" and old.traffic == {"v1": 100, "v2": 0}
    assert "waiting for v2 to serve artifact" in old.rollout.message
    d3 = decide(fixed, d2.rollout, obs("v1", "v2", keys={"v2": desired_key(fixed, "v2")}), at(130))
    assert d3.rollout.phase == "Progressing" and d3.traffic == {"v1": 90, "v2": 10}
    assert d3.rollout.spec_hash != d.rollout.spec_hash


def test_inconclusive_holds_then_rolls_back_at_the_limit():
    s = spec()  # inconclusiveLimit 2
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), INCONCLUSIVE)
    assert d.rollout.phase == "Progressing" and d.rollout.step == 0 and d.rollout.inconclusive == 1
    assert d.traffic == {"v1": 90, "v2": 10} and reasons(d) == [Reason.ANALYSIS_INCONCLUSIVE]
    assert d.requeue_after == 60 and "minRequests 20" in d.events[0][2]
    assert d.rollout.message.startswith("step 1/3 held: analysis inconclusive (1/2)")
    # the hold starts again: not due at 90 s
    assert not decide(s, d.rollout, obs("v1", "v2"), at(90)).analyse
    d = decide(s, d.rollout, obs("v1", "v2"), at(120), INCONCLUSIVE)
    assert d.rollout.phase == "RolledBack" and d.traffic == {"v1": 100, "v2": 0}
    assert "inconclusive 2 times" in d.events[0][2]


def test_pass_resets_the_inconclusive_count():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), INCONCLUSIVE)
    d = decide(s, d.rollout, obs("v1", "v2"), at(120), PASS)
    assert d.rollout.step == 1 and d.rollout.inconclusive == 0
    d = decide(s, d.rollout, obs("v1", "v2"), at(180), INCONCLUSIVE)
    assert d.rollout.phase == "Progressing" and d.rollout.inconclusive == 1


def test_pause_holds_weights_and_resume_restarts_the_hold():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)  # step 1: 50%
    paused = spec(paused=True)
    p = decide(paused, d.rollout, obs("v1", "v2"), at(70))
    assert p.rollout.phase == "Paused" and p.traffic == {"v1": 50, "v2": 50}
    assert reasons(p) == [Reason.ROLLOUT_PAUSED] and p.requeue_after is None
    # 1-based like every step a person reads (status.rollout.step stays the 0-based index)
    assert p.events[0][2] == "rollout of v2 paused at step 2/3" and p.rollout.step == 1
    p2 = decide(paused, p.rollout, obs("v1", "v2"), at(1000))
    assert p2.events == [] and not p2.analyse and p2.traffic == {"v1": 50, "v2": 50}
    # the pause is not a new rollout: the hash is the same
    assert p2.rollout.spec_hash == d.rollout.spec_hash
    r = decide(s, p2.rollout, obs("v1", "v2"), at(1010))
    assert r.rollout.phase == "Progressing" and r.rollout.step == 1 and reasons(r) == [Reason.ROLLOUT_RESUMED]
    assert r.requeue_after == 60 and not r.analyse


def test_pause_before_the_candidate_is_ready_routes_nothing_to_it():
    p = decide(spec(paused=True), None, obs("v1", "v2"), T0)
    assert p.rollout.phase == "Paused" and p.traffic == {"v1": 100, "v2": 0}
    r = decide(spec(), p.rollout, obs("v1", "v2"), at(5))
    assert r.rollout.phase == "Progressing" and r.traffic == {"v1": 90, "v2": 10}


def test_candidate_losing_readiness_sends_all_traffic_to_stable_and_keeps_its_step():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    lost = decide(s, d.rollout, obs("v1"), at(70))
    assert lost.traffic == {"v1": 100, "v2": 0} and lost.rollout.phase == "Waiting"
    assert lost.rollout.step == 1 and lost.events[0][:2] == ("Warning", Reason.CANDIDATE_NOT_READY)
    back = decide(s, lost.rollout, obs("v1", "v2"), at(100))
    assert back.traffic == {"v1": 50, "v2": 50} and back.rollout.step == 1
    assert back.requeue_after == 60  # a fresh hold


def test_restart_mid_rollout_resumes_from_status_alone():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    d = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    # what the status subresource holds, round-tripped through JSON like the API server does
    stored = RolloutStatus.model_validate(d.rollout.to_dict())
    resumed = decide(s, stored, obs("v1", "v2"), at(90))
    assert resumed.traffic == {"v1": 50, "v2": 50} and resumed.rollout.step == 1
    assert resumed.events == [] and not resumed.analyse and resumed.requeue_after == pytest.approx(30)
    assert resumed.rollout == stored


def test_newest_listed_version_is_the_candidate_and_a_new_one_restarts():
    s3 = spec(versions=("v1", "v2", "v3"), traffic=[100, 0, 0])
    s2 = spec(versions=("v1", "v2"))
    d = decide(s2, None, obs("v1", "v2"), T0)
    d = decide(s2, d.rollout, obs("v1", "v2"), at(60), PASS)
    r = decide(s3, d.rollout, obs("v1", "v2", "v3"), at(70))
    assert r.rollout.candidate == "v3" and r.rollout.stable == "v1"
    assert reasons(r) == [Reason.ROLLOUT_RESTARTED, Reason.ROLLOUT_STEP]
    assert r.traffic == {"v1": 90, "v2": 0, "v3": 10}


def test_same_artifact_is_not_a_candidate():
    s = spec(versions=("v1", "v2"))
    d = decide(s, None, obs("v1", "v2", keys={"v1": "same", "v2": "same"}), T0)
    assert d.rollout.phase == "Idle" and d.traffic == {"v1": 100, "v2": 0}


def test_initial_stable_is_the_version_with_most_spec_traffic():
    s = spec(versions=("v1", "v2", "v3"), traffic=[10, 80, 10])
    d = decide(s, None, obs("v1", "v2", "v3"), T0)
    assert d.rollout.stable == "v2" and d.rollout.candidate == "v3"
    assert d.traffic == {"v1": 0, "v2": 90, "v3": 10}


def test_blue_green_checks_at_full_size_then_switches_and_scales_old_down_later():
    s = spec("BlueGreen")
    d = decide(s, None, obs("v1", "v2"), T0)
    assert d.rollout.phase == "Progressing" and d.traffic == {"v1": 100, "v2": 0}
    assert d.bounds == {"v2": (1, 10)}
    due = decide(s, d.rollout, obs("v1", "v2"), at(60))
    assert due.analyse and due.traffic == {"v1": 100, "v2": 0}
    sw = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    assert sw.traffic == {"v1": 0, "v2": 100} and sw.rollout.phase == "Succeeded"
    assert sw.requeue_after == 300 and sw.bounds == {}
    kept = decide(s, sw.rollout, obs("v1", "v2"), at(200))
    assert kept.bounds == {} and kept.requeue_after == pytest.approx(160)
    down = decide(s, sw.rollout, obs("v1", "v2"), at(400))
    assert down.bounds == {"v1": (1, 1)} and down.requeue_after is None and down.events == []


def test_removing_the_stable_mid_rollout_never_routes_all_to_an_unready_candidate():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    assert d.rollout.phase == "Progressing" and d.traffic == {"v1": 90, "v2": 10}
    only_v2 = spec(versions=("v2",), traffic=[100])
    gone = decide(only_v2, d.rollout, obs(names=("v2",)), at(5))
    assert gone.traffic == {"v2": 0} and gone.rollout.phase == "Waiting"
    assert gone.rollout.stable == "v2" and not gone.rollout.candidate
    ((kind, reason, message),) = gone.events
    assert (kind, reason) == ("Warning", Reason.STABLE_REMOVED)
    assert "v1 was removed from spec.versions" in message and "v2" in message
    still = decide(only_v2, gone.rollout, obs(names=("v2",)), at(20))
    assert still.traffic == {"v2": 0} and still.events == [] and still.requeue_after
    up = decide(only_v2, still.rollout, obs("v2", names=("v2",)), at(35))
    assert up.traffic == {"v2": 100} and up.rollout.phase == "Idle" and up.events == []


def test_removing_the_stable_hands_a_ready_candidate_the_traffic_with_a_warning():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    only_v2 = spec(versions=("v2",), traffic=[100])
    took = decide(only_v2, d.rollout, obs("v2", names=("v2",)), at(5))
    assert took.traffic == {"v2": 100} and took.rollout.stable == "v2"
    assert reasons(took) == [Reason.STABLE_REMOVED] and took.events[0][0] == "Warning"
    assert decide(only_v2, took.rollout, obs("v2", names=("v2",)), at(10)).events == []


def test_blue_green_candidate_is_sized_like_the_stable_before_the_switch():
    """With 0% traffic its autoscaler alone would keep the candidate at minReplicas, and the
    switch would put the whole load on it at once: its lower bound is the stable's size."""
    s = spec("BlueGreen")  # autoscaling 1..10

    def sized(stable_replicas):
        seen = [VersionObservation(o.name, o.ready, o.artifact_key,
                                   stable_replicas if o.name == "v1" else 1)
                for o in obs("v1", "v2")]
        return decide(s, None, seen, T0).bounds

    assert sized(6) == {"v2": (6, 10)}
    assert sized(14) == {"v2": (10, 10)}  # never above maxReplicas
    assert sized(0) == sized(None) == {"v2": (1, 10)}  # never below max(1, minReplicas)
    waiting = [VersionObservation(o.name, o.ready, o.artifact_key, 6) for o in obs("v1")]
    assert decide(s, None, waiting, T0).bounds == {"v2": (6, 10)}  # scales up while it starts
    s.autoscaling.min_replicas = 8
    assert sized(6) == {"v2": (8, 10)}


def test_blue_green_keda_scales_old_to_zero_and_fail_never_switches():
    s = spec("BlueGreen")
    s.autoscaling.engine = "KEDA"
    d = decide(s, None, obs("v1", "v2"), T0)
    sw = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    assert decide(s, sw.rollout, obs("v1", "v2"), at(500)).bounds == {"v1": (0, 0)}
    bad = decide(s, d.rollout, obs("v1", "v2"), at(60), FAIL)
    assert bad.traffic == {"v1": 100, "v2": 0} and bad.rollout.phase == "RolledBack"


def test_switching_to_manual_hands_back_to_spec_weights():
    s = spec()
    d = decide(s, None, obs("v1", "v2"), T0)
    m = decide(spec("Manual", traffic=[30, 70]), d.rollout, obs("v1", "v2"), at(10))
    assert m.traffic == {"v1": 30, "v2": 70} and m.rollout is None


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_refuses_garbage():
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("2 minutes")


def _merge_patch(old: dict, new: dict) -> dict:
    """What the API server keeps after a JSON merge patch that omits None fields."""
    out = dict(old)
    for k, v in new.items():
        out[k] = _merge_patch(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_status_survives_merge_patches_that_cannot_delete_fields():
    """The status is written with a merge patch: a field the decision clears must not linger."""
    s = spec(steps=(50, 100))
    stored: dict = {}
    t = 0.0

    def step(observed, analysis=None):
        nonlocal stored
        current = RolloutStatus.model_validate(stored) if stored else None
        d = decide(s, current, observed, at(t), analysis)
        stored = _merge_patch(stored, d.rollout.to_dict())
        return d

    step(obs("v1", "v2"))
    t = 30
    lost = step(obs("v1"))  # candidate loses its pods mid-step
    assert lost.rollout.phase == "Waiting"
    t = 40
    # pods back, but paused before the step restarted: the stale hold must not route to v2
    paused = decide(
        spec(steps=(50, 100), paused=True), RolloutStatus.model_validate(stored), obs("v1", "v2"), at(t)
    )
    assert paused.traffic == {"v1": 100, "v2": 0}
    back = step(obs("v1", "v2"))
    assert back.rollout.phase == "Progressing" and back.requeue_after == 60
    t = 100
    step(obs("v1", "v2"), PASS)
    t = 160
    done = step(obs("v1", "v2"), PASS)
    assert done.rollout.phase == "Succeeded"
    assert stored["candidate"] == "" and stored["stable"] == "v2"


def test_early_checks_roll_back_a_failing_candidate_before_the_hold_ends():
    s = spec(stepDuration="4m")  # early checks every 60 s within the 240 s hold
    d = decide(s, None, obs("v1", "v2"), T0)
    assert d.requeue_after == 60
    assert not decide(s, d.rollout, obs("v1", "v2"), at(30)).analyse
    due = decide(s, d.rollout, obs("v1", "v2"), at(60))
    assert due.analyse and due.traffic == {"v1": 90, "v2": 10}
    ok = decide(s, d.rollout, obs("v1", "v2"), at(60), PASS)
    # an early pass does not advance: the step still needs its whole hold
    assert ok.rollout.phase == "Progressing" and ok.rollout.step == 0 and ok.events == []
    assert ok.rollout.last_analysis["early"] is True and ok.requeue_after == 60
    assert ok.rollout.step_started_at == d.rollout.step_started_at
    later = decide(s, ok.rollout, obs("v1", "v2"), at(90))
    assert not later.analyse and later.requeue_after == pytest.approx(30)
    unsure = decide(s, ok.rollout, obs("v1", "v2"), at(120), INCONCLUSIVE)
    assert unsure.rollout.phase == "Progressing" and unsure.rollout.inconclusive == 0
    bad = decide(s, unsure.rollout, obs("v1", "v2"), at(180), FAIL)
    assert bad.rollout.phase == "RolledBack" and bad.traffic == {"v1": 100, "v2": 0}
    assert "early check failed 180s into step 1/3" in bad.events[0][2]


def test_after_early_checks_the_full_hold_decides_the_step():
    s = spec(stepDuration="4m")
    d = decide(s, None, obs("v1", "v2"), T0)
    for t in (60, 120, 180):
        d = decide(s, d.rollout, obs("v1", "v2"), at(t), PASS)
        assert d.rollout.step == 0
    assert decide(s, d.rollout, obs("v1", "v2"), at(239)).requeue_after == pytest.approx(1)
    final = decide(s, d.rollout, obs("v1", "v2"), at(240), PASS)
    assert final.rollout.step == 1 and final.rollout.last_analysis["early"] is False
    assert final.traffic == {"v1": 50, "v2": 50}


def test_analysis_window_of_an_early_check_is_the_elapsed_part_of_the_step():
    from lmo.rollout import analysis_window

    s = spec(stepDuration="4m")
    d = decide(s, None, obs("v1", "v2"), T0)
    assert analysis_window(s) == 240
    assert analysis_window(s, d.rollout, at(60)) == 60
    assert analysis_window(s, d.rollout, at(300)) == 240
