"""Golden replay on real conversions: MiniLM int8 (candidate) against MiniLM fp32 (stable).

Both artifacts are real conversions of the real all-MiniLM-L6-v2 checkpoint (session
fixtures shared with the runtime tests), each served by its own real tritonserver; the
golden inputs come from the candidate's manifest, as the operator replays them.
"""

from __future__ import annotations

import pytest

from lmo.replay import ReplayError, ReplayTargets, replay_drift
from lmo_runtime.manifest import MANIFEST_FILE, REPOSITORY_DIR, Manifest

pytestmark = pytest.mark.slow


def test_int8_candidate_drifts_a_little_from_fp32_stable(
    triton_servers, minilm_fp32_artifact, minilm_int8_artifact
):
    manifest = Manifest.model_validate_json((minilm_int8_artifact / MANIFEST_FILE).read_text())
    stable = triton_servers(minilm_fp32_artifact / REPOSITORY_DIR)
    candidate = triton_servers(minilm_int8_artifact / REPOSITORY_DIR)

    drift = replay_drift(ReplayTargets.from_manifest(manifest, candidate.url, stable.url))
    assert drift.metric == "1-cosine" and drift.samples == len(manifest.golden.inputs) >= 4
    # int8 answers differ from fp32, but within what its accuracy gate allowed
    assert 0 < drift.drift < 1 - manifest.request.min_score
    same = replay_drift(ReplayTargets.from_manifest(manifest, candidate.url, candidate.url))
    assert same.drift < 1e-6


def test_replay_needs_golden_inputs_in_the_manifest(minilm_int8_artifact):
    manifest = Manifest.model_validate_json((minilm_int8_artifact / MANIFEST_FILE).read_text())
    bare = manifest.model_copy(update={"golden": None})
    with pytest.raises(ReplayError, match="recorded no golden inputs"):
        ReplayTargets.from_manifest(bare, "http://a", "http://b")


def test_unreachable_candidate_fails_the_replay(triton_servers, minilm_int8_artifact):
    import socket

    manifest = Manifest.model_validate_json((minilm_int8_artifact / MANIFEST_FILE).read_text())
    stable = triton_servers(minilm_int8_artifact / REPOSITORY_DIR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ReplayError, match="127.0.0.1"):
        replay_drift(ReplayTargets.from_manifest(manifest, dead, stable.url))
