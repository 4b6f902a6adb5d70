"""The converter's termination summary (`lmo convert --manifest-out`): what the operator
reads back from the Job's pod, under the kubelet's 4 KiB termination-message limit."""

from __future__ import annotations

import json

from lmo_runtime.cli import SUMMARY_LIMIT, summary
from lmo_runtime.manifest import (
    GOLDEN_COPY_CHARS,
    GOLDEN_COPY_INPUTS,
    ConversionRequest,
    Golden,
    Manifest,
    Score,
)

URI = "s3://store/lmo/" + "ab" * 32 + "/"


def manifest(inputs: list[str] | None, accepted: bool = True, reason: str = "") -> Manifest:
    request = ConversionRequest(checkpoint_uri="s3://m/x/", task="text-generation")
    score = Score(metric="next_token_top1", value=0.995, threshold=0.99, passed=accepted, samples=8)
    return Manifest(
        key=request.key(), request=request, accepted=accepted, reason=reason,
        task="text-generation", precision="int8", entry_model="text_generation", score=score,
        attempts=[score] * 3,
        golden=None if inputs is None else Golden(inputs=inputs, outputs=[""] * len(inputs),
                                                  kind="tokens"),
    )


def size(data: dict) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


def test_the_summary_carries_the_golden_inputs_for_the_replay():
    inputs = ["Once upon a time", "The weather today is"]
    out = summary(manifest(inputs), URI)
    assert out["goldenInputs"] == inputs and out["entryModel"] == "text_generation"


def test_long_golden_inputs_keep_the_summary_under_the_limit():
    # 20 inputs of 5000 characters, with characters JSON escapes to 6 bytes each
    inputs = [("é\u2603" * 2500) for _ in range(20)]
    out = summary(manifest(inputs), URI)
    assert size(out) < SUMMARY_LIMIT - 512
    kept = out["goldenInputs"]
    assert 1 <= len(kept) <= GOLDEN_COPY_INPUTS
    assert all(len(t) <= GOLDEN_COPY_CHARS and inputs[0].startswith(t) for t in kept)
    ascii_inputs = ["x" * 5000 for _ in range(20)]
    out = summary(manifest(ascii_inputs), URI)
    assert out["goldenInputs"] == ["x" * GOLDEN_COPY_CHARS] * GOLDEN_COPY_INPUTS
    assert size(out) < SUMMARY_LIMIT - 512


def test_a_refusal_or_an_artifact_without_golden_inputs_has_none():
    assert "goldenInputs" not in summary(manifest(["a"], accepted=False, reason="gate"), URI)
    assert "goldenInputs" not in summary(manifest(None), URI)
    assert "goldenInputs" not in summary(manifest([]), URI)
