"""Llama- and Qwen2-style decoders under `lmo up`: converted at int8 through the gate, served
by real Triton servers with the same generation models as GPT-2, streamed token by token."""

from __future__ import annotations

import pytest

from tests.fixtures.decoders import make_decoder_checkpoint
from tests.local.conftest import LmoUp, rel, write_lm
from tests.local.test_commands import lmo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decoders_up(tmp_path_factory, convert_cache):
    d = tmp_path_factory.mktemp("decoders-up")
    versions = []
    for name, model_type in (("llama", "llama"), ("qwen", "qwen2")):
        ckpt = make_decoder_checkpoint(d / model_type, model_type, steps=150)
        versions.append({"name": name, "checkpoint": {"uri": rel(ckpt, d)}, "traffic": 50,
                         "optimize": {"precision": "int8", "accuracyGate": {"minScore": 0.97}}})
    file = write_lm(d / "decoders.yaml", "chat", versions, task="text-generation",
                    routing={"abTest": {"header": "x-lmo-version"}})
    up = LmoUp(file, d / "work", convert_cache).start(timeout=900)
    yield up
    up.stop()


@pytest.mark.parametrize("version", ["llama", "qwen"])
def test_each_decoder_streams_the_same_text_as_one_answer(decoders_up, version, capsys):
    status = decoders_up.status()
    artifact = next(v for v in status["versions"] if v["name"] == version)["artifact"]
    assert artifact["precision"] == "int8"
    args = ["Paris is the capital", "--max-tokens", "10", "--version", version,
            "--url", decoders_up.url]
    rc, streamed, err = lmo(capsys, "generate", *args)
    assert rc == 0 and f"answered by {version}" in err
    rc, whole, _ = lmo(capsys, "generate", *args, "--no-stream")
    assert rc == 0
    assert streamed.strip() == whole.strip()
    assert len(whole.strip()) > len("Paris is the capital")
