"""The readable answers every client shows (lmo_runtime.answers): /v1 JSON and lmo infer."""

from __future__ import annotations

from lmo_runtime.answers import describe, per_item, text_answer


def test_classification_labels_best_first():
    outputs = [{"name": "LABEL", "datatype": "BYTES", "shape": [2, 2],
                "data": ["POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE"]},
               {"name": "SCORE", "datatype": "FP32", "shape": [2, 2], "data": [0.9, 0.1, 0.6, 0.4]}]
    items = per_item(outputs, 2)
    assert text_answer("text-classification", items[1]) == {
        "label": "NEGATIVE", "score": 0.6,
        "labels": [{"label": "NEGATIVE", "score": 0.6}, {"label": "POSITIVE", "score": 0.4}]}
    assert describe("text-classification", items[0]) == \
        "POSITIVE (score 0.9000); then NEGATIVE 0.1000"
    one = per_item([{"name": "LABEL", "shape": [1, 1], "data": ["POSITIVE"]},
                    {"name": "SCORE", "shape": [1, 1], "data": [0.99]}], 1)[0]
    assert text_answer("text-classification", one)["labels"] == [{"label": "POSITIVE", "score": 0.99}]


def test_fill_mask_candidates_per_mask_without_padding():
    """Row 0 has two masks, row 1 one (padded with "" by the model): padding is dropped."""
    tokens = ["a", "b", "c", "d", "e", "", "", ""]
    outputs = [{"name": "TOKEN", "shape": [2, 2, 2], "data": tokens[:4] + ["e", "f", "", ""]},
               {"name": "SCORE", "shape": [2, 2, 2], "data": [.5, .2, .6, .1, .7, .2, 0, 0]},
               {"name": "SEQUENCE", "shape": [2, 2, 2],
                "data": ["a d", "b d", "a c", "a d2", "e!", "f!", "", ""]}]
    first, second = (text_answer("fill-mask", i) for i in per_item(outputs, 2))
    assert [len(m) for m in first["masks"]] == [2, 2]
    assert first["token"] == "a" and first["sequence"] == "a d"
    assert second["masks"] == [[{"token": "e", "score": .7, "sequence": "e!"},
                                {"token": "f", "score": .2, "sequence": "f!"}]]
    assert describe("fill-mask", per_item(outputs, 2)[1]) == \
        "e!  (mask 1: token 'e', score 0.7000; then 'f' 0.2000)"


def test_embeddings_and_generated_text_keep_their_names():
    outputs = [{"name": "EMBEDDING", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}]
    assert text_answer("feature-extraction", per_item(outputs, 1)[0]) == {"embedding": [0.1, 0.2, 0.3]}
    outputs = [{"name": "TEXT_OUTPUT", "shape": [1, 1], "data": ["once upon"]}]
    assert text_answer("text-generation", per_item(outputs, 1)[0]) == {"text_output": "once upon"}
