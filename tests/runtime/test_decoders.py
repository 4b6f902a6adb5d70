"""Llama-, Qwen2-, Mistral- and Phi3-style decoders: convert through the gate, generate what
PyTorch generates, and carry what the checkpoint says about generation.

Checkpoints are made here (tests/fixtures/decoders.py: transformers configs with grouped-query
attention, byte-level BPE tokenizers trained with `tokenizers`); nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from lmo_runtime.families import family_for
from lmo_runtime.families.gpt2 import greedy_text
from tests.fixtures.decoders import CHAT_TEMPLATE, make_decoder_checkpoint

pytestmark = pytest.mark.slow

PROMPTS = ["The customer asked for", "Heavy snow closed the schools", "Paris is"]
TRAINED = ("llama", "qwen2")  # trained: int8 through the gate is meaningful
UNTRAINED = ("mistral", "phi3")  # random weights: fp32 export fidelity and generation only


@pytest.fixture(scope="session")
def decoder_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoders")
    out = {t: make_decoder_checkpoint(root / t, t, steps=150) for t in TRAINED}
    out.update({t: make_decoder_checkpoint(root / t, t, steps=0) for t in UNTRAINED})
    out["llama-sampling"] = make_decoder_checkpoint(root / "llama-sampling", "llama", steps=0,
                                                   sampling=True)
    return out


def _convert(checkpoint: Path, out: Path, precision: str, **kw):
    from lmo_runtime.convert import convert
    from lmo_runtime.manifest import ConversionRequest

    request = ConversionRequest(checkpoint_uri=str(checkpoint), task="text-generation",
                                precision=precision, backend="python", **kw)
    return convert(request, out, progress=False)


def _textgen(assets: Path):
    """The textgen.py shipped in the artifact, as the Triton models import it."""
    spec = importlib.util.spec_from_file_location(f"textgen_{abs(hash(assets))}",
                                                  assets / "textgen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model_type", TRAINED)
def test_trained_decoders_convert_at_fp32_and_int8_and_generate_like_pytorch(
        decoder_checkpoints, model_type, tmp_path):
    ckpt = decoder_checkpoints[model_type]
    config = json.loads((ckpt / "config.json").read_text())
    family = family_for(config, "text-generation")
    loaded = family.load(ckpt, "text-generation")
    want = [greedy_text(loaded, p, 12) for p in PROMPTS]
    # int8's gate: these 64-wide models have small next-token margins, so int8 agrees on
    # ~98 % of positions (mean KL ~1e-3): the gate is set where such a model passes
    for precision, gate in (("fp32", 0.99), ("int8", 0.97)):
        manifest = _convert(ckpt, tmp_path / precision, precision, min_score=gate)
        assert manifest.accepted and manifest.score.passed, manifest.score
        assert manifest.precision == precision
        assets = tmp_path / precision / "model_repository/text_generation/1"
        textgen = _textgen(assets)
        generator = textgen.ort_generator(assets, threads=2)
        got = generator.generate(PROMPTS, [textgen.Params(max_tokens=12) for _ in PROMPTS])
        if precision == "fp32":  # left-padded batch, RoPE positions per row: same as torch
            assert got == want
        else:
            assert all(got), got
        streamed = "".join(generator.stream(PROMPTS[0], textgen.Params(max_tokens=12)))
        assert streamed == got[0]
    spec = json.loads((assets / "generation.json").read_text())
    assert spec["model_type"] == model_type
    assert spec["n_head"] == 2 and spec["head_dim"] == 16  # the cache has the 2 KV heads
    assert spec["add_bos"] is (model_type != "qwen2")  # Qwen2 tokenizers add no BOS
    assert spec["eos_token_ids"] == [loaded.tokenizer.eos_token_id]
    assert spec["chat_template"] == CHAT_TEMPLATE
    assert spec["defaults"] == {"max_tokens": 24}  # generation_config.json: greedy, 24 tokens


@pytest.mark.parametrize("model_type", UNTRAINED)
def test_mistral_and_phi3_export_with_their_cache_and_generate_like_pytorch(
        decoder_checkpoints, model_type, tmp_path):
    ckpt = decoder_checkpoints[model_type]
    family = family_for(json.loads((ckpt / "config.json").read_text()), "text-generation")
    loaded = family.load(ckpt, "text-generation")
    manifest = _convert(ckpt, tmp_path / "fp32", "fp32")
    assert manifest.accepted and manifest.score.details["max_abs_diff_fp32"] < 1e-3
    assets = tmp_path / "fp32/model_repository/text_generation/1"
    textgen = _textgen(assets)
    generator = textgen.ort_generator(assets, threads=2)
    got = generator.generate(PROMPTS, [textgen.Params(max_tokens=8) for _ in PROMPTS])
    assert got == [greedy_text(loaded, p, 8) for p in PROMPTS]


def test_the_generation_config_sets_the_sampling_defaults(decoder_checkpoints, tmp_path):
    """do_sample with temperature/top_k in generation_config.json: a request that sends no
    sampling parameters samples as the checkpoint says (seeded: reproducible)."""
    _convert(decoder_checkpoints["llama-sampling"], tmp_path / "a", "fp32", min_score=0.0)
    assets = tmp_path / "a/model_repository/text_generation/1"
    textgen = _textgen(assets)
    spec = textgen.load_spec(assets)
    defaults = textgen.default_params(spec, 32)
    assert (defaults.temperature, defaults.top_k, defaults.max_tokens) == (0.7, 20, 24)
    generator = textgen.ort_generator(assets, threads=2)
    seeded = textgen.Params(**{**defaults.__dict__, "seed": 3, "max_tokens": 8})
    first = generator.generate(["Paris is"], [seeded])
    assert first == generator.generate(["Paris is"], [seeded])


def test_a_prompt_that_holds_its_special_tokens_gets_no_bos(decoder_checkpoints, tmp_path):
    """The chat endpoint sends a checkpoint template's prompt with the request parameter
    add_special_tokens false: the Llama tokenizer's BOS is then not put first (the template
    writes it where it wants it), and the generation.json records the special tokens such a
    template may write."""
    _convert(decoder_checkpoints["llama-sampling"], tmp_path / "a", "fp32", min_score=0.0)
    assets = tmp_path / "a/model_repository/text_generation/1"
    textgen = _textgen(assets)
    spec = textgen.load_spec(assets)
    assert spec["special_tokens"] == {"bos_token": "<s>", "eos_token": "</s>",
                                      "pad_token": "<pad>"}
    generator = textgen.ort_generator(assets, threads=2)
    prompt = "<|user|>Paris?</s><|assistant|>"
    text_ids = generator.tokenizer.encode(prompt, add_special_tokens=False).ids
    (plain,) = textgen.with_request_parameters([textgen.Params()], None)
    assert generator._row(prompt, plain).prompt_ids == [spec["bos_token_id"], *text_ids]
    (chat,) = textgen.with_request_parameters([textgen.Params()],
                                              '{"add_special_tokens": false}')
    assert generator._row(prompt, chat).prompt_ids == text_ids
    with pytest.raises(ValueError, match="add_special_tokens must be true or false"):
        textgen.with_request_parameters([textgen.Params()], '{"add_special_tokens": "no"}')


def test_an_unsupported_decoder_is_refused_with_the_supported_types():
    from lmo_runtime.errors import ConversionError

    with pytest.raises(ConversionError, match=r"gemma.*supported model types: .*llama.*qwen2"):
        family_for({"model_type": "gemma", "architectures": ["GemmaForCausalLM"]},
                   "text-generation")
    with pytest.raises(ConversionError, match="can serve: text-generation"):
        family_for({"model_type": "qwen2"}, "fill-mask")
