"""`lmo up` serving encoders other than BERT: a DistilBERT (WordPiece, no token types) and a
DeBERTa-v3-style (Unigram) classifier, both int8, as two versions of one LanguageModel;
every label or the top_k best through `POST /v1/text-classification`, KServe v2 and
`lmo infer --top-k`."""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import tritonclient.http as httpclient

from lmo.cli import main
from tests.fixtures.encoders import make_encoder
from tests.local.conftest import LmoUp, rel, write_lm
from tests.local.test_up import post

pytestmark = pytest.mark.slow

TEXT = "What a wonderful and brilliant evening!"
KINDS = {"v1": "distilbert", "v2": "deberta-v2"}


@pytest.fixture(scope="module")
def encoders_up(tmp_path_factory, convert_cache):
    d = tmp_path_factory.mktemp("encoders-up")
    ckpts = {v: make_encoder(d / kind, kind, "text-classification") for v, kind in KINDS.items()}
    file = write_lm(
        d / "encoders.yaml", "encoders",
        [{"name": v, "checkpoint": {"uri": rel(p, d)}, "traffic": 50,
          "optimize": {"precision": "int8", "accuracyGate": {"minScore": 0.99}}}
         for v, p in ckpts.items()],
        routing={"abTest": {"header": "x-lmo-version"}},
    )
    up = LmoUp(file, d / "work", convert_cache).start(timeout=420)
    yield up, ckpts
    up.stop()


def _pytorch(ckpt, text):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
    with torch.inference_mode():
        probs = model(**tok([text], return_tensors="pt")).logits.softmax(-1)[0].numpy()
    return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}


def test_every_label_or_the_top_k_in_both_versions(encoders_up, capsys):
    up, ckpts = encoders_up
    assert {v["artifact"]["precision"] for v in up.status()["versions"]} == {"int8"}
    for version, ckpt in ckpts.items():
        want = _pytorch(ckpt, TEXT)
        pin = {"x-lmo-version": version}
        _, headers, body = post(up.url + "/v1/text-classification",
                                json.dumps({"text": TEXT}).encode(), pin)
        assert headers["x-lmo-version"] == version
        labels = body["labels"]
        assert [x["label"] for x in labels] == sorted(want, key=want.get, reverse=True)
        assert body["label"] == labels[0]["label"] and body["score"] == labels[0]["score"]
        for x in labels:  # int8 against the fp32 PyTorch model
            assert x["score"] == pytest.approx(want[x["label"]], abs=0.05)
        _, _, top1 = post(up.url + "/v1/text-classification",
                          json.dumps({"text": [TEXT, "It rained."], "top_k": 1}).encode(), pin)
        assert [len(r["labels"]) for r in top1["results"]] == [1, 1]
        assert top1["results"][0]["label"] == body["label"]

        # KServe v2 through the door with the request parameter, as tritonclient sends it
        client = httpclient.InferenceServerClient(up.url.removeprefix("http://"))
        inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[TEXT.encode()]], dtype=object))
        try:
            result = client.infer("text_classification", [inp], headers=pin,
                                  parameters={"top_k": 1})
        finally:
            client.close()
        assert result.as_numpy("LABEL").shape == (1, 1)
        assert result.as_numpy("LABEL")[0, 0].decode() == body["label"]

        capsys.readouterr()
        assert main(["infer", TEXT, "--url", up.url, "--version", version, "--top-k", "1"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"[{version}] {body['label']} (score ") and "then" not in out
        assert main(["infer", TEXT, "--url", up.url, "--version", version]) == 0
        assert "; then " in capsys.readouterr().out  # every label by default


def test_a_bad_top_k_is_refused_at_the_door(encoders_up):
    up, _ = encoders_up
    with pytest.raises(urllib.error.HTTPError) as err:
        post(up.url + "/v1/text-classification",
             json.dumps({"text": TEXT, "top_k": 0}).encode())
    assert err.value.code == 400
    assert json.loads(err.value.read())["error"] == (
        'field "top_k" must be an integer >= 1 (fill-mask and text-classification only), got 0')
