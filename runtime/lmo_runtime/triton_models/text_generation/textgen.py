"""Text generation with a decoder-only ONNX model and its KV cache (numpy, onnxruntime, tokenizers).

The decoder graph (written by `lmo_runtime.families.gpt2` for GPT-2 and the Llama-style
families) takes `input_ids`, `attention_mask` (over past + new tokens), `position_ids` and one
`past_key_values.<i>.key|value` per layer shaped [batch, kv_heads, past, head_dim] (past may
be 0: prefill) and returns `logits` of the last position only ([batch, vocab]) plus
`present.<i>.key|value`. One graph serves prefill and every decode step.

Where the data lives: in-process (`OrtDecoder`) the presents are bound with IO binding to
the device the session runs on and fed back as OrtValues, so the cache never passes through
numpy (nor, on a GPU, through the host); only the last position's logits come to the CPU,
where the sampler runs.

This file is copied next to the Triton Python-backend models `text_generation` and
`text_generation_stream` (the Triton image has numpy, onnxruntime and tokenizers but not
lmo_runtime), and imported by lmo's benchmark for the "direct onnxruntime" numbers. It must
therefore import nothing beyond those three libraries.

Requests in one call are generated together: prompts are left-padded into one batch with an
attention mask and per-row position ids, each row keeps its own sampling parameters and random
generator (so a seeded request gives the same text whatever it is batched with), and rows stop
independently (an end-of-sequence token, MAX_TOKENS, STOP string, context length).

generation.json (the model's `spec`) also carries what the checkpoint says about generation:
`bos_token_id` with `add_bos` (Llama-style tokenizers start every prompt with it),
`eos_token_ids` (generation_config.json may list several), `defaults` (its temperature,
top_k, top_p and max_new_tokens; do_sample false means greedy), `chat_template` and
`special_tokens` (the strings a chat template writes, e.g. `bos_token`).

The request parameter `add_special_tokens` (KServe v2 `"parameters"`, default true) says
whether BOS is put before the prompt. A prompt rendered by the checkpoint's chat template
already holds what the template writes, so the chat endpoint sends false: the prompt is then
tokenized as transformers' `apply_chat_template` tokenizes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GENERATION_FILE = "generation.json"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE = "model.onnx"
PAST_PREFIX = "past_key_values."
PRESENT_PREFIX = "present."


@dataclass
class Params:
    """Sampling parameters of one request (Triton inputs MAX_TOKENS, TEMPERATURE, ...)."""

    max_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1: no nucleus filter
    seed: int | None = None  # None: a fresh random stream
    stop: tuple[str, ...] = ()
    add_special_tokens: bool = True  # False: no BOS before the prompt (it holds its own)

    def check(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"MAX_TOKENS must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"TEMPERATURE must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"TOP_K must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"TOP_P must be in (0, 1], got {self.top_p}")


def past_names(n_layer: int) -> list[str]:
    return [f"{PAST_PREFIX}{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"{PRESENT_PREFIX}{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


class OrtDecoder:
    """The decoder run in-process by onnxruntime, with IO binding: the presents stay as
    OrtValues on the session's device and are bound as the next step's past; only the
    logits ([batch, vocab]) are copied to the CPU."""

    def __init__(self, path: str | Path, spec: dict[str, Any], threads: int = 0,
                 device_id: int | None = None, io_binding: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Busy-waiting worker threads burn a pod's CPU quota (CFS throttling) and the cores
        # other processes need between the many short runs of a decode loop; LMO_ORT_SPIN=1
        # re-enables it (as in the BERT entry model)
        if os.environ.get("LMO_ORT_SPIN", "0") != "1":
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        self.device, self.device_id = "cpu", 0
        if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
            self.device, self.device_id = "cuda", device_id
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        if self.session.get_providers()[0] != "CUDAExecutionProvider":
            self.device, self.device_id = "cpu", 0
        self.spec = spec
        self.io_binding = io_binding
        self.input_names = {i.name for i in self.session.get_inputs()}
        past_type = next(
            (i.type for i in self.session.get_inputs() if i.name.startswith(PAST_PREFIX)),
            "tensor(float)",
        )
        self.past_dtype = np.float16 if "float16" in past_type else np.float32
        self.past = past_names(spec["n_layer"])
        self.presents = present_names(spec["n_layer"])
        self.outputs = ["logits", *self.presents]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 position_ids: np.ndarray, past: list[Any]) -> tuple[np.ndarray, list[Any]]:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask,
                "position_ids": position_ids}
        if not self.io_binding:  # numpy in, numpy out: the cache through the host each step
            feed.update((n, p if isinstance(p, np.ndarray) else p.numpy())
                        for n, p in zip(self.past, past))
            feed = {k: v for k, v in feed.items() if k in self.input_names}
            logits, *presents = self.session.run(self.outputs, feed)
            return logits, presents
        binding = self.session.io_binding()
        for name, value in feed.items():
            if name in self.input_names:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in zip(self.past, past):
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self.presents:
            binding.bind_output(name, self.device, self.device_id)
        self.session.run_with_iobinding(binding)
        logits, *presents = binding.get_outputs()
        return logits.numpy(), presents


def empty_past(spec: dict[str, Any], batch: int, dtype: Any = np.float32) -> list[np.ndarray]:
    shape = (batch, spec["n_head"], 0, spec["head_dim"])
    return [np.zeros(shape, dtype=dtype) for _ in range(2 * spec["n_layer"])]


def eos_ids(spec: dict[str, Any]) -> frozenset[int]:
    """Every token that ends a sequence (generation.json `eos_token_ids`, else the one
    `eos_token_id`)."""
    ids = spec.get("eos_token_ids")
    if ids is None:
        ids = [] if spec.get("eos_token_id") is None else [spec["eos_token_id"]]
    return frozenset(int(i) for i in ids)


def default_params(spec: dict[str, Any], max_tokens: int) -> Params:
    """Sampling defaults of a request that sends none: the checkpoint's generation config
    (generation.json `defaults`), MAX_TOKENS from the model's DEFAULT_MAX_TOKENS unless the
    checkpoint says max_new_tokens."""
    d = spec.get("defaults") or {}
    return Params(
        max_tokens=int(d.get("max_tokens") or max_tokens),
        temperature=float(d.get("temperature", 0.0)),
        top_k=int(d.get("top_k", 0)),
        top_p=float(d.get("top_p", 1.0)),
    )


def _stop_hold(text: str, stops: tuple[str, ...]) -> int:
    """Index from which `text` must be held back: its tail could still become a stop string
    (or is an incomplete UTF-8 character)."""
    hold = len(text)
    while hold > 0 and text[hold - 1] == "\ufffd":
        hold -= 1
    for stop in stops:
        for k in range(max(0, len(text) - len(stop) + 1), len(text)):
            if stop.startswith(text[k:]):
                hold = min(hold, k)
                break
    return hold


@dataclass
class _Row:
    """One prompt being generated."""

    prompt_ids: list[int]
    params: Params
    limit: int  # tokens this row may still generate (max_tokens within the context)
    rng: np.random.Generator
    generated: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False

    def choose(self, logits: np.ndarray) -> int:
        p = self.params
        if p.temperature <= 0:
            return int(np.argmax(logits))
        scores = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < scores.shape[-1]:
            kth = np.partition(scores, -p.top_k)[-p.top_k]
            scores = np.where(scores < kth, -np.inf, scores)
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        if p.top_p < 1:
            order = np.argsort(-probs, kind="stable")
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, p.top_p)) + 1]
            mask = np.zeros_like(probs, dtype=bool)
            mask[keep] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        cdf = np.cumsum(probs)
        return int(min(np.searchsorted(cdf, self.rng.random() * cdf[-1], side="right"),
                       len(cdf) - 1))


class Generator:
    """Tokenize, prefill, decode with the KV cache, sample, detokenize."""

    def __init__(self, decoder: Callable[..., tuple[np.ndarray, list[np.ndarray]]],
                 tokenizer: Any, spec: dict[str, Any], past_dtype: Any = np.float32) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.spec = spec
        self.eos = spec.get("eos_token_id")
        self.stops = eos_ids(spec)
        self.pad = int(spec.get("pad_token_id") if spec.get("pad_token_id") is not None
                       else (self.eos or 0))
        self.bos = spec.get("bos_token_id") if spec.get("add_bos") else None
        self.n_positions = int(spec["n_positions"])
        self.past_dtype = past_dtype

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _row(self, prompt: str, params: Params) -> _Row:
        params.check()
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        if self.bos is not None and params.add_special_tokens:  # Llama-style: BOS first
            ids = [int(self.bos), *ids]
        if not ids:  # GPT-2 has no BOS token: an empty prompt starts from end-of-text
            ids = [self.eos if self.eos is not None else self.pad]
        max_tokens = min(params.max_tokens, self.n_positions - 1)
        ids = ids[-(self.n_positions - max_tokens):]  # keep the end of a too-long prompt
        rng = np.random.default_rng(params.seed)
        return _Row(ids, params, max_tokens, rng)

    def _advance(self, row: _Row, token: int) -> None:
        if token in self.stops:
            row.done = True
            return
        row.generated.append(token)
        row.text = self.decode(row.generated)
        for stop in row.params.stop:
            at = row.text.find(stop) if stop else -1
            if at >= 0:
                row.text = row.text[:at]
                row.done = True
        if len(row.generated) >= row.limit:
            row.done = True

    def _steps(self, rows: list[_Row]) -> Iterator[None]:
        """Run the batch until every row is done, yielding after each token."""
        batch = len(rows)
        length = max(len(r.prompt_ids) for r in rows)
        ids = np.full((batch, length), self.pad, dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, length - len(r.prompt_ids):] = r.prompt_ids
            mask[i, length - len(r.prompt_ids):] = 1
        positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        past: list[Any] = empty_past(self.spec, batch, self.past_dtype)
        while True:
            logits, past = self.decoder(ids, mask, positions, past)
            tokens = np.full((batch, 1), self.pad, dtype=np.int64)
            for i, r in enumerate(rows):
                if not r.done:
                    tokens[i, 0] = r.choose(logits[i])
                    self._advance(r, int(tokens[i, 0]))
            yield
            if all(r.done for r in rows):
                return
            ids = tokens
            # A finished row keeps being fed (a pad token) while others decode; its position
            # must not run past the context, or the position-embedding lookup fails the
            # whole batch. Live rows never reach the clamp (prompt + limit <= n_positions).
            positions = np.minimum(positions[:, -1:] + 1, self.n_positions - 1)
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)

    def generate(self, prompts: list[str], params: list[Params]) -> list[str]:
        """The generated continuation of each prompt (without the prompt)."""
        rows = [self._row(p, q) for p, q in zip(prompts, params)]
        for _ in self._steps(rows):
            pass
        return [r.text for r in rows]

    def stream(self, prompt: str, params: Params) -> Iterator[str]:
        """Pieces of the continuation as they are decoded (concatenated: `generate`'s text)."""
        row = self._row(prompt, params)
        sent = 0
        for _ in self._steps([row]):
            visible = len(row.text) if row.done else _stop_hold(row.text, row.params.stop)
            if visible > sent:
                yield row.text[sent:visible]
                sent = visible


# Optional Triton inputs -> Params fields (each [batch, 1] like TEXT).
PARAM_INPUTS = {
    "MAX_TOKENS": "max_tokens",
    "TEMPERATURE": "temperature",
    "TOP_K": "top_k",
    "TOP_P": "top_p",
    "SEED": "seed",
    "STOP": "stop",
}


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def params_from_inputs(inputs: dict[str, np.ndarray], batch: int,
                       defaults: Params | None = None) -> list[Params]:
    """Per-row Params from the optional input arrays present in a request."""
    base = defaults or Params()
    out = []
    for row in range(batch):
        values: dict[str, Any] = {}
        for name, attr in PARAM_INPUTS.items():
            array = inputs.get(name)
            if array is None:
                continue
            flat = np.asarray(array).reshape(-1)
            if flat.size not in (1, batch):
                raise ValueError(f"{name} has {flat.size} values for a batch of {batch}")
            value = flat[row if flat.size == batch else 0]
            if attr == "stop":
                stop = _text(value)
                values[attr] = (stop,) if stop else ()
            elif attr in ("max_tokens", "top_k", "seed"):
                values[attr] = int(value)
            else:
                values[attr] = float(value)
        params = Params(**{**base.__dict__, **values})
        params.check()
        out.append(params)
    return out


def with_request_parameters(rows: list[Params], parameters: str | None) -> list[Params]:
    """`rows` with the request parameters (Triton's JSON of the KServe v2 `parameters`)
    applied: `add_special_tokens` (true or false)."""
    values = json.loads(parameters or "{}")
    special = values.get("add_special_tokens", True) if isinstance(values, dict) else True
    if not isinstance(special, bool):
        raise ValueError(f"parameter add_special_tokens must be true or false, got "
                         f"{json.dumps(special)}")
    for row in rows:
        row.add_special_tokens = special
    return rows


def texts_from_input(array: np.ndarray) -> list[str]:
    """TEXT ([batch, 1] of bytes) as Python strings."""
    return [_text(v) for v in np.asarray(array, dtype=object).reshape(-1)]


def load_spec(assets: str | Path) -> dict[str, Any]:
    return json.loads((Path(assets) / GENERATION_FILE).read_text())


def load_tokenizer(assets: str | Path) -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(Path(assets) / TOKENIZER_FILE))


def ort_generator(assets: str | Path, threads: int | None = None,
                  device_id: int | None = None, model_file: str = MODEL_FILE,
                  io_binding: bool = True) -> Generator:
    """A Generator running `<assets>/model.onnx` in-process (`io_binding=False`: the cache
    round-trips through numpy every step, for the benchmark's comparison only)."""
    spec = load_spec(assets)
    if threads is None:
        threads = int(os.environ.get("LMO_ORT_THREADS", "0"))
    decoder = OrtDecoder(Path(assets) / model_file, spec, threads=threads, device_id=device_id,
                         io_binding=io_binding)
    return Generator(decoder, load_tokenizer(assets), spec, decoder.past_dtype)
