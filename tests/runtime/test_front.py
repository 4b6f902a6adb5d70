"""The per-version front component (`python3 -m lmo_runtime.front`) in front of a real Triton,
as the cluster's pod runs it, used through real clients: the `openai` SDK, tritonclient and
plain HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient
from tokenizers import Tokenizer

from tests.fixtures.front import FrontProcess

pytestmark = pytest.mark.slow

TEMPLATE = json.dumps({"system": "{content}\n", "user": "Q: {content}\n",
                       "assistant": "A: {content}\n", "generationPrompt": "A:", "stop": "\n"})


def call(url: str, body: bytes | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def minilm(triton_servers, minilm_fp32_artifact):
    repo = minilm_fp32_artifact / "model_repository"
    triton = triton_servers(repo)
    front = FrontProcess(task="feature-extraction", model="minilm", version="v1",
                         triton_url=triton.url, repository=repo).start()
    yield triton, front, repo
    front.stop()


@pytest.fixture(scope="module")
def gpt(triton_servers, gpt2_fp32_artifact):
    repo = gpt2_fp32_artifact / "model_repository"
    triton = triton_servers(repo)
    plain = FrontProcess(task="text-generation", model="story", version="v2",
                         triton_url=triton.url, repository=repo).start()
    chat = FrontProcess(task="text-generation", model="story", version="v2",
                        triton_url=triton.url, repository=repo, chat_template=TEMPLATE).start()
    yield triton, plain, chat
    plain.stop()
    chat.stop()


def direct_embeddings(triton, texts: list[str]) -> np.ndarray:
    client = httpclient.InferenceServerClient(triton.http_address)
    try:
        inp = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        return client.infer("feature_extraction", [inp]).as_numpy("EMBEDDING")
    finally:
        client.close()


def test_openai_sdk_gets_the_embeddings_triton_computes(minilm):
    triton, front, repo = minilm
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["minilm"]
    assert client.models.retrieve("minilm").owned_by == "lmo"

    texts = ["The cat sat on the mat.", "Embeddings map text to vectors"]
    expected = direct_embeddings(triton, texts)
    one = client.embeddings.create(model="minilm", input=texts[0])  # the SDK asks base64
    # one text alone against it in a padded batch of two: equal up to float32 rounding
    np.testing.assert_allclose(one.data[0].embedding, expected[0], rtol=1e-4, atol=1e-6)
    many = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert [d.index for d in many.data] == [0, 1]
    np.testing.assert_allclose([d.embedding for d in many.data], expected, rtol=1e-6)
    tokenizer = Tokenizer.from_file(str(repo / "feature_extraction" / "1" / "tokenizer.json"))
    tokenizer.no_padding()  # the model reads each text's own tokens
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts))
    assert many.usage.prompt_tokens == many.usage.total_tokens == tokens

    raw = client.embeddings.with_raw_response.create(model="minilm", input="hi")
    assert raw.headers["x-lmo-version"] == "v1" and len(raw.headers["x-lmo-request-id"]) == 24


def test_openai_errors_have_openais_shape_and_status(minilm):
    _, front, _ = minilm
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="'gpt-4o' does not exist"):
        client.embeddings.create(model="gpt-4o", input="hi")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.BadRequestError, match="needs a text-generation model") as err:
        client.completions.create(model="minilm", prompt="Once")
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match='"input" must be a string') as err:
        client.embeddings.create(model="minilm", input=[])
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["param"] == "input"
    status, headers, body = call(front.url + "/v1/embeddings", b"{not json")
    assert status == 400 and set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert headers["x-lmo-version"] == "v1" and headers["x-lmo-request-id"]


def test_kserve_v2_reaches_the_public_model_only(minilm):
    triton, front, _ = minilm
    address = front.url.removeprefix("http://")
    client = httpclient.InferenceServerClient(address)
    try:
        inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"hello there"]], dtype=object))
        got = client.infer("feature_extraction", [inp]).as_numpy("EMBEDDING")
        assert client.is_server_ready() and client.is_model_ready("feature_extraction")
        with pytest.raises(Exception, match="not served here"):
            client.get_model_metadata("feedback")
    finally:
        client.close()
    np.testing.assert_allclose(got, direct_embeddings(triton, ["hello there"]), rtol=1e-6)
    body = json.dumps({"inputs": [{"name": "score", "shape": [1], "datatype": "FP32",
                                   "data": [1.0]}]}).encode()
    assert call(front.url + "/v2/models/feedback/infer", body)[0] == 404
    assert call(front.url + "/v2/models/feedback/generate", b'{"score": 1}')[0] == 404
    assert call(front.url + "/v2/repository/index", b"{}")[0] == 404
    assert call(triton.url + "/v2/models/feedback/infer", body)[0] == 200  # it is there


def test_text_api_and_feedback_only_for_answered_ids(minilm):
    triton, front, _ = minilm
    status, headers, body = call(front.url + "/v1/feature-extraction",
                                 json.dumps({"text": "hello there"}).encode())
    assert status == 200 and json.loads(body)["version"] == "v1"
    np.testing.assert_allclose(json.loads(body)["embedding"],
                               direct_embeddings(triton, ["hello there"])[0], rtol=1e-6)
    request_id = headers["x-lmo-request-id"]

    def samples() -> float:
        text = urllib.request.urlopen(triton.metrics_url).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("lmo_feedback_samples_total"))

    before = samples()
    report = {"requestId": "0" * 24, "success": True}
    status, _, body = call(front.url + "/v1/feedback", json.dumps(report).encode())
    assert status == 404 and "unknown or expired" in json.loads(body)["error"]
    status, _, body = call(front.url + "/v1/feedback",
                           json.dumps({"requestId": request_id, "score": 1.5}).encode())
    assert status == 400 and "score must be a number from 0 to 1" in json.loads(body)["error"]
    status, _, body = call(front.url + "/v1/feedback",
                           json.dumps({"requestId": request_id, "score": 0.5}).encode())
    assert status == 200 and json.loads(body) == {"version": "v1", "success": 0.5}
    status, _, _ = call(front.url + "/v1/feedback",
                        json.dumps({"requestId": request_id, "success": True}).encode())
    assert status == 404  # one report per answer
    assert samples() == before + 1


def direct_generate(triton, prompt: str, max_tokens: int) -> str:
    body = json.dumps({"inputs": [
        {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [prompt]},
        {"name": "MAX_TOKENS", "shape": [1, 1], "datatype": "INT32", "data": [max_tokens]}]})
    _, _, out = call(triton.url + "/v2/models/text_generation/infer", body.encode())
    return json.loads(out)["outputs"][0]["data"][0]


def test_openai_sdk_completions_plain_and_streamed(gpt):
    triton, front, _ = gpt
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused")
    prompt = "The quick brown fox"
    expected = direct_generate(triton, prompt, 12)
    done = client.completions.create(model="story", prompt=prompt, max_tokens=12, temperature=0)
    assert done.choices[0].text == expected and done.object == "text_completion"
    assert done.usage.completion_tokens <= 12 and done.usage.prompt_tokens > 0
    assert done.choices[0].finish_reason == ("length" if done.usage.completion_tokens == 12
                                             else "stop")
    pieces, reasons, usage = [], [], None
    for chunk in client.completions.create(model="story", prompt=prompt, max_tokens=12,
                                           stream=True, stream_options={"include_usage": True}):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
        usage = chunk.usage or usage
    assert "".join(pieces) == expected and len(pieces) > 2
    assert reasons[-1] == done.choices[0].finish_reason and set(reasons[:-1]) == {None}
    assert usage.completion_tokens == done.usage.completion_tokens

    two = client.completions.create(model="story", prompt=[prompt, "Once upon"], max_tokens=5)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == direct_generate(
        triton, prompt, 5)
    seeded = [client.completions.create(model="story", prompt="A", max_tokens=8, seed=7,
                                        temperature=1.0, top_p=0.9).choices[0].text
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = client.completions.create(model="story", prompt=prompt, max_tokens=12,
                                        stop=[expected[2:5]])
    assert stopped.choices[0].text == expected[:2] and stopped.choices[0].finish_reason == "stop"


def test_streamed_answer_is_server_sent_events_ending_done(gpt):
    _, front, _ = gpt
    body = json.dumps({"model": "story", "prompt": "Hello", "max_tokens": 4, "stream": True})
    status, headers, raw = call(front.url + "/v1/completions", body.encode())
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [e for e in raw.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"


def test_completion_mistakes_are_400_naming_the_field(gpt):
    _, front, _ = gpt
    client = openai.OpenAI(base_url=front.url + "/v1", api_key="unused", max_retries=0)
    for kwargs, param in ((dict(stop=["a", "b"]), "stop"), (dict(max_tokens=0), "max_tokens"),
                          (dict(top_p=0), "top_p"), (dict(n=2), "n"),
                          (dict(temperature="hot"), "temperature")):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model="story", prompt="x", **kwargs)
        assert err.value.body["param"] == param, kwargs
    with pytest.raises(openai.BadRequestError, match="needs a feature-extraction model"):
        client.embeddings.create(model="story", input="x")


def test_chat_needs_the_declared_template(gpt):
    triton, plain, chat = gpt
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    client = openai.OpenAI(base_url=plain.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="spec.chatTemplate") as err:
        client.chat.completions.create(model="story", messages=messages)
    assert err.value.body["param"] == "spec.chatTemplate"

    client = openai.OpenAI(base_url=chat.url + "/v1", api_key="unused")
    answer = client.chat.completions.create(model="story", messages=messages, max_tokens=10)
    prompt = "Be brief.\nQ: Hi\nA:"
    expected = direct_generate(triton, prompt, 10).split("\n")[0]  # the template's stop
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == expected
    streamed = client.chat.completions.create(model="story", messages=messages, max_tokens=10,
                                              stream=True)
    chunks = list(streamed)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


# a checkpoint's own Jinja chat template, as tokenizer_config.json carries it
CHECKPOINT_TEMPLATE = (
    "{% if messages[0]['role'] == 'assistant' %}"
    "{{ raise_exception('Conversations start with a system or user turn') }}{% endif %}"
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def gpt_own_template(gpt, tmp_path_factory):
    """Fronts over the same Triton whose repository's generation.json carries a checkpoint
    chat template, its special tokens and max_new_tokens 7: one without spec.chatTemplate,
    one with it (the spec's wins)."""
    triton, plain, _ = gpt
    served = plain.args[plain.args.index("--repository") + 1]
    repo = tmp_path_factory.mktemp("own-template")
    assets = repo / "text_generation" / "1"
    assets.mkdir(parents=True)
    source = Path(served) / "text_generation" / "1"
    (assets / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    generation = json.loads((source / "generation.json").read_text())
    generation.update(chat_template=CHECKPOINT_TEMPLATE,
                      special_tokens={"eos_token": "<|endoftext|>"}, defaults={"max_tokens": 7})
    (assets / "generation.json").write_text(json.dumps(generation))
    own = FrontProcess(task="text-generation", model="story", version="v2",
                       triton_url=triton.url, repository=repo).start()
    spec = FrontProcess(task="text-generation", model="story", version="v2",
                        triton_url=triton.url, repository=repo, chat_template=TEMPLATE).start()
    yield triton, own, spec, assets
    own.stop()
    spec.stop()


def test_chat_renders_the_checkpoints_template_unless_the_spec_sets_one(gpt_own_template):
    triton, own, spec, assets = gpt_own_template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = "<system>Be brief.<|endoftext|>\n<user>Hi<|endoftext|>\n<assistant>"
    tokenizer = Tokenizer.from_file(str(assets / "tokenizer.json"))
    client = openai.OpenAI(base_url=own.url + "/v1", api_key="unused", max_retries=0)
    # no max_tokens: the checkpoint's max_new_tokens (7), not OpenAI's 16
    answer = client.chat.completions.create(model="story", messages=messages)
    assert answer.choices[0].message.content == direct_generate(triton, rendered, 7)
    assert answer.usage.prompt_tokens == len(tokenizer.encode(rendered,
                                                              add_special_tokens=False).ids)
    plain = client.completions.create(model="story", prompt="Once upon a time")
    assert plain.choices[0].text == direct_generate(triton, "Once upon a time", 7)
    # the template's raise_exception: a 400 on messages, with its words
    with pytest.raises(openai.BadRequestError, match="start with a system or user") as err:
        client.chat.completions.create(model="story",
                                       messages=[{"role": "assistant", "content": "Hi"}])
    assert err.value.body["param"] == "messages"

    client = openai.OpenAI(base_url=spec.url + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="story", messages=messages, max_tokens=10)
    expected = direct_generate(triton, "Be brief.\nQ: Hi\nA:", 10).split("\n")[0]
    assert answer.choices[0].message.content == expected


@pytest.fixture(scope="module")
def bert_fronts(triton_servers, tiny_bert_classifier, tiny_bert_mlm, tmp_path_factory):
    """text-classification and fill-mask, each a real conversion behind a real Triton and
    its front."""
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest

    out = {}
    for ckpt, task in ((tiny_bert_classifier, "text-classification"), (tiny_bert_mlm, "fill-mask")):
        root = tmp_path_factory.mktemp(task)
        convert(ConversionRequest(checkpoint_uri=str(ckpt), task=task, backend="python",
                                  min_score=0.0), root, progress=False)
        repo = root / "model_repository"
        triton = triton_servers(repo)
        out[task] = (triton, FrontProcess(task=task, model="m", version="v1",
                                          triton_url=triton.url, repository=repo).start())
    yield out
    for _, front in out.values():
        front.stop()


def _direct(triton, model: str, texts: list[str], top_k: int | None = None) -> dict:
    body = {"inputs": [{"name": "TEXT", "shape": [len(texts), 1], "datatype": "BYTES",
                        "data": texts}]}
    if top_k is not None:
        body["parameters"] = {"top_k": top_k}
    _, _, out = call(f"{triton.url}/v2/models/{model}/infer", json.dumps(body).encode())
    return {o["name"]: np.array(o["data"], dtype=object).reshape(o["shape"])
            for o in json.loads(out)["outputs"]}


def test_text_classification_answers_the_label_distribution_and_top_k(bert_fronts):
    triton, front = bert_fronts["text-classification"]
    texts = ["a wonderful film", "a dreadful film"]
    status, _, body = call(front.url + "/v1/text-classification",
                           json.dumps({"text": texts}).encode())
    assert status == 200
    direct = _direct(triton, "text_classification", texts)
    for item, labels, scores in zip(json.loads(body)["results"],
                                    direct["LABEL"].reshape(2, -1), direct["SCORE"].reshape(2, -1)):
        # every label the model answers (all of them, best first), the best one on top
        assert [c["label"] for c in item["labels"]] == list(labels)
        np.testing.assert_allclose([c["score"] for c in item["labels"]], scores.astype(float),
                                   rtol=1e-6)
        assert (item["label"], item["score"]) == (item["labels"][0]["label"],
                                                  item["labels"][0]["score"])
        assert [c["score"] for c in item["labels"]] == sorted(
            (c["score"] for c in item["labels"]), reverse=True)
    status, _, body = call(front.url + "/v1/text-classification",
                           json.dumps({"text": texts[0], "top_k": 1}).encode())
    assert status == 200 and len(json.loads(body)["labels"]) == 1
    status, _, body = call(front.url + "/v1/text-classification",
                           json.dumps({"text": texts[0], "top_k": 0}).encode())
    assert status == 400 and '"top_k" must be an integer >= 1' in json.loads(body)["error"]


def test_fill_mask_answers_candidates_per_mask(bert_fronts):
    triton, front = bert_fronts["fill-mask"]
    text = "Paris is the [MASK] of France."
    status, _, body = call(front.url + "/v1/fill-mask", json.dumps({"text": text,
                                                                     "top_k": 3}).encode())
    assert status == 200
    item = json.loads(body)
    direct = _direct(triton, "fill_mask", [text], top_k=3)
    tokens = direct["TOKEN"].reshape(-1)
    assert [c["token"] for c in item["masks"][0]] == list(tokens[:len(item["masks"][0])])
    assert item["token"] == tokens[0] and item["sequence"] == direct["SEQUENCE"].reshape(-1)[0]
    # a text without the mask token is the model's refusal, answered 400 with its words
    status, _, body = call(front.url + "/v1/fill-mask", json.dumps({"text": "no mask"}).encode())
    assert status == 400 and "must contain the mask token" in json.loads(body)["error"]
