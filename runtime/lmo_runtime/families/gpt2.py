"""Decoder-only families: text-generation with a KV-cache ONNX decoder (GPT-2 here; the
Llama-, Qwen2-, Mistral- and Phi3-style ones in `families.decoders` share this code).

Export: one ONNX graph serves prefill (zero-length past) and every decode step. It takes
`input_ids`, `attention_mask` [batch, past + new], `position_ids` and per layer
`past_key_values.<i>.key|value` [batch, kv_heads, past, head_dim]; it returns `logits` of
the last position only ([batch, vocab]: the head runs on one position, and a prefill of 16 x
512 tokens no longer returns 16 x 512 x 50,257 floats) and `present.<i>.key|value`. A
wrapper rebuilds a `DynamicCache` from the flat inputs and passes an explicit 4-D additive
attention mask (causal + padding) built from tensor shapes, so that no sequence length
computed in Python can be frozen into the traced graph (tests check prefill with an empty
past and decode steps against PyTorch; note the wrapper must be in eval mode: export
restores its training flag). The model's Conv1D layers are exported as MatMul + Add (not
Gemm) so that dynamic int8 quantization, which handles MatMul but not Gemm, reaches every
projection.

Precisions: fp32; int8 = dynamic, per-channel, MatMul weights only (the embedding Gather
stays float: TRITON-CPU.md measured a naive int8 GPT-2, Gather included, decoding 2x slower);
fp16 = float16 weights and MatMuls with float32 inputs/outputs, normalisations and softmax
kept in float32 (mixed precision, for GPU serving). int8-static is refused
(a calibrated decoder needs past-length-aware calibration: issue #3).

Big models: when the weights exceed protobuf's 2 GiB (gpt2-large, 774M: ~3.3 GB with the
tied embedding stored twice) the export keeps them in one external data file,
`model.onnx.data`, beside `model.onnx` (`families.onnx_external`; the Conv1D -> MatMul
rewrite shares the weight tensors, and the scoring session maps the data file instead of
prepacking a copy, so the process holds the weights about twice: PyTorch's and the mapped
file). Every precision and the repository
carry the pair; onnxruntime and Triton load the data file from the model's directory.
`LMO_ONNX_EXTERNAL_DATA_BYTES` lowers the threshold (tests use it on small models).

Score (the accuracy gate): next-token top-1 agreement between PyTorch and the ONNX model over
every position of the held-out texts, with the mean KL divergence (PyTorch || ONNX) in the
details. The graph returns the last position's logits, so every position is reached the
way serving reaches it: a one-token prefill, then one decode step per token through the
cache. The fp32 export check compares a prefill and a decode step.

Repository (entry `text_generation` plus the decoupled `text_generation_stream`):
backend "python", and every GPU repository: both Python models run onnxruntime themselves
(`text_generation/1/` holds model.onnx, tokenizer.json, generation.json), on KIND_GPU
instances with gpus > 0, the KV cache bound to the GPU by IO binding (a BLS response has one
memory type for all its outputs: the logits the sampler reads with numpy would force the
cache through the host every step). backend "onnxruntime" on CPUs: the decoder is its own
Triton model (`gpt2_decoder`; `decoder` for the other families) served by the ONNX Runtime
backend and the Python models call it through BLS (`lmo_runtime.bls`).
"""

from __future__ import annotations

import json
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from lmo_runtime.errors import ConversionError
from lmo_runtime.families import Exported, Loaded, load_tokenizer, onnx_external, quiet_root_logger
from lmo_runtime.manifest import ENTRY_MODEL, ConversionRequest, Golden, Score
from lmo_runtime.payloads import ship as ship_observability

OPSET = 17
MODEL_FILE = "model.onnx"
NO_CACHE_FILE = "model_no_cache.onnx"
DECODER_MODEL = "gpt2_decoder"
STREAM_MODEL = "text_generation_stream"
GOLDEN_MAX_TOKENS = 8
STREAM_WORKERS = 4  # text_generation_stream's default pool (its STREAM_WORKERS parameter)
DEFAULT_MAX_TOKENS = 32
TEXTGEN_FILES = ("textgen.py",)
# ops an fp16 decoder keeps in fp32: LayerNorm (GPT-2), the exported RMSNorm (Pow, ReduceMean,
# Sqrt, Reciprocal/Div) and softmax
FP16_KEEP_FP32 = ("LayerNormalization", "SimplifiedLayerNormalization", "Pow", "ReduceMean",
                  "Sqrt", "Reciprocal", "Softmax")


def _torch():
    import torch

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return torch


def past_names(n_layer: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def spec_of(loaded: Loaded) -> dict[str, Any]:
    """What generation needs to know about the model (written as generation.json)."""
    return dict(loaded.extra["spec"])


def _decoder_module(model: Any, n_layer: int) -> Any:
    """torch module: flat (ids, mask, positions, *past) -> (logits, *presents)."""
    torch = _torch()
    from transformers import DynamicCache

    class Decoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            new = input_ids.shape[1]
            total = attention_mask.shape[1]
            keys = torch.arange(total, device=input_ids.device)
            queries = torch.arange(new, device=input_ids.device) + (total - new)
            allowed = (keys[None, :] <= queries[:, None])[None, None] & attention_mask[
                :, None, None, :
            ].bool()
            dtype = self.model.get_output_embeddings().weight.dtype
            additive = torch.zeros(allowed.shape, dtype=dtype, device=input_ids.device)
            additive = additive.masked_fill(~allowed, torch.finfo(dtype).min)
            cache = DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(n_layer)]
            )
            out = self.model(
                input_ids=input_ids, attention_mask=additive, position_ids=position_ids,
                past_key_values=cache, use_cache=True, logits_to_keep=1,
            )
            presents = []
            for layer in out.past_key_values.layers:
                presents += [layer.keys, layer.values]
            return (out.logits[:, -1, :], *presents)

    return Decoder().eval()


def _linearize(model: Any) -> Any:
    """`model` with its Conv1D layers computing `x @ W + b` as MatMul + Add (same math and
    the same weight tensors): Conv1D's addmm exports as Gemm, which dynamic int8 quantization
    does not handle, and nn.Linear would export a transposed copy of every weight.

    A copy of the module tree sharing `model`'s parameters: a multi-GB model is never
    duplicated, and `model` itself keeps its Conv1D layers."""
    import copy

    torch = _torch()
    from transformers.pytorch_utils import Conv1D

    class MatMulConv1D(torch.nn.Module):
        def __init__(self, conv: Any) -> None:
            super().__init__()
            self.weight, self.bias = conv.weight, conv.bias  # [nx, nf], [nf]: shared

        def forward(self, x):
            return torch.matmul(x, self.weight) + self.bias

    memo = {id(p): p for p in model.parameters()}  # copy the module tree, not the tensors
    memo.update({id(b): b for b in model.buffers()})
    clone = copy.deepcopy(model, memo).eval()
    for module in list(clone.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):
                setattr(module, name, MatMulConv1D(child))
    return clone


def prompt_ids(loaded: Loaded, text: str) -> list[int]:
    """Token ids of a prompt as the served model makes them (textgen.Generator._row): BOS
    first where the tokenizer adds one, an empty prompt starting from end-of-text."""
    spec = loaded.extra["spec"]
    ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    if spec.get("add_bos"):
        ids = [spec["bos_token_id"], *ids]
    return ids or [spec["eos_token_id"] or 0]


def _sample_ids(loaded: Loaded, texts: list[str]) -> list[list[int]]:
    return [prompt_ids(loaded, text)[: loaded.extra["spec"]["n_positions"]] for text in texts]


def generation_spec(loaded_model: Any, tokenizer: Any, *, n_layer: int,
                    kv_heads: int, head_dim: int, n_positions: int, vocab_size: int
                    ) -> dict[str, Any]:
    """generation.json: the shapes of the cache and what the checkpoint says about
    generation (BOS, every EOS, the generation config's sampling defaults, the chat
    template and the special tokens it writes), read by textgen.py in the Triton models and
    by the front (lmo_runtime.front: the chat endpoint, max_tokens' default)."""
    cfg = loaded_model.config
    gen = getattr(loaded_model, "generation_config", None)
    eos: list[int] = []
    for source in (getattr(gen, "eos_token_id", None), tokenizer.eos_token_id,
                   getattr(cfg, "eos_token_id", None)):
        for token in (source if isinstance(source, (list, tuple)) else [source]):
            if token is not None and int(token) not in eos:
                eos.append(int(token))
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = getattr(cfg, "bos_token_id", None)
    probe = tokenizer("a")["input_ids"]  # with special tokens: does the tokenizer add BOS?
    add_bos = bos is not None and bool(probe) and probe[0] == bos
    defaults: dict[str, Any] = {}
    if gen is not None and getattr(gen, "do_sample", False):
        for key, attr in (("temperature", "temperature"), ("top_k", "top_k"),
                          ("top_p", "top_p")):
            value = getattr(gen, attr, None)
            if value is not None:
                defaults[key] = value
    if gen is not None and getattr(gen, "max_new_tokens", None):
        defaults["max_tokens"] = int(gen.max_new_tokens)
    pad = tokenizer.pad_token_id
    return {
        "model_type": str(getattr(cfg, "model_type", "")),
        "n_layer": int(n_layer),
        "n_head": int(kv_heads),  # heads of the cache (key/value heads with GQA)
        "head_dim": int(head_dim),
        "n_positions": int(n_positions),
        "vocab_size": int(vocab_size),
        "eos_token_id": eos[0] if eos else None,
        "eos_token_ids": eos,
        "bos_token_id": None if bos is None else int(bos),
        "add_bos": add_bos,
        "pad_token_id": None if pad is None else int(pad),
        "defaults": defaults,
        "chat_template": _chat_template(tokenizer),
        # what a chat template may write besides the messages (transformers renders it with
        # the tokenizer's special_tokens_map): bos_token, eos_token, pad_token, ...
        "special_tokens": {k: v for k, v in tokenizer.special_tokens_map.items()
                           if isinstance(v, str)},
    }


def _chat_template(tokenizer: Any) -> str | None:
    """The checkpoint's chat template (tokenizer_config.json `chat_template` or
    chat_template.jinja, as transformers loads it); of several named ones, `default`, the
    one transformers applies when a request names none."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


class DecoderFamily:
    """What every decoder-only family shares: export with a KV cache, precisions, the
    accuracy gate, golden outputs and the text-generation repository. A family provides
    `load()` (its model class and generation.json) and may override `prepare_export()`."""

    name = "decoder"
    tasks = ("text-generation",)
    architectures: tuple[str, ...] = ()
    precisions = ("fp32", "fp16", "int8")  # int8-static: see the module docstring
    decoder_model = "decoder"  # the BLS decoder's Triton model name

    def prepare_export(self, model: Any) -> Any:
        """The torch module to export (GPT-2 rewrites its Conv1D layers)."""
        return model

    label = "decoder"  # in messages: "a GPT-2 checkpoint"

    def model_class(self) -> Any:
        """The transformers class that loads the checkpoint with its LM head."""
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def shape(self, cfg: Any) -> dict[str, int]:
        """n_layer, kv_heads, head_dim, n_positions, vocab_size of a config (Llama-style
        names; GPT-2 overrides)."""
        heads = int(cfg.num_attention_heads)
        return {
            "n_layer": int(cfg.num_hidden_layers),
            "kv_heads": int(getattr(cfg, "num_key_value_heads", None) or heads),
            "head_dim": int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads),
            "n_positions": int(cfg.max_position_embeddings),
            "vocab_size": int(cfg.vocab_size),
        }

    # ------------------------------------------------------------------ load

    def load(self, ckpt_dir: Path, task: str) -> Loaded:
        from lmo_runtime import checkpoint

        config_dict = checkpoint.inspect(ckpt_dir)
        if task not in self.tasks:
            raise ConversionError(
                f"task {task!r} is not possible with a {self.label} checkpoint; it can serve "
                "text-generation"
            )
        torch = _torch()
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        tokenizer = load_tokenizer(ckpt_dir)
        try:
            # float32 whatever config.json's dtype says (fp16/bf16 checkpoints): the export,
            # the reference logits and the fp16 precision all start from float32 weights.
            model, info = self.model_class().from_pretrained(
                str(ckpt_dir), attn_implementation="eager", output_loading_info=True,
                dtype=torch.float32,
            )
        except Exception as err:
            raise ConversionError(
                f"checkpoint weights cannot be loaded ({type(err).__name__}: {str(err)[:300]}); "
                "check that the files are complete and match config.json"
            ) from None
        # A tied head is the input embedding (save_pretrained omits it); an untied one must be
        # in the weights, or the model would be served with a randomly initialised head.
        tied = bool(getattr(model.config, "tie_word_embeddings", True))
        missing = [k for k in info.get("missing_keys", []) if not (tied and "lm_head" in k)
                   and not k.endswith(".attn.bias") and not k.endswith("masked_bias")]
        if any("lm_head" in k for k in missing):
            raise ConversionError(
                "checkpoint weights have no lm_head.weight but config.json sets "
                "tie_word_embeddings: false (an output head of its own); save the model with "
                "its head, or set tie_word_embeddings: true if the head is the input embedding"
            )
        if missing:
            raise ConversionError(
                f"checkpoint weights are incomplete: {len(missing)} tensors missing "
                f"(e.g. {missing[0]}); the weights do not match config.json"
            )
        model.eval()
        cfg = model.config
        if len(tokenizer) > cfg.vocab_size:
            raise ConversionError(
                f"tokenizer has {len(tokenizer)} tokens but config.json vocab_size is "
                f"{cfg.vocab_size}; save the tokenizer the model was trained with"
            )
        spec = generation_spec(model, tokenizer, **self.shape(cfg))
        return Loaded(
            task=task,
            architecture=model.__class__.__name__,
            config=config_dict,
            ckpt_dir=Path(ckpt_dir),
            model=model,
            tokenizer=tokenizer,
            extra={"spec": spec},
        )

    # ------------------------------------------------------------------ export

    def torch_logits(self, loaded: Loaded, ids: list[int]) -> np.ndarray:
        """PyTorch logits [len(ids), vocab] for one sequence."""
        torch = _torch()
        with torch.inference_mode():
            return loaded.model(torch.tensor([ids])).logits[0].float().numpy()

    def export(self, loaded: Loaded, work_dir: Path) -> Exported:
        import onnx

        torch = _torch()
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        spec = spec_of(loaded)
        n_layer, heads, head_dim = spec["n_layer"], spec["n_head"], spec["head_dim"]
        # The exporter stores a tied embedding twice (Gather and lm_head MatMul).
        size = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        head = loaded.model.get_output_embeddings().weight
        size += head.numel() * head.element_size()
        # over protobuf's 2 GiB (or LMO_ONNX_EXTERNAL_DATA_BYTES) the weights go to one
        # external data file beside the graph (families.onnx_external)
        external = size > onnx_external.threshold()
        loaded.extra["external_data"] = external
        decoder = _decoder_module(self.prepare_export(loaded.model), n_layer)
        batch, past_len, new = 2, 3, 4  # trace with a non-empty past; prefill works too
        vocab = spec["vocab_size"]
        generator = torch.Generator().manual_seed(0)
        args = (
            torch.randint(0, vocab, (batch, new), generator=generator),
            torch.ones(batch, past_len + new, dtype=torch.long),
            torch.arange(past_len, past_len + new).expand(batch, new).contiguous(),
            *(torch.randn(batch, heads, past_len, head_dim, generator=generator)
              for _ in range(2 * n_layer)),
        )
        inputs = ["input_ids", "attention_mask", "position_ids", *past_names(n_layer)]
        outputs = ["logits", *present_names(n_layer)]
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"},
        }
        axes.update({n: {0: "batch", 2: "past_sequence"} for n in past_names(n_layer)})
        axes.update({n: {0: "batch", 2: "total_sequence"} for n in present_names(n_layer)})
        path = work_dir / MODEL_FILE
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                decoder, args, str(path), input_names=inputs, output_names=outputs,
                dynamic_axes=axes, opset_version=OPSET, dynamo=False,
            )
        if onnx_external.data_files(path):  # > 2 GiB: the exporter wrote a file per tensor
            onnx_external.consolidate(path)
        elif external:
            onnx_external.externalize(path)
        onnx.checker.check_model(str(path))  # by path: external data is checked in place
        prefill, decode = self._check_export(loaded, path)
        return Exported(
            path=path, max_abs_diff=max(prefill, decode), opset=OPSET,
            details={"max_abs_diff_prefill": prefill, "max_abs_diff_decode": decode},
        )

    def _check_export(self, loaded: Loaded, path: Path) -> tuple[float, float]:
        """Max |ONNX - PyTorch| of the logits: prefill over a text, then one decode step."""
        from lmo_runtime.families import heldout_texts

        spec = spec_of(loaded)
        session = _session(path)
        prefill = decode = 0.0
        for ids in _sample_ids(loaded, heldout_texts(4)):
            ref = self.torch_logits(loaded, ids)
            head, tail = ids[:-1] or ids, ids[-1]
            logits, presents = _run_decoder(session, spec, [head])
            prefill = max(prefill, float(np.abs(logits[0] - ref[len(head) - 1]).max()))
            if len(ids) > 1:
                step, _ = _run_decoder(session, spec, [[tail]], presents, past_len=len(head))
                decode = max(decode, float(np.abs(step[0] - ref[-1]).max()))
        return prefill, decode

    def export_no_cache(self, loaded: Loaded, path: Path) -> Path:
        """A plain (input_ids, attention_mask) -> logits graph: every step recomputes the whole
        sequence. Only for the benchmark's "without KV cache" comparison."""
        import onnx

        torch = _torch()
        model = self.prepare_export(loaded.model)

        class Plain(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return self.model(input_ids=input_ids, attention_mask=attention_mask,
                                  use_cache=False).logits

        ids = torch.randint(0, loaded.extra["spec"]["vocab_size"], (2, 5))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                Plain().eval(), (ids, torch.ones_like(ids)), str(path),
                input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "attention_mask": {0: "batch", 1: "sequence"},
                              "logits": {0: "batch", 1: "sequence"}},
                opset_version=OPSET, dynamo=False,
            )
        onnx.checker.check_model(str(path))
        return path

    # ------------------------------------------------------------------ optimize

    def optimize(
        self, exported: Exported, precision: str, loaded: Loaded, work_dir: Path,
        calibration: list[str] | int,
    ) -> Path:
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        out = work_dir / MODEL_FILE
        src = exported.path
        if precision == "fp32":
            onnx_external.copy_model(src, out)
        elif precision == "int8":
            from lmo_runtime.families.int8 import int8_kernel

            loaded.extra.setdefault("optimize_details", {})[precision] = int8_kernel().details()
            quantize_int8(src, out)
        elif precision == "fp16":
            import onnx
            from onnxruntime.transformers.onnx_model import OnnxModel

            from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

            model = OnnxModel(onnx.load(str(src)))
            # mixed precision: weights and MatMuls in fp16, the normalisations and softmax in
            # fp32 (an RMSNorm's x * x overflows fp16 above 256; softmax sums lose precision)
            model.convert_float_to_float16(
                keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32])
            half = sum(t.ByteSize() for t in model.model.graph.initializer)
            onnx_external.save(model.model, out, half)
        elif precision == "int8-static":
            raise ConversionError(
                "precision int8-static is not supported for GPT-2 decoders; use int8 "
                "(dynamic, per-channel) or fp16/fp32 in optimize.precision"
            )
        else:
            raise ConversionError(
                f"precision {precision!r} is not supported; use fp32, fp16 or int8"
            )
        return out

    # ------------------------------------------------------------------ score

    def score(self, loaded: Loaded, onnx_path: Path, texts: list[str], threshold: float) -> Score:
        spec = spec_of(loaded)
        session = _session(onnx_path)
        agree = total = 0
        kls: list[float] = []
        max_diff = 0.0
        for ids in _sample_ids(loaded, texts):
            ref = self.torch_logits(loaded, ids).astype(np.float64)
            got = _every_position(session, spec, ids).astype(np.float64)
            agree += int((ref.argmax(-1) == got.argmax(-1)).sum())
            total += len(ids)
            max_diff = max(max_diff, float(np.abs(ref - got).max()))
            p, q = _log_softmax(ref), _log_softmax(got)
            kls.extend((np.exp(p) * (p - q)).sum(-1).tolist())
        value = agree / max(1, total)
        return Score(
            metric="next_token_top1",
            value=value,
            threshold=threshold,
            passed=value >= threshold,
            samples=len(texts),
            details={"kl": float(np.mean(kls)), "kl_max": float(np.max(kls)),
                     "positions": float(total), "max_abs_diff_logits": max_diff},
        )

    def golden(self, loaded: Loaded, texts: list[str]) -> Golden:
        """Greedy continuations (GOLDEN_MAX_TOKENS tokens) of each text's first words."""
        prompts = [" ".join(t.split()[:4]) for t in texts]
        return Golden(
            inputs=prompts,
            outputs=[greedy_text(loaded, p, GOLDEN_MAX_TOKENS) for p in prompts],
            kind="tokens",
        )

    # ------------------------------------------------------------------ repository

    def write_repository(
        self, loaded: Loaded, onnx_path: Path, repo_dir: Path, request: ConversionRequest
    ) -> str:
        from lmo_runtime.triton.config import DynamicBatching, ModelConfig, Tensor, write_config

        entry = ENTRY_MODEL["text-generation"]
        repo_dir = Path(repo_dir)
        spec = spec_of(loaded)
        # On GPUs the decoder runs in the Python models (the cache stays on the GPU there;
        # see the module docstring), whichever backend serves the other models.
        bls = request.backend == "onnxruntime" and request.gpus == 0
        loaded.extra["shared_memory_bytes"] = None  # in-process decoding: only text passes
        assets = repo_dir / entry / "1"
        assets.mkdir(parents=True, exist_ok=True)
        (assets / "generation.json").write_text(json.dumps(spec, indent=2, sort_keys=True))
        loaded.tokenizer.backend_tokenizer.save(str(assets / "tokenizer.json"))
        models = resources.files("lmo_runtime") / "triton_models"
        source = models / "text_generation"
        for name in TEXTGEN_FILES:
            (assets / name).write_text((source / name).read_text())
        (assets / "model.py").write_text((source / "model.py").read_text())
        stream_dir = repo_dir / STREAM_MODEL / "1"
        stream_dir.mkdir(parents=True, exist_ok=True)
        for name in TEXTGEN_FILES:
            (stream_dir / name).write_text((source / name).read_text())
        (stream_dir / "text_generation_model.py").write_text((source / "model.py").read_text())
        (stream_dir / "model.py").write_text((models / STREAM_MODEL / "model.py").read_text())
        ship_observability(assets)
        ship_observability(stream_dir)

        batch = max(0, request.max_batch_size)
        optional = tuple(
            Tensor(name, dtype, (1,), optional=True)
            for name, dtype in (("MAX_TOKENS", "INT32"), ("TEMPERATURE", "FP32"),
                                ("TOP_K", "INT32"), ("TOP_P", "FP32"), ("SEED", "INT64"),
                                ("STOP", "STRING"))
        )
        inputs = (Tensor("TEXT", "STRING", (1,)), *optional)
        outputs = (Tensor("TEXT_OUTPUT", "STRING", (1,)),)
        params = {"ENGINE": "bls" if bls else "onnxruntime", "ORT_THREADS": "0",
                  "DEFAULT_MAX_TOKENS": str(DEFAULT_MAX_TOKENS)}
        if bls:
            params["DECODER_MODEL"] = self.decoder_model
        # BLS (CPU only): the Python models tokenize and sample, the decoder model computes.
        python_gpus = 0 if bls else request.gpus
        write_config(repo_dir / entry, ModelConfig(
            name=entry, backend="python", inputs=inputs, outputs=outputs,
            max_batch_size=batch,
            dynamic_batching=(
                DynamicBatching(max_queue_delay_microseconds=request.max_queue_delay_microseconds,
                            max_queue_size=request.queue_max_size,
                            queue_timeout_microseconds=request.queue_timeout_microseconds)
                if batch > 0 else None
            ),
            gpus=python_gpus, parameters=params,
        ))
        write_config(repo_dir / STREAM_MODEL, ModelConfig(
            name=STREAM_MODEL, backend="python", inputs=inputs, outputs=outputs,
            max_batch_size=batch, decoupled=True, gpus=python_gpus,
            parameters={**params, "ASSETS_MODEL": entry},
        ))
        onnx_dest = repo_dir / self.decoder_model / "1" if bls else assets
        onnx_dest.mkdir(parents=True, exist_ok=True)
        onnx_external.copy_model(onnx_path, onnx_dest / MODEL_FILE)  # with its .data, if any
        if bls:
            n_layer, heads, head_dim = spec["n_layer"], spec["n_head"], spec["head_dim"]
            # Each BLS call passes the past in and the presents out through /dev/shm: at
            # most a full batch of the entry model plus the streaming model's workers, each
            # at the full context, in float32 (the cache keeps float32 I/O at every precision)
            rows = max(1, batch) + STREAM_WORKERS
            cache = 2 * n_layer * rows * heads * spec["n_positions"] * head_dim * 4
            loaded.extra["shared_memory_bytes"] = 2 * cache + rows * spec["vocab_size"] * 4
            write_config(repo_dir / self.decoder_model, ModelConfig(
                name=self.decoder_model, backend="onnxruntime",
                inputs=(
                    Tensor("input_ids", "INT64", (-1, -1)),
                    Tensor("attention_mask", "INT64", (-1, -1)),
                    Tensor("position_ids", "INT64", (-1, -1)),
                    *(Tensor(n, "FP32", (-1, heads, -1, head_dim)) for n in past_names(n_layer)),
                ),
                outputs=(
                    Tensor("logits", "FP32", (-1, spec["vocab_size"])),
                    *(Tensor(n, "FP32", (-1, heads, -1, head_dim))
                      for n in present_names(n_layer)),
                ),
                max_batch_size=0,  # the cache has its own batch axis; batching is in the caller
                default_model_filename=MODEL_FILE,
            ))
        return entry



class Gpt2Family(DecoderFamily):
    """Converts GPT2LMHeadModel checkpoints for text-generation."""

    name = "gpt2"
    architectures = ("GPT2LMHeadModel", "GPT2Model")
    decoder_model = DECODER_MODEL

    label = "GPT-2"

    def model_class(self) -> Any:
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel

    def shape(self, cfg: Any) -> dict[str, int]:
        return {"n_layer": int(cfg.n_layer), "kv_heads": int(cfg.n_head),
                "head_dim": int(cfg.n_embd // cfg.n_head), "n_positions": int(cfg.n_positions),
                "vocab_size": int(cfg.vocab_size)}

    def prepare_export(self, model: Any) -> Any:
        return _linearize(model)


# --------------------------------------------------------------------------- helpers


def greedy_text(loaded: Loaded, prompt: str, max_tokens: int) -> str:
    """PyTorch greedy continuation of `prompt` (what the served model must reproduce).

    Prompt and continuation are kept within the context as the served model keeps them
    (textgen.Generator._row): at most n_positions - 1 new tokens after the prompt's end.
    """
    torch = _torch()
    spec = spec_of(loaded)
    ids = prompt_ids(loaded, prompt)
    max_tokens = min(max_tokens, spec["n_positions"] - 1)
    ids = ids[-(spec["n_positions"] - max_tokens):]
    eos = spec.get("eos_token_ids") or [spec["eos_token_id"]]
    with torch.inference_mode():
        out = loaded.model.generate(
            torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=max_tokens, do_sample=False,
            pad_token_id=spec["pad_token_id"] if spec.get("pad_token_id") is not None
            else eos[0], eos_token_id=eos,
            # the served model stops at max tokens or EOS only: the checkpoint's other
            # generation settings (repetition penalty, min length...) are not applied
            generation_config=_plain_generation_config(loaded.model),
        )
    new = []
    for t in out[0, len(ids):].tolist():
        if t in eos:
            break
        new.append(t)
    return loaded.tokenizer.decode(new, skip_special_tokens=True)


def _plain_generation_config(model: Any) -> Any:
    from transformers import GenerationConfig

    return GenerationConfig(do_sample=False)


def quantize_int8(src: Path, out: Path) -> None:
    """Dynamic int8, per-channel, MatMul weights only (embedding Gather stays float);
    reduce_range on x86 CPUs without VNNI/AMX (`families.int8`)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lmo_runtime.families.int8 import int8_kernel

    if onnx_external.data_files(src):
        # a big model: onnxruntime's quantizer would hold it about 3.4 times over; the same
        # quantization, one weight at a time
        onnx_external.quantize_dynamic_streaming(src, out, int8_kernel().reduce_range)
        return
    with quiet_root_logger():
        quantize_dynamic(
            str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"], reduce_range=int8_kernel().reduce_range,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )



def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    if Path(path).with_name(Path(path).name + onnx_external.DATA_SUFFIX).is_file():
        # a big model: onnxruntime maps the external weights from the file; prepacking would
        # copy them all into its own buffers (3 GiB more for gpt2-large while PyTorch holds
        # the reference model too)
        options.add_session_config_entry("session.disable_prepacking", "1")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                 if p in ort.get_available_providers()]
    return ort.InferenceSession(str(path), options, providers=providers)


def _run_decoder(session: Any, spec: dict[str, Any], ids: list[list[int]],
                 past: list[np.ndarray] | None = None, past_len: int = 0
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the decoder on equal-length rows `ids` after `past` (None: prefill)."""
    batch, new = len(ids), len(ids[0])
    n_layer = spec["n_layer"]
    if past is None:
        past = [np.zeros((batch, spec["n_head"], 0, spec["head_dim"]), np.float32)
                for _ in range(2 * n_layer)]
    feed = {
        "input_ids": np.asarray(ids, dtype=np.int64),
        "attention_mask": np.ones((batch, past_len + new), dtype=np.int64),
        "position_ids": np.arange(past_len, past_len + new, dtype=np.int64)[None].repeat(batch, 0),
        **dict(zip(past_names(n_layer), past)),
    }
    logits, *presents = session.run(["logits", *present_names(n_layer)], feed)
    return logits.astype(np.float32), presents


def _every_position(session: Any, spec: dict[str, Any], ids: list[int]) -> np.ndarray:
    """Logits [len(ids), vocab] of one sequence as serving computes them: a one-token
    prefill, then a decode step per token through the cache (the graph returns the last
    position only)."""
    rows = []
    past = None
    for i, token in enumerate(ids):
        logits, past = _run_decoder(session, spec, [[token]], past, past_len=i)
        rows.append(logits[0])
    return np.stack(rows)


FAMILY = Gpt2Family()
