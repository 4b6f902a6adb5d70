"""Check a Hugging Face checkpoint directory before anything is loaded.

Layout: `config.json`, weights as `*.safetensors` (preferred) or `pytorch_model.bin`, and a
tokenizer (`tokenizer.json`, or the slow files `vocab.txt` / `vocab.json` + `merges.txt`).
Weights are never unpickled: safetensors headers are read directly, and a `.bin` file is only
ever opened with `torch.load(weights_only=True)`. Every problem is a ConversionError that
says what is wrong and how to fix it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmo_runtime.errors import ConversionError

TOKENIZER_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))
FIX_SAVE = "re-save the model with model.save_pretrained(dir) and tokenizer.save_pretrained(dir)"


def verify_digest(got: str, expected: str | None) -> None:
    """Refuse a checkpoint whose digest differs from `checkpoint.sha256`."""
    if expected and expected.lower() != got:
        raise ConversionError(
            f"checkpoint sha256 mismatch: expected {expected.lower()}, got {got}. The files "
            "at checkpoint.uri changed or the digest is wrong; recompute it with "
            "`lmo convert CHECKPOINT --print-digest` and update spec.versions[].checkpoint.sha256"
        )


def weight_files(ckpt_dir: Path) -> list[Path]:
    safetensors = sorted(Path(ckpt_dir).glob("*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(Path(ckpt_dir).glob("pytorch_model*.bin"))


def _check_safetensors(path: Path) -> None:
    """Open the header and touch every tensor's byte range (catches truncation)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                f.get_slice(name).get_shape()
        with open(path, "rb") as raw:
            header_len = int.from_bytes(raw.read(8), "little")
            meta = json.loads(raw.read(header_len))
        end = max((v["data_offsets"][1] for k, v in meta.items() if k != "__metadata__"), default=0)
        if path.stat().st_size < 8 + header_len + end:
            raise ValueError("file shorter than its header says")
    except Exception as err:  # safetensors raises several types for bad files
        raise ConversionError(
            f"checkpoint weights {path.name} are corrupt or truncated ({err}); "
            f"upload the file again or {FIX_SAVE}"
        ) from None


def inspect(ckpt_dir: Path) -> dict[str, Any]:
    """Validate the layout and return config.json; ConversionError on any problem."""
    ckpt_dir = Path(ckpt_dir)
    cfg_path = ckpt_dir / "config.json"
    if not cfg_path.is_file():
        present = ", ".join(sorted(p.name for p in ckpt_dir.iterdir())[:12]) or "nothing"
        raise ConversionError(
            f"checkpoint has no config.json (found: {present}); checkpoint.uri must point at "
            f"a Hugging Face model directory: {FIX_SAVE}"
        )
    try:
        config = json.loads(cfg_path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:
        raise ConversionError(f"checkpoint config.json is not valid JSON ({err}); {FIX_SAVE}") from None
    _check_labels(config)
    weights = weight_files(ckpt_dir)
    if not weights:
        raise ConversionError(
            "checkpoint has no weights: expected *.safetensors or pytorch_model.bin next to "
            f"config.json; {FIX_SAVE}"
        )
    for w in weights:
        if w.suffix == ".safetensors":
            _check_safetensors(w)
    if not any(all((ckpt_dir / f).is_file() for f in names) for names in TOKENIZER_SETS):
        raise ConversionError(
            "checkpoint has no tokenizer: expected tokenizer.json (or vocab.txt, or "
            "vocab.json + merges.txt) next to config.json; save it with "
            "tokenizer.save_pretrained(dir) into the checkpoint directory"
        )
    return config


def _check_labels(config: dict[str, Any]) -> None:
    """id2label and label2id, when present, must be objects keyed by label id / name:
    transformers reads config.json while loading the tokenizer too, and a malformed map
    fails there with an AttributeError that says nothing about config.json."""
    id2label, label2id = config.get("id2label"), config.get("label2id")
    example = '{"0": "NEGATIVE", "1": "POSITIVE"}'
    if id2label is not None and not (
        isinstance(id2label, dict) and all(str(k).lstrip("-").isdigit() for k in id2label)
    ):
        raise ConversionError(
            f"checkpoint config.json id2label must map label ids to names (e.g. {example}), "
            f"got {json.dumps(id2label)[:80]}; fix config.json, or set model.config.id2label "
            "and save_pretrained(dir) again"
        )
    if label2id is not None and not isinstance(label2id, dict):
        raise ConversionError(
            "checkpoint config.json label2id must map label names to ids (e.g. "
            f'{{"NEGATIVE": 0, "POSITIVE": 1}}), got {json.dumps(label2id)[:80]}; fix '
            "config.json, or set model.config.label2id and save_pretrained(dir) again"
        )
