"""Llama- and Qwen2-style decoders under `lmo up`: converted at fp32 and int8 through the gate,
served by real Triton servers with the same generation models as GPT-2, streamed token by
token; the chat endpoint renders the checkpoint's own chat template (no spec.chatTemplate)
and a request that omits max_tokens gets the checkpoint's max_new_tokens."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.decoders import make_decoder_checkpoint
from tests.local.conftest import LmoUp, rel, write_lm
from tests.local.test_commands import lmo

pytestmark = pytest.mark.slow

# version -> (model_type, precision, training steps, chat template in tokenizer_config.json)
# int8 needs a trained model (a confident one makes int8 fidelity measurable); fp32 versions
# keep random weights: they rarely emit end-of-sequence, so every answer runs to max_tokens
VERSIONS = {
    "llama": ("llama", "int8", 150, False),
    "qwen": ("qwen2", "int8", 150, False),
    "llama-fp32": ("llama", "fp32", 0, True),
    "qwen-fp32": ("qwen2", "fp32", 0, False),
}
GATES = {"int8": 0.97, "fp32": 0.99}
MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Where is Paris?"},
            {"role": "assistant", "content": "In France."},
            {"role": "user", "content": "And the castle?"}]
MAX_NEW_TOKENS = 24  # tests/fixtures/decoders.py's generation_config.json


@pytest.fixture(scope="module")
def decoders_up(tmp_path_factory, convert_cache):
    d = tmp_path_factory.mktemp("decoders-up")
    versions, ckpts = [], {}
    for name, (model_type, precision, steps, in_config) in VERSIONS.items():
        ckpts[name] = make_decoder_checkpoint(d / name, model_type, steps=steps,
                                              template_in_config=in_config)
        versions.append({"name": name, "checkpoint": {"uri": rel(ckpts[name], d)},
                         "traffic": 100 // len(VERSIONS),
                         "optimize": {"precision": precision,
                                      "accuracyGate": {"minScore": GATES[precision]}}})
    file = write_lm(d / "decoders.yaml", "chat", versions, task="text-generation",
                    routing={"abTest": {"header": "x-lmo-version"}})
    up = LmoUp(file, d / "work", convert_cache).start(timeout=900)
    yield up, ckpts
    up.stop()


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_each_decoder_streams_the_same_text_as_one_answer(decoders_up, version, capsys):
    up, _ = decoders_up
    status = up.status()
    artifact = next(v for v in status["versions"] if v["name"] == version)["artifact"]
    assert artifact["precision"] == VERSIONS[version][1]
    args = ["Paris is the capital", "--max-tokens", "10", "--version", version,
            "--url", up.url]
    rc, streamed, err = lmo(capsys, "generate", *args)
    assert rc == 0 and f"answered by {version}" in err
    rc, whole, _ = lmo(capsys, "generate", *args, "--no-stream")
    assert rc == 0
    assert streamed.strip() == whole.strip()
    assert len(whole.strip()) > len("Paris is the capital")


def _client(up: LmoUp, version: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=up.url + "/v1", api_key="unused", max_retries=0,
                         default_headers={"x-lmo-version": version})


def _greedy(ckpt, ids: list[int], max_new_tokens: int) -> list[int]:
    """PyTorch's greedy continuation of `ids` (to the first end-of-sequence token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids),
                                                                            dtype=torch.long),
                             max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    answer = out[0, len(ids):].tolist()
    return answer[:answer.index(tok.eos_token_id)] if tok.eos_token_id in answer else answer


@pytest.mark.parametrize("version", ["llama-fp32", "qwen-fp32"])
def test_chat_renders_the_checkpoints_template_and_takes_its_max_new_tokens(decoders_up,
                                                                            version):
    """No spec.chatTemplate: /v1/chat/completions renders the messages with the checkpoint's
    Jinja template (tokenizer_config.json for llama-fp32, chat_template.jinja for qwen-fp32),
    tokenized as transformers' apply_chat_template does (Llama's BOS only where the template
    writes it); the answer is PyTorch's greedy continuation of those very tokens, as long as
    the checkpoint's max_new_tokens (no max_tokens in the request)."""
    from transformers import AutoTokenizer

    up, ckpts = decoders_up
    tok = AutoTokenizer.from_pretrained(ckpts[version])
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                  return_dict=True)["input_ids"]
    answer = _greedy(ckpts[version], ids, MAX_NEW_TOKENS)
    assert len(answer) > 16  # longer than OpenAI's default: the checkpoint's length shows
    if version.startswith("llama"):  # a BOS put first would change the answer
        assert _greedy(ckpts[version], [tok.bos_token_id, *ids], MAX_NEW_TOKENS) != answer
    chat = _client(up, version).chat.completions.create(model="chat", messages=MESSAGES)
    assert chat.usage.prompt_tokens == len(ids)
    assert chat.choices[0].message.content == tok.decode(answer, skip_special_tokens=True)

    streamed = _client(up, version).chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        chat.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == len(ids)


@pytest.mark.parametrize("version", ["llama", "qwen"])
def test_chat_of_the_int8_versions_reads_the_templates_tokens(decoders_up, version):
    from transformers import AutoTokenizer

    up, ckpts = decoders_up
    tok = AutoTokenizer.from_pretrained(ckpts[version])
    ids = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True,
                                  return_dict=True)["input_ids"]
    chat = _client(up, version).chat.completions.create(model="chat", messages=MESSAGES,
                                                        max_tokens=4)
    assert chat.usage.prompt_tokens == len(ids)
    assert chat.usage.completion_tokens <= 4
