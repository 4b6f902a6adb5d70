"""Encoder families (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA, DeBERTa-v2/v3,
ModernBERT): feature-extraction, fill-mask, text-classification, through one path.

The checkpoint is loaded with transformers' Auto classes (AutoModel, AutoModelForMaskedLM,
AutoModelForSequenceClassification) and tokenized at serving time with its own
`tokenizer.json` (WordPiece, byte-level BPE or Unigram: whatever `tokenizers` reads). What
differs between the architectures is data, found on the loaded model: the inputs its forward
takes (DistilBERT and ModernBERT have no token_type_ids, DeBERTa only with type_vocab_size),
how many positions it has (RoBERTa's start after its padding index), where its task head's
weights live (everything outside `base_model_prefix`).

What the ONNX graph computes (the PyTorch wrapper computes exactly the same, so the export
can be compared with PyTorch and the accuracy gate compares like with like):

* feature-extraction: `embedding` [batch, hidden] — the checkpoint's pooling inside the
  graph: sentence-transformers' `modules.json` + `1_Pooling/config.json` (mean, CLS or max
  tokens; L2 normalised when a Normalize module follows), else mean over the attention mask,
  L2 normalised (the sentence-transformers recipe most embedders use).
* fill-mask: `token_id` [batch, seq, K] int64 and `token_score` [batch, seq, K] — the K most
  probable tokens and their probabilities at every position (K = min(FILL_MASK_TOP_K, vocab));
  post-processing picks the mask positions and the request's top_k. Only these small tensors
  leave the graph instead of [batch, seq, vocab] logits.
* text-classification: `probabilities` [batch, labels] (softmax); labels from id2label.

Optimisation: onnxruntime's transformer fusions (Attention, EmbedLayerNormalization,
BiasGelu) are applied when their output stays equal to the plain export (max abs diff <=
1e-4); residual Adds and LayerNormalization stay apart (onnxruntime's SkipLayerNormalization
kernel is slower on CPU, `families.int8.CPU_SESSION_CONFIG`). Then:
int8 = dynamic int8 on the fused graph: per-channel int8 weights of every MatMul, the fused
Attention (-> QAttention) and the embedding table (-> QEmbedLayerNormalization), GELU as
its tanh approximation (FastGelu); int8-static = the same graph with every activation scale
calibrated (`families.int8.calibrate_static`); fp16 = float16 weights with fp32
inputs/outputs. Graphs onnxruntime cannot fuse (DeBERTa, ModernBERT) are quantized as
exported, every op type the dynamic quantizer knows. Both int8 flavours use reduce_range on
x86 CPUs without VNNI/AMX (`families.int8`).

Serving: the entry model (ENTRY_MODEL[task]) is one Python-backend model
(`lmo_runtime/triton_models/bert/model.py`) that tokenizes with `tokenizers`, runs the
ONNX model for all requests of a batch at once (right-padded) and post-processes. With
request.backend == "python" it runs onnxruntime itself (what the CPU-only tritonserver
from nvidia-pytriton can serve); with "onnxruntime" it calls a sibling model
`<entry>_onnx` (Triton's ONNX Runtime backend, GPU-capable) through BLS.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmo_runtime.errors import ConversionError
from lmo_runtime.families import Exported, Loaded, calibration_texts, load_tokenizer, quiet_root_logger
from lmo_runtime.families.int8 import (
    CPU_SESSION_CONFIG,
    calibrate_static,
    int8_kernel,
    quantize_dynamic_int8,
)
from lmo_runtime.manifest import ENTRY_MODEL, ConversionRequest, Golden, Score
from lmo_runtime.payloads import ship as ship_observability

OPSET = 17
# every input an encoder may take, in the graph's order; a model gets the ones its forward has
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = {
    "feature-extraction": ("embedding",),
    "fill-mask": ("token_id", "token_score"),
    "text-classification": ("probabilities",),
}
# the most candidates per mask an artifact can return (the request parameter top_k)
FILL_MASK_TOP_K = 50
FUSION_TOLERANCE = 1e-4
EXPORT_TOLERANCE = 1e-3
MAX_LENGTH = 256  # tokens per text at serving time (truncated beyond)
SCORE_BATCH = 32  # texts per PyTorch / ONNX Runtime call while scoring
MODEL_FILE = "model.onnx"
META_FILE = "lmo_model.json"
TOKENIZER_FILE = "tokenizer.json"
# model types whose attention onnxruntime's "bert" fusions recognise (others keep the
# plain export: trying costs time and the tolerance check would refuse a wrong fusion anyway)
FUSABLE = frozenset({"bert", "roberta", "xlm-roberta", "electra", "distilbert"})
# what int8 quantizes in a fused graph: the embedding table too (4x smaller artifact at the
# same speed; measured in bench/RESULTS.md "Runtime: MiniLM")
INT8_FUSED_OPS = ("MatMul", "Attention", "EmbedLayerNormalization")
# sentence-transformers pooling modes lmo reproduces inside the graph
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max"}


def _torch():
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return torch


def pooling(ckpt_dir: Path) -> dict[str, Any]:
    """How feature-extraction pools: {"mode": mean | cls | max, "normalize": bool}.

    From sentence-transformers' `modules.json` when the checkpoint has one (the Pooling
    module's config, and whether a Normalize module follows); otherwise mean pooling, L2
    normalised. Modules lmo cannot reproduce in the graph (Dense projections, weighted or
    last-token pooling) are refused by name rather than served as something else.
    """
    modules_file = Path(ckpt_dir) / "modules.json"
    if not modules_file.is_file():
        return {"mode": "mean", "normalize": True, "source": "default"}
    try:
        modules = json.loads(modules_file.read_text())
        kinds = [(str(m.get("type", "")).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules]
    except (ValueError, AttributeError, TypeError) as err:
        raise ConversionError(
            f"checkpoint modules.json is not a sentence-transformers module list ({err}); "
            "fix it or remove it (then lmo mean-pools and normalises)"
        ) from None
    known = {"Transformer", "Pooling", "Normalize"}
    other = [k for k, _ in kinds if k not in known]
    if other:
        raise ConversionError(
            f"checkpoint modules.json has sentence-transformers module(s) {', '.join(other)} "
            "that lmo cannot put in the served graph (it supports Transformer, Pooling and "
            "Normalize); serve the checkpoint without them or choose another model"
        )
    out = {"mode": "mean", "normalize": "Normalize" in [k for k, _ in kinds],
           "source": "modules.json"}
    for kind, path in kinds:
        if kind != "Pooling":
            continue
        cfg_file = Path(ckpt_dir) / path / "config.json"
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, ValueError) as err:
            raise ConversionError(
                f"checkpoint modules.json names a Pooling module at {path!r} whose "
                f"config.json cannot be read ({err}); copy the sentence-transformers model "
                "folder whole"
            ) from None
        modes = [POOLING_MODES[k] for k in POOLING_MODES if cfg.get(k)]
        unsupported = [k for k, v in cfg.items()
                       if k.startswith("pooling_mode_") and v and k not in POOLING_MODES]
        if unsupported or len(modes) != 1:
            raise ConversionError(
                f"checkpoint {path}/config.json asks for pooling "
                f"{', '.join(unsupported) or ', '.join(modes) or 'none'}; lmo serves exactly one "
                "of pooling_mode_mean_tokens, pooling_mode_cls_token, pooling_mode_max_tokens"
            )
        out["mode"] = modes[0]
    return out


def _wrapper(model: Any, task: str, inputs: tuple[str, ...], pool: dict[str, Any] | None = None):
    """A torch module whose forward takes `inputs` (in order) and returns what the ONNX graph
    returns for `task`."""
    torch = _torch()
    F = torch.nn.functional
    pool = pool or {"mode": "mean", "normalize": True}
    k = FILL_MASK_TOP_K

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            feed = dict(zip(inputs, args), **kwargs)
            feed = {n: feed[n] for n in inputs}
            out = self.model(**feed)
            if task == "feature-extraction":
                hidden = out.last_hidden_state
                m = feed["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                if pool["mode"] == "cls":
                    pooled = hidden[:, 0]
                elif pool["mode"] == "max":
                    pooled = (hidden - (1.0 - m) * 1e9).max(dim=1).values
                else:
                    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return F.normalize(pooled, p=2.0, dim=1) if pool["normalize"] else pooled
            if task == "fill-mask":
                probs = F.softmax(out.logits, dim=-1)
                score, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
                return idx, score
            return F.softmax(out.logits, dim=-1)

    return Wrapped().eval()


def _max_positions(config: Any, tokenizer: Any) -> int:
    """Tokens a text may have: MAX_LENGTH, the model's positions (RoBERTa-style embeddings
    count from padding_idx + 1), and the tokenizer's own model_max_length when it is set."""
    limit = int(getattr(config, "max_position_embeddings", MAX_LENGTH) or MAX_LENGTH)
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    own = getattr(tokenizer, "model_max_length", None)
    if isinstance(own, int) and 0 < own < 1_000_000:
        limit = min(limit, own)
    return max(8, min(MAX_LENGTH, limit))


def _model_inputs(model: Any, config: Any) -> tuple[str, ...]:
    """The INPUT_NAMES this model's forward uses: token_type_ids only where it has them and
    a token-type embedding to feed (DeBERTa's type_vocab_size defaults to 0)."""
    params = inspect.signature(model.forward).parameters
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and int(getattr(config, "type_vocab_size", 0) or 0) > 0:
        names.append("token_type_ids")
    return tuple(names)


class EncoderFamily:
    """Family implementation for encoder checkpoints (every model type in ENCODER_TYPES)."""

    name = "encoder"
    tasks = ("feature-extraction", "fill-mask", "text-classification")
    architectures = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification",
                     "RobertaModel", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                     "XLMRobertaModel", "XLMRobertaForMaskedLM",
                     "XLMRobertaForSequenceClassification", "DistilBertModel",
                     "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                     "ElectraModel", "ElectraForMaskedLM", "ElectraForSequenceClassification",
                     "DebertaV2Model", "DebertaV2ForMaskedLM",
                     "DebertaV2ForSequenceClassification", "ModernBertModel",
                     "ModernBertForMaskedLM", "ModernBertForSequenceClassification")
    precisions = ("fp32", "fp16", "int8", "int8-static")

    # ------------------------------------------------------------------ load

    def load(self, ckpt_dir: Path, task: str) -> Loaded:
        from lmo_runtime import checkpoint

        config_dict = checkpoint.inspect(ckpt_dir)
        if task not in self.tasks:
            raise ConversionError(
                f"task {task!r} is not possible with an encoder; it can serve "
                f"{', '.join(self.tasks)}"
            )
        torch = _torch()
        from transformers import (
            AutoConfig,
            AutoModel,
            AutoModelForMaskedLM,
            AutoModelForSequenceClassification,
        )
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        # config first: the tokenizer reads config.json too, and its failure would be
        # reported as a tokenizer problem
        try:
            config = AutoConfig.from_pretrained(str(ckpt_dir))
        except Exception as err:
            raise ConversionError(
                f"checkpoint config.json cannot be loaded ({type(err).__name__}: "
                f"{str(err)[:200]}); fix the field it names, or re-save the model with "
                "model.save_pretrained(dir)"
            ) from None
        if task == "text-classification":
            _check_single_label(config)
        pool = pooling(ckpt_dir) if task == "feature-extraction" else None
        tokenizer = load_tokenizer(ckpt_dir)
        if task == "fill-mask" and tokenizer.mask_token_id is None:
            raise ConversionError(
                "task fill-mask needs a tokenizer with a mask token (e.g. [MASK] or <mask>); "
                "set tokenizer.mask_token and save_pretrained(dir) again")
        cls = {
            "feature-extraction": AutoModel,
            "fill-mask": AutoModelForMaskedLM,
            "text-classification": AutoModelForSequenceClassification,
        }[task]
        archs = config_dict.get("architectures") or [f"{config.model_type} model"]
        extra: dict[str, Any] = {}
        if task == "feature-extraction" and config.model_type in ("bert", "roberta", "xlm-roberta"):
            # the pooler (absent from *ForMaskedLM checkpoints) is not part of the graph
            extra["add_pooling_layer"] = False
        try:
            # float32 whatever config.json's dtype says: an fp16/bf16 checkpoint would export
            # a half-precision graph (labelled fp32) or fail in the reference run; fp16 is a
            # precision the converter produces from the fp32 export.
            model, info = cls.from_pretrained(
                str(ckpt_dir), attn_implementation="eager", output_loading_info=True,
                dtype=torch.float32, **extra,
            )
        except Exception as err:
            raise ConversionError(
                f"checkpoint weights cannot be loaded ({type(err).__name__}: {str(err)[:300]}); "
                "check that the files are complete and match config.json"
            ) from None
        missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
        prefix = getattr(model, "base_model_prefix", "")
        has_head = task != "feature-extraction" and model is not getattr(model, "base_model", model)
        head = [k for k in missing if has_head and not k.startswith(f"{prefix}.")]
        if head:
            raise ConversionError(
                f"task {task!r} needs a {model.__class__.__name__} checkpoint, but "
                f"{', '.join(archs)} has no "
                f"weights for its head (e.g. {head[0]}); use a checkpoint trained for {task} "
                "or choose task feature-extraction"
            )
        body_missing = [k for k in missing if k not in head]
        if body_missing:
            raise ConversionError(
                f"checkpoint weights are incomplete: {len(body_missing)} tensors missing "
                f"(e.g. {body_missing[0]}); the weights do not match config.json"
            )
        model.eval()
        inputs = _model_inputs(model, config)
        return Loaded(
            task=task,
            architecture=model.__class__.__name__,
            config=config_dict,
            ckpt_dir=Path(ckpt_dir),
            model=_wrapper(model, task, inputs, pool),
            tokenizer=tokenizer,
            extra={
                "model_type": config.model_type,
                "inputs": inputs,
                "pooling": pool,
                "num_heads": int(config.num_attention_heads),
                "hidden_size": int(config.hidden_size),
                "num_layers": int(config.num_hidden_layers),
                "max_length": _max_positions(config, tokenizer),
                "labels": _labels(config) if task == "text-classification" else None,
                # candidates per position the fill-mask graph keeps (the most top_k can ask)
                "top_k": min(FILL_MASK_TOP_K, int(getattr(config, "vocab_size", FILL_MASK_TOP_K))),
            },
        )

    # ------------------------------------------------------------------ export

    def _encode(self, loaded: Loaded, texts: list[str], framework: str = "np") -> dict[str, Any]:
        enc = loaded.tokenizer(
            texts, padding=True, truncation=True, max_length=loaded.extra["max_length"],
            return_tensors=framework,
        )
        if "token_type_ids" not in enc:
            enc["token_type_ids"] = enc["input_ids"] * 0
        return {k: enc[k] for k in loaded.extra["inputs"]}

    def torch_outputs(self, loaded: Loaded, texts: list[str]) -> list[np.ndarray]:
        torch = _torch()
        enc = self._encode(loaded, texts, "pt")
        with torch.inference_mode():
            out = loaded.model(**enc)
        out = out if isinstance(out, tuple) else (out,)
        return [o.numpy() for o in out]

    def export(self, loaded: Loaded, work_dir: Path) -> Exported:
        import onnx

        torch = _torch()
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        raw = work_dir / "model.raw.onnx"
        texts = calibration_texts(4)
        names = loaded.extra["inputs"]
        enc = self._encode(loaded, texts, "pt")
        outputs = OUTPUTS[loaded.task]
        axes = {k: {0: "batch", 1: "sequence"} for k in names}
        for o in outputs:
            axes[o] = {0: "batch", 1: "sequence"} if loaded.task == "fill-mask" else {0: "batch"}
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                loaded.model,
                tuple(enc[k] for k in names),
                str(raw),
                input_names=list(names),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        try:
            onnx.checker.check_model(str(raw), full_check=True)
        except onnx.checker.ValidationError as err:
            raise ConversionError(f"exported ONNX graph is invalid: {err}") from None
        # Compare on texts of another batch size and length than the export used.
        check = calibration_texts(7)[-3:]
        ref = self.torch_outputs(loaded, check)
        got = run_onnx(raw, self._encode(loaded, check))
        diff = _max_diff(loaded.task, ref, got)
        if diff > EXPORT_TOLERANCE:
            raise ConversionError(
                f"ONNX export differs from PyTorch by {diff:.2e} (> {EXPORT_TOLERANCE}); "
                "the architecture has an operation the exporter does not reproduce"
            )
        loaded.extra["raw_onnx"] = str(raw)
        best, details = raw, {"fused": 0.0}
        if loaded.extra["model_type"] not in FUSABLE:
            return Exported(path=best, max_abs_diff=diff, opset=OPSET, details=details)
        fused = work_dir / "model.fused.onnx"
        try:
            from onnxruntime.transformers.fusion_options import FusionOptions
            from onnxruntime.transformers.optimizer import optimize_model

            options = FusionOptions("bert")
            options.enable_skip_layer_norm = False  # Add + LayerNormalization run faster
            opt = optimize_model(
                str(raw), model_type="bert", num_heads=loaded.extra["num_heads"],
                hidden_size=loaded.extra["hidden_size"], opt_level=0,
                optimization_options=options,
            )
            stats = opt.get_fused_operator_statistics()
            opt.save_model_to_file(str(fused))
            fused_diff = _max_diff(loaded.task, got, run_onnx(fused, self._encode(loaded, check)))
            details["fusion_max_abs_diff"] = fused_diff
            details["fused_attention"] = float(stats.get("Attention", 0))
            if fused_diff <= FUSION_TOLERANCE:
                best, details["fused"] = fused, 1.0
        except Exception as err:  # fusion is an optimisation: keep the plain export
            details["fusion_failed"] = 1.0
            loaded.extra["fusion_error"] = f"{type(err).__name__}: {err}"
        return Exported(path=best, max_abs_diff=diff, opset=OPSET, details=details)

    # ------------------------------------------------------------------ optimize

    def optimize(
        self, exported: Exported, precision: str, loaded: Loaded, work_dir: Path,
        calibration: list[str] | int,
    ) -> Path:
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        src = exported.path
        out = work_dir / MODEL_FILE
        if precision == "fp32":
            shutil.copy(src, out)
        elif precision == "int8":
            self._quantize_dynamic(exported, out, loaded, precision)
        elif precision == "int8-static":
            texts = calibration if isinstance(calibration, list) else calibration_texts(calibration)
            self._quantize_static(exported, out, loaded, work_dir, texts)
        elif precision == "fp16":
            import onnx
            from onnxruntime.transformers.onnx_model import OnnxModel

            model = OnnxModel(onnx.load(str(src)))
            model.convert_float_to_float16(keep_io_types=True)
            model.save_model_to_file(str(out))
        else:
            raise ConversionError(
                f"precision {precision!r} is not supported; use fp32, fp16, int8 or int8-static"
            )
        return out

    def _quantize_dynamic(self, exported: Exported, out: Path, loaded: Loaded,
                          precision: str) -> None:
        """Dynamic int8 (see the module docstring). On MiniLM (bench/runtime.py, AMD EPYC
        with avx512_vnni): quantizing the fused graph with Add + LayerNormalization beats
        quantizing the plain export and letting onnxruntime fuse at load (its
        SkipLayerNormalization) by ~1.1x at batch 32 and batch 1; FastGelu for the erf GELU
        is 1.05-1.15x more at no measurable cosine cost; per-tensor weights lose 0.03 cosine.
        (The plain export's graph with Add + LayerNormalization kept apart was faster at batch
        32 and slower at batch 1: bench/RESULTS.md "Runtime: MiniLM".)"""
        kernel = int8_kernel()
        loaded.extra.setdefault("optimize_details", {})[precision] = kernel.details()
        if not exported.details.get("fused"):
            quantize_dynamic_int8(exported.path, out, kernel, op_types=None)
            return
        import onnx

        model = onnx.load(str(exported.path))
        for node in model.graph.node:  # same inputs (x[, bias]): the tanh approximation
            if node.op_type in ("BiasGelu", "Gelu") and node.domain == "com.microsoft":
                node.op_type = "FastGelu"
        approx = out.with_suffix(".fastgelu.onnx")
        onnx.save(model, str(approx))
        quantize_dynamic_int8(approx, out, kernel, op_types=INT8_FUSED_OPS)
        approx.unlink()

    def _quantize_static(
        self, exported: Exported, out: Path, loaded: Loaded, work_dir: Path, texts: list[str]
    ) -> None:
        """Calibrated int8: int8's graph with fixed activation scales (min/max of the real
        tokens of `texts`, 8 per batch), `families.int8.calibrate_static`. Measured on
        MiniLM (64 calibration texts): cosine 0.9936 mean / 0.9903 min against dynamic's
        0.9937 / 0.9894, at the same speed or better. The QDQ recipe it replaces
        (quantize_static on the plain export, FFN down-projections and the last layer kept
        float to hold 0.99) ran at 0.58x of dynamic int8."""
        dynamic = work_dir / "model.dynamic.onnx"
        self._quantize_dynamic(exported, dynamic, loaded, "int8-static")
        batches = [self._encode(loaded, texts[i : i + 8]) for i in range(0, len(texts), 8)]
        details = calibrate_static(dynamic, out, batches)
        loaded.extra["optimize_details"]["int8-static"].update(details)

    # ------------------------------------------------------------------ score

    def _onnx_answers(self, loaded: Loaded, onnx_path: Path, texts: list[str]) -> list[np.ndarray]:
        return run_onnx(onnx_path, self._encode(loaded, texts))

    def score(self, loaded: Loaded, onnx_path: Path, texts: list[str], threshold: float) -> Score:
        """Fidelity to PyTorch on `texts`, SCORE_BATCH texts at a time (the user's evaluation
        data may hold hundreds of long texts)."""
        task = loaded.task
        if task == "fill-mask":
            texts = [masked(loaded.tokenizer, t, every=4) for t in texts]
        cosines: list[np.ndarray] = []
        agree: list[np.ndarray] = []
        max_abs = max_prob = 0.0
        for i in range(0, len(texts), SCORE_BATCH):
            chunk = texts[i : i + SCORE_BATCH]
            ref = self.torch_outputs(loaded, chunk)
            got = self._onnx_answers(loaded, onnx_path, chunk)
            max_abs = max(max_abs, _max_diff(task, ref, got))
            if task == "feature-extraction":
                a, b = ref[0], got[0].astype(np.float32)
                cosines.append((a * b).sum(1) / (
                    np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12))
            elif task == "fill-mask":
                ids = self._encode(loaded, chunk)["input_ids"]
                where = ids == loaded.tokenizer.mask_token_id
                agree.append(ref[0][..., 0][where] == got[0][..., 0][where])
            else:
                agree.append(ref[0].argmax(-1) == got[0].argmax(-1))
                max_prob = max(max_prob, float(np.abs(ref[0] - got[0]).max()))
        details: dict[str, float] = {"max_abs_diff": max_abs}
        if task == "feature-extraction":
            cos = np.concatenate(cosines)
            value, metric, n = float(cos.mean()), "cosine", len(texts)
            details["cosine_min"] = float(cos.min())
        else:
            hits = np.concatenate(agree)
            if hits.size == 0:
                raise ConversionError(
                    "the accuracy gate found no [MASK] position to score in the evaluation "
                    "texts (each text needs at least one word); check optimize.evaluation"
                )
            value, metric = float(hits.mean()), "top1_agreement"
            n = int(hits.size) if task == "fill-mask" else len(texts)
            if task == "text-classification":
                details["max_prob_diff"] = max_prob
        return Score(
            metric=metric, value=value, threshold=threshold, passed=value >= threshold,
            samples=n, details=details,
        )

    # ------------------------------------------------------------------ golden

    def golden(self, loaded: Loaded, texts: list[str]) -> Golden:
        task = loaded.task
        if task == "feature-extraction":
            emb = self.torch_outputs(loaded, texts)[0]
            return Golden(inputs=texts, outputs=[[round(float(x), 6) for x in e] for e in emb],
                          kind="embedding")
        if task == "fill-mask":
            inputs = [masked(loaded.tokenizer, t, single=True) for t in texts]
            ids, _ = self.torch_outputs(loaded, inputs)
            enc = self._encode(loaded, inputs)["input_ids"]
            outs = []
            for row, pred in zip(enc, ids):
                pos = int(np.argmax(row == loaded.tokenizer.mask_token_id))
                outs.append(loaded.tokenizer.decode([int(pred[pos][0])]).strip())
            return Golden(inputs=inputs, outputs=outs, kind="token")
        probs = self.torch_outputs(loaded, texts)[0]
        labels = loaded.extra["labels"]
        return Golden(inputs=texts, outputs=[labels[int(i)] for i in probs.argmax(-1)], kind="label")

    # ------------------------------------------------------------------ repository

    def write_repository(
        self, loaded: Loaded, onnx_path: Path, repo_dir: Path, request: ConversionRequest
    ) -> str:
        from lmo_runtime.triton.config import DynamicBatching, ModelConfig, Tensor, write_config

        task = loaded.task
        entry = ENTRY_MODEL[task]
        repo_dir = Path(repo_dir)
        version_dir = repo_dir / entry / "1"
        version_dir.mkdir(parents=True, exist_ok=True)
        bls = request.backend == "onnxruntime"
        onnx_model = f"{entry}_onnx"
        batch = max(0, request.max_batch_size)
        batching = (
            DynamicBatching(max_queue_delay_microseconds=request.max_queue_delay_microseconds,
                            max_queue_size=request.queue_max_size,
                            queue_timeout_microseconds=request.queue_timeout_microseconds)
            if batch > 0 else None
        )
        meta = {
            "task": task,
            "runner": "bls" if bls else "ort",
            "onnx_model": onnx_model if bls else MODEL_FILE,
            "inputs": list(loaded.extra["inputs"]),
            "outputs": list(OUTPUTS[task]),
            "max_length": loaded.extra["max_length"],
            "max_batch_size": batch,
            "pad_token_id": int(loaded.tokenizer.pad_token_id or 0),
            "mask_token_id": loaded.tokenizer.mask_token_id,
            "mask_token": loaded.tokenizer.mask_token,
            "labels": loaded.extra["labels"],
            "fill_mask_top_k": loaded.extra["top_k"],
            "model_type": loaded.extra["model_type"],
            "pooling": loaded.extra["pooling"],
            "gpus": request.gpus,
            # onnxruntime session settings on CPU (what scoring ran with)
            "session_config": CPU_SESSION_CONFIG,
        }
        (version_dir / META_FILE).write_text(json.dumps(meta, indent=2))
        loaded.tokenizer.backend_tokenizer.save(str(version_dir / TOKENIZER_FILE))
        src = resources.files("lmo_runtime") / "triton_models" / "bert" / "model.py"
        (version_dir / "model.py").write_text(src.read_text())
        ship_observability(version_dir)
        hidden = loaded.extra["hidden_size"]
        # Without batching (max_batch_size 0) dims are full shapes: one text in, [1, ...] out.
        # Per text: text-classification [labels] (sorted, top_k of them), fill-mask
        # [masks, top_k] (ENTRY_OUTPUTS documents the request parameter top_k).
        lead = () if batch else (1,)
        outputs = {
            "feature-extraction": (Tensor("EMBEDDING", "FP32", (*lead, hidden)),),
            "fill-mask": (
                Tensor("TOKEN", "STRING", (*lead, -1, -1)),
                Tensor("SCORE", "FP32", (*lead, -1, -1)),
                Tensor("SEQUENCE", "STRING", (*lead, -1, -1)),
            ),
            "text-classification": (
                Tensor("LABEL", "STRING", (*lead, -1)), Tensor("SCORE", "FP32", (*lead, -1)),
            ),
        }[task]
        write_config(
            repo_dir / entry,
            ModelConfig(
                name=entry,
                backend="python",
                inputs=(Tensor("TEXT", "STRING", (1,)),),
                outputs=outputs,
                max_batch_size=batch,
                dynamic_batching=batching,
                # the Python model runs ORT on the GPU itself unless it delegates via BLS
                gpus=0 if bls else request.gpus,
                parameters={"lmo_task": task},
            ),
        )
        if not bls:
            shutil.copy(onnx_path, version_dir / MODEL_FILE)
            return entry
        onnx_dir = repo_dir / onnx_model / "1"
        onnx_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(onnx_path, onnx_dir / MODEL_FILE)
        seq_out = task == "fill-mask"
        top_k = loaded.extra["top_k"]
        any_batch = () if batch else (-1,)  # without Triton batching the batch dim is explicit
        out_types = {"embedding": "FP32", "token_id": "INT64", "token_score": "FP32",
                     "probabilities": "FP32"}
        out_dims = {"embedding": (hidden,), "probabilities": (len(loaded.extra["labels"] or [1]),)}
        write_config(
            repo_dir / onnx_model,
            ModelConfig(
                name=onnx_model,
                backend="onnxruntime",
                inputs=tuple(Tensor(n, "INT64", (*any_batch, -1)) for n in loaded.extra["inputs"]),
                outputs=tuple(
                    Tensor(o, out_types[o],
                           (*any_batch, *((-1, top_k) if seq_out else out_dims[o])))
                    for o in OUTPUTS[task]
                ),
                max_batch_size=batch,
                gpus=request.gpus,
                default_model_filename=MODEL_FILE,
            ),
        )
        return entry


# --------------------------------------------------------------------------- helpers

def _check_single_label(config: Any) -> None:
    """text-classification answers the argmax label of a softmax: a regression head (one
    output) or a multi-label one (independent sigmoids) would be scored and served as if its
    outputs were one distribution, which means nothing. Refuse both."""
    problem = getattr(config, "problem_type", None)
    n = int(config.num_labels)
    if n >= 2 and problem in (None, "single_label_classification"):
        return
    what = f"num_labels {n}" + (f" and problem_type {problem!r}" if problem else "")
    raise ConversionError(
        f"task text-classification needs a single-label classifier, but config.json has "
        f"{what}: regression and multi-label heads are not supported. Use a checkpoint "
        "trained for single-label classification (num_labels >= 2, problem_type "
        "single_label_classification or unset)"
    )


def _labels(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]


def _max_diff(task: str, ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Largest absolute difference of the float outputs (fill-mask: token probabilities)."""
    floats = [(r, g) for r, g in zip(ref, got) if np.issubdtype(np.asarray(r).dtype, np.floating)]
    return float(max(np.abs(np.asarray(r, np.float32) - np.asarray(g, np.float32)).max() for r, g in floats))


_SESSIONS: dict[tuple[str, float], Any] = {}


def run_onnx(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run an ONNX model with onnxruntime (CUDA when available for fp16, else CPU)."""
    import onnxruntime as ort

    key = (str(path), Path(path).stat().st_mtime)
    sess = _SESSIONS.get(key)
    if sess is None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in ort.get_available_providers()]
        if providers[0] == "CPUExecutionProvider":
            for key, value in CPU_SESSION_CONFIG.items():
                so.add_session_config_entry(key, value)
        sess = ort.InferenceSession(str(path), so, providers=providers)
        _SESSIONS.clear()
        _SESSIONS[key] = sess
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in feed.items() if k in names})


# A CJK ideograph (BERT's _is_chinese_char ranges): each is a word of its own, as BERT's
# basic tokenizer (tokenize_chinese_chars) splits them.
_CJK = re.compile(
    "([\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f])"
)


def masked(tokenizer: Any, text: str, every: int = 4, single: bool = False) -> str:
    """`text` with words replaced by the mask token: one word near the middle (`single`),
    else every `every`-th word (at least one). A CJK character counts as a word (Chinese
    text has no spaces between words)."""
    words = [w for part in text.split() for w in _CJK.split(part) if w]
    glue = [bool(_CJK.fullmatch(a) or _CJK.fullmatch(b)) for a, b in zip(words, words[1:])]
    mask = tokenizer.mask_token
    if single:
        idx = [len(words) // 2]
    else:
        idx = list(range(1, len(words), every)) or [0]
    for i in idx:
        if i >= len(words):
            continue
        stripped = words[i].rstrip(".,!?;:")
        words[i] = mask + words[i][len(stripped):]
    out = words[0] if words else ""
    for word, joined in zip(words[1:], glue):
        out += ("" if joined else " ") + word
    return out


FAMILY = EncoderFamily()
