"""The user's own evaluation data (`optimize.evaluation`) and a Chinese BERT checkpoint.

The data replaces the built-in English sentences for the accuracy gate and the int8-static
calibration; the manifest, the conversion summary and the status artifact say which data it
was (digest, records). A BERT-Chinese-style checkpoint converts, is gated on Chinese text and
is served Chinese in and out by a real Triton server with the same tokens as transformers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lmo_runtime import evaluation, store
from lmo_runtime.cli import main as convert_main
from lmo_runtime.convert import convert
from lmo_runtime.errors import ConversionError
from lmo_runtime.manifest import OPTIONAL_KEY_FIELDS, REPOSITORY_DIR, ConversionRequest, Evaluation

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from examples.make_checkpoints import CHINESE_TEXTS, make_chinese_bert  # noqa: E402


@pytest.fixture(scope="module")
def chinese_bert(tmp_path_factory) -> Path:
    return make_chinese_bert(tmp_path_factory.mktemp("zh") / "tiny-bert-chinese")


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
                    encoding="utf-8")
    return path


@pytest.fixture
def zh_data(tmp_path) -> Path:
    return _jsonl(tmp_path / "eval.jsonl", [{"text": t, "id": i} for i, t in enumerate(CHINESE_TEXTS)])


# --------------------------------------------------------------------------- reading the data


def test_bad_evaluation_data_is_refused_naming_the_field(tmp_path, monkeypatch):
    def load(uri, **kw):
        return evaluation.load(Evaluation(uri=uri, **kw), {})

    with pytest.raises(ConversionError, match=r"optimize\.evaluation\.uri .*no such file"):
        load(f"file://{tmp_path}/missing.jsonl")
    data = _jsonl(tmp_path / "d.jsonl", [{"sentence": "a"}, {"sentence": "b"}])
    with pytest.raises(ConversionError,
                       match=r"optimize\.evaluation\.field 'text': line 1 .* no such field "
                             r"\(its fields: sentence\)"):
        load(f"file://{data}")
    assert evaluation.load(Evaluation(uri=f"file://{data}", field="sentence"), {}).texts == ("a", "b")
    empty = _jsonl(tmp_path / "e.jsonl", [{"text": "  "}])
    with pytest.raises(ConversionError, match=r"optimize\.evaluation\.uri .*no records"):
        load(f"file://{empty}")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ConversionError, match=r"line 2 is not JSON"):
        load(f"file://{tmp_path}/bad.jsonl")
    numbers = _jsonl(tmp_path / "n.jsonl", [{"text": 3}])
    with pytest.raises(ConversionError, match=r"field 'text': line 1 .* holds a int, not a text"):
        load(f"file://{numbers}")
    with pytest.raises(ConversionError, match=r"optimize\.evaluation\.sha256 mismatch"):
        load(f"file://{data}", field="sentence", sha256="0" * 64)
    with pytest.raises(ConversionError, match=r"unsupported scheme"):
        load("https://example.com/eval.jsonl")
    # configmap://NAME/KEY is the file KEY of the ConfigMap mounted at $LMO_CONFIGMAP_ROOT/NAME
    (tmp_path / "cms/zh-eval").mkdir(parents=True)
    shutil.copy(data, tmp_path / "cms/zh-eval/data.jsonl")
    got = evaluation.load(Evaluation(uri="configmap://zh-eval/data.jsonl", field="sentence"),
                          {"LMO_CONFIGMAP_ROOT": str(tmp_path / "cms")})
    assert got.texts == ("a", "b") and got.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    with pytest.raises(ConversionError, match=r"configmap://NAME/KEY"):
        load("configmap://only-a-name")
    with pytest.raises(ConversionError, match=r"mounts the ConfigMap at .*under `lmo up` use file://"):
        evaluation.load(Evaluation(uri="configmap://other/data.jsonl"),
                        {"LMO_CONFIGMAP_ROOT": str(tmp_path / "cms")})


def test_limit_and_the_split_keep_calibration_and_gate_apart(tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"text": f"text {i}"} for i in range(100)])
    got = evaluation.load(Evaluation(uri=f"file://{data}", limit=10), {})
    assert got.texts == tuple(f"text {i}" for i in range(10))
    heldout, calibration, record = evaluation.split(got, calibrate=True, calibration_samples=3)
    assert calibration == ["text 1", "text 3", "text 5"]
    assert not set(heldout) & set(calibration) and len(heldout) == 7
    assert (record.records, record.heldout, record.calibration) == (10, 7, 3)
    heldout, calibration, record = evaluation.split(got, calibrate=False, calibration_samples=3)
    assert len(heldout) == 10 and calibration == [] and record.source == f"file://{data}"
    one = evaluation.load(Evaluation(uri=f"file://{data}", limit=1), {})
    with pytest.raises(ConversionError, match=r"int8-static needs at least 2 records"):
        evaluation.split(one, calibrate=True, calibration_samples=3)
    # without evaluation data: the built-in sentences, recorded as such
    _, _, builtin = evaluation.split(None, calibrate=False, calibration_samples=64)
    assert builtin.source == "builtin" and builtin.heldout == 32


def test_requests_without_evaluation_keep_their_content_key():
    """Adding optimize.evaluation must not re-key (and so re-convert) existing artifacts."""
    request = ConversionRequest(checkpoint_uri="/ckpt", task="feature-extraction", precision="int8")
    data = request.model_dump(mode="json")
    for name in OPTIONAL_KEY_FIELDS:  # evaluation and the other fields added later
        assert data.pop(name) is None
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert request.key() == hashlib.sha256(blob.encode()).hexdigest()
    with_data = request.model_copy(update={"evaluation": Evaluation(uri="file:///e.jsonl")})
    assert with_data.key() != request.key()


# --------------------------------------------------------------------------- conversions


def test_chinese_fill_mask_is_gated_on_the_users_chinese_data(chinese_bert, zh_data, tmp_path):
    request = ConversionRequest(
        checkpoint_uri=str(chinese_bert), task="fill-mask", precision="int8-static",
        backend="python", calibration_samples=16, min_score=0.97,
        evaluation=Evaluation(uri=f"file://{zh_data}"),
    )
    manifest = convert(request, tmp_path / "out", progress=False)
    ev = manifest.evaluation
    assert ev is not None and ev.source == f"file://{zh_data}"
    assert ev.sha256 == hashlib.sha256(zh_data.read_bytes()).hexdigest()
    assert (ev.records, ev.calibration, ev.heldout) == (40, 16, 24)
    # scored on the masked characters of the 24 held-out Chinese texts (every 4th character)
    assert manifest.score.metric == "top1_agreement" and manifest.score.passed
    assert manifest.score.samples > 24
    # the golden inputs a rollout replays are the user's held-out (Chinese) texts
    assert all("[MASK]" in t for t in manifest.golden.inputs)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in manifest.golden.inputs[0])
    summary = manifest.summary("file:///a")["evaluation"]
    assert summary == {"source": f"file://{zh_data}", "sha256": ev.sha256, "records": 40,
                       "heldout": 24, "calibration": 16}


def test_cli_reports_the_data_and_a_changed_file_is_converted_again(
    chinese_bert, zh_data, tmp_path
):
    args = [str(chinese_bert), "--task", "feature-extraction", "--precision", "int8",
            "--backend", "python", "--quiet", "--cache-dir", str(tmp_path / "cache"),
            "--evaluation-uri", str(zh_data), "--evaluation-limit", "30"]
    assert convert_main([*args, "--out", str(tmp_path / "a"), "--manifest-out",
                         str(tmp_path / "a.json")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["metric"] == "cosine" and first["score"] >= 0.99
    assert first["evaluation"]["records"] == 30 and first["evaluation"]["heldout"] == 30
    assert first["evaluation"]["source"] == f"file://{zh_data}"
    # the same file again: answered from the cache (same digest)
    assert convert_main([*args, "--out", str(tmp_path / "b"), "--manifest-out",
                         str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["evaluation"] == first["evaluation"]
    # the file changed in place: the cache entry no longer matches, the data is scored again
    _jsonl(zh_data, [{"text": t} for t in CHINESE_TEXTS[:12]])
    assert convert_main([*args, "--out", str(tmp_path / "c"), "--manifest-out",
                         str(tmp_path / "c.json")]) == 0
    again = json.loads((tmp_path / "c.json").read_text())["evaluation"]
    assert again["records"] == 12 and again["sha256"] == hashlib.sha256(zh_data.read_bytes()).hexdigest()
    # a bad field fails before any work, exit 2, the message in the summary
    assert convert_main([*args, "--out", str(tmp_path / "d"), "--evaluation-field", "body",
                         "--manifest-out", str(tmp_path / "d.json")]) == 2
    reason = json.loads((tmp_path / "d.json").read_text())["reason"]
    assert "optimize.evaluation.field 'body'" in reason and not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def s3_env(moto_s3):
    store.s3_client(moto_s3).create_bucket(Bucket="data")
    return moto_s3


def test_evaluation_data_from_s3(chinese_bert, zh_data, tmp_path, s3_env):
    client = store.s3_client(s3_env)
    client.put_object(Bucket="data", Key="zh/eval.jsonl", Body=zh_data.read_bytes())
    request = ConversionRequest(
        checkpoint_uri=str(chinese_bert), task="feature-extraction", precision="int8",
        backend="python", evaluation=Evaluation(uri="s3://data/zh/eval.jsonl", limit=25),
    )
    manifest = convert(request, tmp_path / "out", progress=False, env=s3_env)
    assert manifest.evaluation.source == "s3://data/zh/eval.jsonl"
    assert manifest.evaluation.sha256 == hashlib.sha256(zh_data.read_bytes()).hexdigest()
    assert manifest.score.samples == 25 and manifest.score.passed
    with pytest.raises(ConversionError, match=r"optimize\.evaluation\.uri s3://data/zh/nope"
                                              r"\.jsonl: no such object"):
        convert(request.model_copy(update={"evaluation": Evaluation(uri="s3://data/zh/nope.jsonl")}),
                tmp_path / "out2", progress=False, env=s3_env)
    assert not (tmp_path / "out2").exists()


# --------------------------------------------------------------------------- serving Chinese


def test_served_tokenizer_matches_transformers_on_chinese(chinese_bert, tmp_path):
    """The repository's tokenizer.json (what the Triton model tokenizes with, through
    `tokenizers`) splits Chinese exactly as transformers' BERT tokenizer does."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    request = ConversionRequest(checkpoint_uri=str(chinese_bert), task="fill-mask",
                                backend="python")
    manifest = convert(request, tmp_path / "out", progress=False)
    served = Tokenizer.from_file(
        str(tmp_path / "out" / REPOSITORY_DIR / manifest.entry_model / "1" / "tokenizer.json"))
    reference = AutoTokenizer.from_pretrained(str(chinese_bert))
    texts = [*CHINESE_TEXTS[:10], "我喜欢Python和BERT模型。", "混合 English 与中文，数字123！"]
    for text in texts:
        assert served.encode(text).ids == reference(text)["input_ids"], text
    # every character of a Chinese sentence is a token of its own (tokenize_chinese_chars)
    tokens = served.encode(CHINESE_TEXTS[0]).tokens
    assert tokens[1:-1] == list(CHINESE_TEXTS[0]) and "[UNK]" not in tokens


@pytest.mark.slow
def test_triton_serves_chinese_in_and_out(chinese_bert, zh_data, tmp_path, triton_server_factory):
    import torch
    import tritonclient.http as httpclient
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    request = ConversionRequest(
        checkpoint_uri=str(chinese_bert), task="fill-mask", precision="int8", backend="python",
        max_batch_size=8, evaluation=Evaluation(uri=f"file://{zh_data}"),
    )
    convert(request, tmp_path / "out", progress=False)
    server = triton_server_factory(tmp_path / "out" / REPOSITORY_DIR)
    server.wait_ready(180)
    client = httpclient.InferenceServerClient(server.http_address)
    texts = ["今天天气很[MASK]，我们去公园散步吧。", "北京是中国的[MASK]都。", "我正在学习[MASK]文。"]
    inp = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in texts], dtype=np.object_))
    result = client.infer("fill_mask", [inp])
    # the best candidate of each text's one mask
    tokens = [t.decode("utf-8") for t in result.as_numpy("TOKEN")[:, 0, 0]]
    sequences = [s.decode("utf-8") for s in result.as_numpy("SEQUENCE")[:, 0, 0]]

    tok = AutoTokenizer.from_pretrained(str(chinese_bert))
    model = AutoModelForMaskedLM.from_pretrained(str(chinese_bert)).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    assert any("\u4e00" <= t <= "\u9fff" for t in tokens)  # Chinese characters come back
    for i, text in enumerate(texts):
        pos = int((enc["input_ids"][i] == tok.mask_token_id).nonzero()[0])
        want = tok.decode([int(logits[i, pos].argmax())]).strip()
        assert tokens[i] == want and want != "[UNK]"
        assert want in sequences[i] and "[MASK]" not in sequences[i]
        # the rest of the sentence comes back as Chinese, not as [UNK] or escapes
        assert text.split("[MASK]")[0].replace(" ", "")[-2:] in sequences[i].replace(" ", "")
