"""BERT artifacts served by a real Triton server (nvidia-pytriton's tritonserver, CPU).

Every answer is checked against PyTorch on the original checkpoint; concurrent requests
check that the entry model's batched execute() hands each request its own answer.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lmo_runtime.convert import convert
from lmo_runtime.manifest import REPOSITORY_DIR, ConversionRequest

pytestmark = pytest.mark.slow
tritonclient_http = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def bert_repo(minilm_int8_artifact, tiny_bert_mlm, tiny_bert_classifier, tmp_path_factory):
    """One repository with feature_extraction (MiniLM int8), fill_mask and text_classification."""
    root = tmp_path_factory.mktemp("bert-serving")
    repo = root / "repo"
    repo.mkdir()
    shutil.copytree(minilm_int8_artifact / REPOSITORY_DIR / "feature_extraction",
                    repo / "feature_extraction")
    for ckpt, task in ((tiny_bert_mlm, "fill-mask"), (tiny_bert_classifier, "text-classification")):
        request = ConversionRequest(checkpoint_uri=str(ckpt), task=task, backend="python",
                                    max_batch_size=8)
        out = root / task
        m = convert(request, out, progress=False)
        shutil.copytree(out / REPOSITORY_DIR / m.entry_model, repo / m.entry_model)
    return repo


@pytest.fixture(scope="module")
def client(bert_repo, triton_servers):
    server = triton_servers(bert_repo)
    server.wait_ready(180)
    return tritonclient_http.InferenceServerClient(server.http_address, concurrency=8)


def _text_input(texts):
    inp = tritonclient_http.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return inp


def _infer(client, model, texts, **parameters):
    return client.infer(model, [_text_input(texts)], parameters=parameters or None)


def _torch(ckpt, cls, texts):
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = cls.from_pretrained(ckpt).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return tok, enc, model(**enc)


def test_embeddings_match_pytorch_under_concurrency(client, minilm_path):
    import torch
    from transformers import AutoModel

    texts = [f"Sentence number {i} talks about {w}." for i, w in
             enumerate(["cats", "the stock market", "rain", "piano lessons", "a red car",
                        "mountains", "bread", "football"])]
    _, enc, out = _torch(minilm_path, AutoModel, texts)
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((out.last_hidden_state * m).sum(1) / m.sum(1), dim=1).numpy()
    # one text per request, all in flight together (tritonclient.http's async pool)
    handles = [client.async_infer("feature_extraction", [_text_input([t])]) for t in texts]
    got = np.stack([h.get_result().as_numpy("EMBEDDING")[0] for h in handles])
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.shape == (8, 384)
    assert cos.min() > 0.98 and cos.mean() > 0.99
    # a multi-row request answers row by row, in order (dynamic int8 picks its activation
    # scale per batch, so a row's values depend slightly on its batch: compare by cosine)
    both = _infer(client, "feature_extraction", texts[:4]).as_numpy("EMBEDDING")
    sim = both @ ref[:4].T
    assert list(sim.argmax(1)) == [0, 1, 2, 3] and sim.diagonal().min() > 0.98


def test_fill_mask_matches_pytorch(client, tiny_bert_mlm):
    """Five candidates per mask by default, best first, each with PyTorch's probability."""
    from transformers import AutoModelForMaskedLM

    texts = ["The capital of France is [MASK].", "I like to drink [MASK] in the morning."]
    tok, enc, out = _torch(tiny_bert_mlm, AutoModelForMaskedLM, texts)
    probs = out.logits.softmax(-1)
    result = _infer(client, "fill_mask", texts)
    tokens = result.as_numpy("TOKEN")
    scores = result.as_numpy("SCORE")
    sequences = result.as_numpy("SEQUENCE")
    assert tokens.shape == scores.shape == sequences.shape == (2, 1, 5)
    for i in range(2):
        pos = int((enc["input_ids"][i] == tok.mask_token_id).nonzero()[0])
        top = probs[i, pos].topk(5)
        assert [t.decode() for t in tokens[i, 0]] == [tok.decode([int(j)]).strip() for j in top.indices]
        assert np.allclose(scores[i, 0], top.values.numpy(), atol=1e-4)
        for token, sequence in zip(tokens[i, 0], sequences[i, 0]):
            assert token.decode() in sequence.decode() and "[MASK]" not in sequence.decode()


def test_fill_mask_top_k_per_mask_and_ragged_rows(client, tiny_bert_mlm):
    """top_k candidates for every mask of a text, in order; a row with fewer masks than
    its neighbours is padded with "" and 0."""
    from transformers import AutoModelForMaskedLM

    texts = ["The [MASK] of France is [MASK].", "I like to drink [MASK] in the morning."]
    tok, enc, out = _torch(tiny_bert_mlm, AutoModelForMaskedLM, texts)
    probs = out.logits.softmax(-1)
    result = _infer(client, "fill_mask", texts, top_k=3)
    tokens, scores = result.as_numpy("TOKEN"), result.as_numpy("SCORE")
    sequences = result.as_numpy("SEQUENCE")
    assert tokens.shape == (2, 2, 3)
    positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().reshape(-1).tolist()
    best = [int(probs[0, p].argmax()) for p in positions]
    for m, pos in enumerate(positions):
        top = probs[0, pos].topk(3)
        assert [t.decode() for t in tokens[0, m]] == [tok.decode([int(j)]).strip() for j in top.indices]
        assert np.allclose(scores[0, m], top.values.numpy(), atol=1e-4)
        # candidate j at mask m, the other mask filled with its best candidate
        ids = enc["input_ids"][0].clone()
        ids[positions] = torch_tensor(best)
        ids[pos] = int(top.indices[2])
        assert sequences[0, m, 2].decode() == tok.decode(ids, skip_special_tokens=True)
    assert [t.decode() for t in tokens[1, 1]] == ["", "", ""] and not scores[1, 1].any()
    assert all(t.decode() for t in tokens[1, 0])


def torch_tensor(values):
    import torch

    return torch.tensor(values)


@pytest.mark.parametrize("model,top_k,message", [
    ("fill_mask", 0, r"parameter top_k must be an integer >= 1, got 0"),
    ("text_classification", "two", r'parameter top_k must be an integer >= 1, got "two"'),
    ("fill_mask", 51, r"parameter top_k must be at most 50 for this fill-mask model"),
])
def test_bad_top_k_is_a_clear_error(client, model, top_k, message):
    text = "The capital of France is [MASK]." if model == "fill_mask" else "Fine."
    with pytest.raises(Exception, match=message):
        _infer(client, model, [text], top_k=top_k)


def test_fill_mask_without_mask_token_is_a_clear_error(client):
    with pytest.raises(Exception, match=r"\[MASK\]"):
        _infer(client, "fill_mask", ["There is nothing to fill here."])


def test_fill_mask_past_the_context_fails_only_its_own_request(client, tiny_bert_mlm):
    """A [MASK] that truncation to max_length (128 tokens here) cuts off gets a clear error;
    the requests batched with it are answered."""
    from transformers import AutoModelForMaskedLM

    long_text = "word " * 200 + "[MASK]."
    texts = ["The capital of France is [MASK].", "I like to drink [MASK] in the morning."]
    tok, enc, out = _torch(tiny_bert_mlm, AutoModelForMaskedLM, texts)
    probs = out.logits.softmax(-1)
    # all in flight together, so that Triton batches them into one execute() call
    handles = [client.async_infer("fill_mask", [_text_input([t])])
               for t in (texts[0], long_text, texts[1], long_text)]
    for i, h in enumerate(handles):
        if i % 2:
            with pytest.raises(Exception, match=r"the \[MASK\] token is past the model's "
                                                 r"128-token context; shorten the text"):
                h.get_result()
            continue
        row = i // 2
        token = h.get_result().as_numpy("TOKEN").reshape(-1)[0].decode()
        pos = int((enc["input_ids"][row] == tok.mask_token_id).nonzero()[0])
        assert token == tok.decode([int(probs[row, pos].argmax())]).strip()


def test_classification_matches_pytorch(client, tiny_bert_classifier):
    """Every label, best first, with PyTorch's probabilities; top_k keeps the first k."""
    from transformers import AutoModelForSequenceClassification

    texts = ["I loved this film.", "Terrible service, never again.", "It was fine."]
    _, _, out = _torch(tiny_bert_classifier, AutoModelForSequenceClassification, texts)
    probs = out.logits.softmax(-1).numpy()
    names = np.array(["NEGATIVE", "POSITIVE"])
    order = np.argsort(-probs, axis=-1)
    result = _infer(client, "text_classification", texts)
    assert result.as_numpy("LABEL").shape == (3, 2)
    assert [[x.decode() for x in row] for row in result.as_numpy("LABEL")] == names[order].tolist()
    assert np.allclose(result.as_numpy("SCORE"), np.take_along_axis(probs, order, -1), atol=1e-4)
    assert np.allclose(result.as_numpy("SCORE").sum(-1), 1.0, atol=1e-4)
    top1 = _infer(client, "text_classification", texts, top_k=1)
    assert top1.as_numpy("LABEL").shape == (3, 1)
    assert [x.decode() for x in top1.as_numpy("LABEL")[:, 0]] == names[probs.argmax(-1)].tolist()
    # more than there are labels: every label (as transformers' pipeline does)
    assert _infer(client, "text_classification", texts, top_k=9).as_numpy("LABEL").shape == (3, 2)


ORT_AS_PYTHON = '''
import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from pathlib import Path


class TritonPythonModel:
    """Test stand-in for Triton's ONNX Runtime backend (absent from the CPU-only server)."""

    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.session = ort.InferenceSession(str(here / "model.onnx"), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            out = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, v) for n, v in zip(self.outputs, out)]))
        return responses
'''


def test_onnxruntime_backend_flavour_calls_the_onnx_model_through_bls(
    tiny_bert_classifier, tmp_path, triton_server_factory
):
    """backend: onnxruntime writes <entry> (tokenize, BLS, post-process) + <entry>_onnx. The
    CPU-only server has no ONNX Runtime backend, so <entry>_onnx is served here by a Python
    stand-in running the same model.onnx; the entry model's BLS path is the real one."""
    from google.protobuf import text_format
    from transformers import AutoModelForSequenceClassification

    from lmo_runtime.triton.config import validate_config

    request = ConversionRequest(checkpoint_uri=str(tiny_bert_classifier),
                                task="text-classification", backend="onnxruntime")
    convert(request, tmp_path / "a", progress=False)
    repo = tmp_path / "a" / REPOSITORY_DIR
    onnx_dir = repo / "text_classification_onnx"
    config = validate_config((onnx_dir / "config.pbtxt").read_text())
    assert config.platform == "onnxruntime_onnx"
    config.platform, config.backend, config.default_model_filename = "", "python", ""
    (onnx_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    (onnx_dir / "1" / "model.py").write_text(ORT_AS_PYTHON)

    server = triton_server_factory(repo)
    server.wait_ready(180)
    client = tritonclient_http.InferenceServerClient(server.http_address)
    texts = ["I loved this film.", "Terrible service, never again."]
    _, _, out = _torch(tiny_bert_classifier, AutoModelForSequenceClassification, texts)
    probs = out.logits.softmax(-1).numpy()
    result = _infer(client, "text_classification", texts, top_k=1)
    labels = [x.decode() for x in result.as_numpy("LABEL").reshape(-1)]
    assert labels == [["NEGATIVE", "POSITIVE"][i] for i in probs.argmax(-1)]
    assert np.allclose(result.as_numpy("SCORE").reshape(-1), probs.max(-1), atol=1e-4)
