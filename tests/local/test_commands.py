"""The CLI commands against a running `lmo up`: status, infer, generate, traffic."""

from __future__ import annotations

import json

import pytest

from lmo.cli import main
from tests.fixtures.checkpoints import make_gpt2_checkpoint
from tests.local.conftest import LmoUp, rel, write_lm

pytestmark = pytest.mark.slow


def lmo(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_status_infer_and_traffic_commands(ab_up, capsys):
    url = ["--url", ab_up.url]
    rc, out, _ = lmo(capsys, "status", *url)
    assert rc == 0
    assert "sentiment-ab" in out and "v1" in out and "v2" in out and "Ready" in out
    assert f"OpenAI base URL: {ab_up.url}/v1" in out
    rc, out, _ = lmo(capsys, "status", "-o", "json", *url)
    assert json.loads(out)["readyVersions"] == "2/2"

    rc, out, _ = lmo(capsys, "infer", "I love this, it is wonderful", "--version", "v2", *url)
    assert rc == 0
    assert out.startswith("[v2] ") and ("positive" in out or "negative" in out)

    try:
        rc, out, _ = lmo(capsys, "set-traffic", "v1=90", "v2=10", *url)
        assert rc == 0 and "v1=90,v2=10" in out
        assert ab_up.status()["trafficSummary"] == "v1=90,v2=10"
        rc, out, _ = lmo(capsys, "promote", "v2", *url)
        assert ab_up.status()["trafficSummary"] == "v1=0,v2=100"
        rc, out, _ = lmo(capsys, "rollback", *url)  # no rollout: back to the first version
        assert ab_up.status()["trafficSummary"] == "v1=100,v2=0"
        rc, _, err = lmo(capsys, "set-traffic", "v1=90", "v3=10", *url)
        assert rc == 2 and "unknown version(s) v3" in err
        rc, _, err = lmo(capsys, "set-traffic", "v1=80", *url)
        assert rc == 2 and "sum to 100" in err
        assert ab_up.status()["trafficSummary"] == "v1=100,v2=0"
    finally:
        lmo(capsys, "set-traffic", "v1=50", "v2=50", *url)


def test_commands_without_a_target_say_what_to_do(tmp_path, capsys):
    rc, _, err = lmo(capsys, "status", "--local", "--work-dir", str(tmp_path))
    assert rc == 2 and "no `lmo up` is running" in err
    rc, _, err = lmo(capsys, "infer", "hi", "--url", "http://127.0.0.1:9")
    assert rc == 2 and "cannot reach" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def gpt2_up(tmp_path_factory, convert_cache):
    d = tmp_path_factory.mktemp("gen")
    ckpt = make_gpt2_checkpoint(d / "gpt2", steps=40)
    file = write_lm(d / "gen.yaml", "chat",
                    [{"name": "v1", "checkpoint": {"uri": rel(ckpt, d)}}],
                    task="text-generation")
    up = LmoUp(file, d / "work", convert_cache).start(timeout=400)
    yield up
    up.stop()


def test_generate_streams_the_same_text_as_one_answer(gpt2_up, capsys):
    args = ["Once upon a time", "--max-tokens", "12", "--top-k", "1", "--seed", "0",
            "--url", gpt2_up.url]
    rc, streamed, err = lmo(capsys, "generate", *args)
    assert rc == 0 and "answered by v1" in err
    rc, whole, _ = lmo(capsys, "generate", *args, "--no-stream")
    assert rc == 0
    assert streamed.strip() == whole.strip()
    assert len(streamed.strip()) > len("Once upon a time")
