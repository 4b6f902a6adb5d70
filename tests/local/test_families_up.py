"""The encoder families lmo converts answer under `lmo up` at fp32 and int8: RoBERTa and
XLM-RoBERTa fill-mask (BPE, Unigram), ModernBERT feature-extraction (sentence-transformers CLS
pooling) as four and two versions of one LanguageModel, and DistilBERT and DeBERTa-v3-style
classifiers at fp32 (their int8 versions: tests/local/test_encoders_up.py). Each version,
picked by the A/B header, answers what PyTorch answers on the original checkpoint: exactly
at fp32, closely at int8. Checkpoints are tiny and made here (tests/fixtures/encoders.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures.encoders import make_encoder
from tests.local.conftest import LmoUp, rel, write_lm
from tests.local.test_up import post

pytestmark = pytest.mark.slow

# task -> {version prefix: model_type}, and the precisions each group is served at
GROUPS = {
    "fill-mask": ({"roberta": "roberta", "xlmr": "xlm-roberta"}, ("fp32", "int8")),
    "feature-extraction": ({"modernbert": "modernbert"}, ("fp32", "int8")),
    "text-classification": ({"distilbert": "distilbert", "deberta": "deberta-v2"}, ("fp32",)),
}
# fill-mask int8: a hidden-32 model's top-1 margins at masked words are thin (as in
# tests/runtime/test_encoders.py); the rest keep the default gate
GATES = {("fill-mask", "int8"): 0.95}
TEXTS = ["The children built a {mask} on the beach.", "What a wonderful and brilliant evening!"]


@pytest.fixture(scope="module", params=sorted(GROUPS))
def family_up(request, tmp_path_factory, convert_cache):
    task = request.param
    kinds, precisions = GROUPS[task]
    d = tmp_path_factory.mktemp(f"families-{task}")
    ckpts, versions = {}, []
    for prefix, model_type in kinds.items():
        pooling = {"mode": "cls", "normalize": False} if task == "feature-extraction" else None
        ckpt = make_encoder(d / prefix, model_type, task, sentence_transformers=pooling)
        for precision in precisions:
            name = f"{prefix}-{precision}"
            ckpts[name] = (ckpt, precision)
            versions.append({"name": name, "checkpoint": {"uri": rel(ckpt, d)},
                             "traffic": 100 // (len(kinds) * len(precisions)),
                             "optimize": {"precision": precision, "accuracyGate": {
                                 "minScore": GATES.get((task, precision), 0.99)}}})
    file = write_lm(d / "families.yaml", "families", versions, task=task,
                    routing={"abTest": {"header": "x-lmo-version"}})
    up = LmoUp(file, d / "work", convert_cache).start(timeout=600)
    yield task, up, ckpts
    up.stop()


def _pytorch(task: str, ckpt, text: str):
    import torch
    import transformers as t

    tok = t.AutoTokenizer.from_pretrained(ckpt)
    cls = {"fill-mask": t.AutoModelForMaskedLM, "feature-extraction": t.AutoModel,
           "text-classification": t.AutoModelForSequenceClassification}[task]
    model = cls.from_pretrained(ckpt, attn_implementation="eager").eval()
    enc = tok([text], return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)
    if task == "feature-extraction":
        return out.last_hidden_state[0, 0].numpy()
    probs = out.logits.softmax(-1)[0]
    if task == "text-classification":
        return {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    position = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
    return [tok.decode([int(i)]).strip() for i in probs[position].topk(5).indices]


def test_every_family_answers_at_each_precision(family_up):
    task, up, ckpts = family_up
    served = {v["name"]: v["artifact"]["precision"] for v in up.status()["versions"]}
    assert served == {name: precision for name, (_, precision) in ckpts.items()}
    for name, (ckpt, precision) in ckpts.items():
        text = TEXTS[0] if task == "fill-mask" else TEXTS[1]
        if task == "fill-mask":
            from transformers import AutoTokenizer

            text = text.format(mask=AutoTokenizer.from_pretrained(ckpt).mask_token)
        body = {"text": text, **({"top_k": 3} if task == "fill-mask" else {})}
        _, headers, answer = post(up.url + f"/v1/{task}", json.dumps(body).encode(),
                                  {"x-lmo-version": name})
        assert headers["x-lmo-version"] == name
        want = _pytorch(task, ckpt, text)
        if task == "fill-mask":
            (candidates,) = answer["masks"]
            tokens = [c["token"] for c in candidates]
            if precision == "fp32":
                assert tokens == want[:3], name
            else:
                assert len(tokens) == 3 and tokens[0] in want, name
        elif task == "feature-extraction":
            got = np.asarray(answer["embedding"], dtype=np.float32).reshape(-1)
            if precision == "fp32":
                assert np.allclose(got, want, atol=1e-4), name
            else:
                cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
                assert cosine >= 0.98, (name, cosine)
        else:
            assert [x["label"] for x in answer["labels"]] == sorted(want, key=want.get,
                                                                     reverse=True)
            for x in answer["labels"]:
                assert x["score"] == pytest.approx(want[x["label"]], abs=1e-4), name
