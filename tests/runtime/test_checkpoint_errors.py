"""Every bad input is refused with a message naming the problem and the fix; nothing is written."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from lmo_runtime import checkpoint, store
from lmo_runtime.convert import convert
from lmo_runtime.errors import ConversionError
from lmo_runtime.families import family_for
from lmo_runtime.manifest import ConversionRequest


@pytest.fixture
def ckpt(tiny_bert_classifier, tmp_path):
    """A private copy of the tiny classifier that a test may damage."""
    dest = tmp_path / "ckpt"
    shutil.copytree(tiny_bert_classifier, dest)
    return dest


def _convert(path, tmp_path, task="text-classification", **kw):
    request = ConversionRequest(checkpoint_uri=str(path), task=task, **kw)
    out = tmp_path / "out"
    try:
        convert(request, out, cache_dir=tmp_path / "cache", progress=False)
    finally:
        # a refusal publishes nothing, neither the artifact nor a cache entry
        if not (out / "manifest.json").exists():
            assert not out.exists()
            assert not list((tmp_path / "cache").glob("*"))


def test_truncated_weights(ckpt, tmp_path):
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConversionError, match=r"model.safetensors are corrupt or truncated.*upload"):
        _convert(ckpt, tmp_path)


def test_wrong_sha256_names_expected_and_actual(ckpt, tmp_path):
    good = store.checkpoint_digest(ckpt)
    with pytest.raises(ConversionError) as err:
        _convert(ckpt, tmp_path, checkpoint_sha256="0" * 64)
    msg = str(err.value)
    assert f"expected {'0' * 64}, got {good}" in msg and "--print-digest" in msg


def test_missing_tokenizer(ckpt, tmp_path):
    for name in ("tokenizer.json", "vocab.txt"):
        (ckpt / name).unlink()
    with pytest.raises(ConversionError, match=r"no tokenizer.*tokenizer.save_pretrained"):
        _convert(ckpt, tmp_path)


def test_missing_config(ckpt, tmp_path):
    (ckpt / "config.json").unlink()
    with pytest.raises(ConversionError, match=r"no config.json"):
        _convert(ckpt, tmp_path)


def test_unsupported_architecture(ckpt, tmp_path):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(model_type="gemma", architectures=["GemmaForCausalLM"])
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match=r"GemmaForCausalLM .*not supported; supported model types: bert"):
        _convert(ckpt, tmp_path, task="text-generation")


def test_task_the_model_cannot_do(ckpt, tmp_path, minilm_path):
    with pytest.raises(ConversionError, match=r"'text-generation' is not possible with a bert"):
        _convert(ckpt, tmp_path, task="text-generation")
    # a plain encoder has no masked-LM head: fill-mask is refused, not served with random weights
    with pytest.raises(ConversionError, match=r"needs a BertForMaskedLM checkpoint.*BertModel"):
        _convert(minilm_path, tmp_path, task="fill-mask")


def test_family_for_requires_model_type():
    with pytest.raises(ConversionError, match="no model_type"):
        family_for({"architectures": ["Foo"]}, "fill-mask")


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/lmo-pickle-executed",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_in_bin_weights_is_never_executed(ckpt, tmp_path):
    """pytorch_model.bin is read with weights_only=True: a pickle payload is refused."""
    import os

    marker = "/tmp/lmo-pickle-executed"
    if os.path.exists(marker):
        os.unlink(marker)
    (ckpt / "model.safetensors").unlink()
    with open(ckpt / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weights": _Boom()}, f)
    with pytest.raises(ConversionError, match="cannot be loaded"):
        _convert(ckpt, tmp_path)
    assert not os.path.exists(marker)


def test_bin_weights_load_when_they_are_plain_tensors(ckpt):
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    torch.save(tensors, ckpt / "pytorch_model.bin")
    config = checkpoint.inspect(ckpt)
    assert config["model_type"] == "bert"
    # what convert() runs: the family loads the weights (from_pretrained, weights_only)
    task = "text-classification"
    loaded = family_for(config, task).load(ckpt, task).model.model.state_dict()
    assert set(tensors) <= set(loaded)
    assert all(torch.equal(loaded[k], t) for k, t in tensors.items())


def test_untied_gpt2_without_its_head_is_refused(gpt2_checkpoint, tmp_path):
    """tie_word_embeddings false means lm_head.weight is its own tensor: without it the model
    would be served with a random head."""
    from lmo_runtime.families.gpt2 import FAMILY

    ckpt = tmp_path / "gpt2"
    shutil.copytree(gpt2_checkpoint, ckpt)  # tied: the weights hold no lm_head.weight
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "tie_word_embeddings": False}))
    with pytest.raises(ConversionError, match=r"no lm_head.weight but config.json sets "
                                              r"tie_word_embeddings: false"):
        FAMILY.load(ckpt, "text-generation")
    import torch
    from transformers import GPT2LMHeadModel

    # tied, the same weights load with the embedding as head; untied with its own head too
    tied = FAMILY.load(gpt2_checkpoint, "text-generation").model
    assert tied.lm_head.weight.data_ptr() == tied.transformer.wte.weight.data_ptr()

    model = GPT2LMHeadModel.from_pretrained(gpt2_checkpoint, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    untied = GPT2LMHeadModel(model.config)
    untied.save_pretrained(ckpt)
    loaded = FAMILY.load(ckpt, "text-generation").model
    assert torch.equal(loaded.lm_head.weight, untied.lm_head.weight)
    assert not torch.equal(loaded.lm_head.weight, loaded.transformer.wte.weight)


@pytest.mark.parametrize("num_labels,problem,named", [
    (1, None, "num_labels 1"),
    (1, "regression", "num_labels 1 and problem_type 'regression'"),
    (2, "multi_label_classification",
     "num_labels 2 and problem_type 'multi_label_classification'"),
])
def test_regression_and_multi_label_heads_are_refused(ckpt, tmp_path, num_labels, problem, named):
    """Softmax over one logit is always 1.0, and over independent sigmoids means nothing:
    such heads are refused for text-classification instead of being scored meaninglessly."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(ckpt)
    config.num_labels, config.problem_type = num_labels, problem  # id2label follows num_labels
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(ckpt)  # weights match config.json
    with pytest.raises(ConversionError, match=rf"single-label classifier, but config.json has "
                                              rf"{named}: regression and multi-label"):
        _convert(ckpt, tmp_path)


@pytest.mark.parametrize("change,named", [
    ({"id2label": "oops"}, r'config.json id2label must map label ids to names .*got "oops"'),
    ({"id2label": {"neg": "NEGATIVE"}}, r"config.json id2label must map label ids to names"),
    ({"label2id": ["NEGATIVE", "POSITIVE"]}, r"config.json label2id must map label names"),
])
def test_malformed_label_maps_name_config_json(ckpt, tmp_path, change, named):
    """A bad id2label was reported as 'checkpoint tokenizer cannot be loaded'."""
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ConversionError, match=named):
        _convert(ckpt, tmp_path)
