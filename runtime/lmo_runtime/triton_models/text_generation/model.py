"""Triton Python-backend model `text_generation`: TEXT in, generated TEXT_OUTPUT out.

Parameters (config.pbtxt):
  ENGINE         "onnxruntime": run the decoder in this process (model.onnx in the assets;
                 on the instance's GPU with KIND_GPU, the KV cache kept there by IO binding);
                 "bls": call the decoder Triton model DECODER_MODEL (onnxruntime backend on
                 the CPU) through Business Logic Scripting (lmo_bls.py: outputs in CPU memory,
                 the presents passed back through DLPack without a numpy copy).
  DECODER_MODEL  name of that model (ENGINE "bls").
  ASSETS_MODEL   model directory whose version folder holds generation.json, tokenizer.json
                 (and model.onnx); default: this model.
  ORT_THREADS    onnxruntime intra-op threads (0: onnxruntime decides).
  DEFAULT_MAX_TOKENS  MAX_TOKENS when neither the request nor the checkpoint's generation
                 config says it; the other defaults come from generation.json.

All requests of one call are generated as one batch (see textgen.py).

Observability (lmo_payloads.py and lmo_drift.py, shipped beside this file): sampled payload
records (spec.logging.payloads) and the input drift metrics (prompt token counts), see
lmo_runtime.payloads and lmo_runtime.drift; `observability()` is shared with the streaming
model.
"""

import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lmo_bls  # noqa: E402
import lmo_drift  # noqa: E402
import lmo_payloads  # noqa: E402
import textgen  # noqa: E402


class BlsDecoder:
    """The decoder as another Triton model, called through lmo_bls: logits come back as
    numpy in CPU memory, the presents as Tensors fed to the next step unchanged."""

    def __init__(self, model_name, spec):
        self.model_name = model_name
        self.spec = spec
        self.past = textgen.past_names(spec["n_layer"])
        self.presents = textgen.present_names(spec["n_layer"])
        self.outputs = ["logits", *self.presents]

    def __call__(self, input_ids, attention_mask, position_ids, past):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids, **dict(zip(self.past, past))}
        logits, *presents = lmo_bls.call(pb_utils, self.model_name, inputs, self.outputs,
                                         keep=set(self.presents))
        return logits, presents


def make_generator(args):
    """The Generator described by this model's config parameters."""
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    repository = os.path.dirname(args["model_repository"].rstrip("/"))
    assets = os.path.join(
        repository, params.get("ASSETS_MODEL") or config["name"], args["model_version"]
    )
    spec = textgen.load_spec(assets)
    defaults = textgen.default_params(spec, int(params.get("DEFAULT_MAX_TOKENS", "32")))
    if params.get("ENGINE", "onnxruntime") == "bls":
        decoder = BlsDecoder(params["DECODER_MODEL"], spec)
        return textgen.Generator(decoder, textgen.load_tokenizer(assets), spec), defaults
    device = None
    if args.get("model_instance_kind") == "GPU":
        device = int(args["model_instance_device_id"])
    generator = textgen.ort_generator(
        assets, threads=int(params.get("ORT_THREADS", "0")), device_id=device
    )
    return generator, defaults


def observability(args, tokenizer):
    """(payload logger or None, its metrics, drift metrics) of this model."""
    payloads, metrics = lmo_payloads.for_model(pb_utils, args, "text-generation")
    here = os.path.join(args["model_repository"], args["model_version"])
    drift = lmo_drift.TritonDrift(pb_utils, args["model_name"], here)
    drift.unk_id = lmo_drift.unknown_id(tokenizer)
    return payloads, metrics, drift


def observe_prompts(drift, tokenizer, prompts):
    """Token counts of the prompts into the drift metrics (one extra tokenization)."""
    if prompts:
        encodings = tokenizer.encode_batch(prompts, add_special_tokens=False)
        drift.observe(*lmo_drift.token_counts(encodings, drift.unk_id))


def optional_inputs(request):
    out = {}
    for name in textgen.PARAM_INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            out[name] = tensor.as_numpy()
    return out


class TritonPythonModel:
    def initialize(self, args):
        self.generator, self.defaults = make_generator(args)
        self.payloads, self.payload_metrics, self.drift = observability(
            args, self.generator.tokenizer)

    def finalize(self):
        if self.payloads is not None:
            self.payloads.close()

    def execute(self, requests):
        began = time.perf_counter()
        prompts, params, spans, shapes, errors = [], [], [], [], {}
        for i, request in enumerate(requests):
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            shapes.append(raw.shape)  # [batch, 1], or [1] when the model does not batch
            try:
                texts = textgen.texts_from_input(raw)
                rows = textgen.with_request_parameters(
                    textgen.params_from_inputs(optional_inputs(request), len(texts),
                                               self.defaults), request.parameters())
            except ValueError as exc:
                errors[i] = str(exc)
                spans.append((len(prompts), len(prompts)))
                continue
            spans.append((len(prompts), len(prompts) + len(texts)))
            prompts += texts
            params += rows
        observe_prompts(self.drift, self.generator.tokenizer, prompts)
        outputs = self.generator.generate(prompts, params) if prompts else []
        responses = []
        for i, (start, end) in enumerate(spans):
            if i in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[i])))
                continue
            text = np.array([t.encode("utf-8") for t in outputs[start:end]], dtype=np.object_)
            text = text.reshape(shapes[i])
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT_OUTPUT", text)]))
        if self.payloads is not None:
            self._log_payloads(requests, prompts, outputs, spans, errors, began)
        return responses

    def _log_payloads(self, requests, prompts, outputs, spans, errors, began):
        latency_ms = (time.perf_counter() - began) * 1000.0
        for i, (request, (start, end)) in enumerate(zip(requests, spans)):
            if not self.payloads.sampled():
                continue
            texts, generated = prompts[start:end], outputs[start:end]
            self.payloads.log(
                request_id=request.request_id(),
                text=texts[0] if len(texts) == 1 else texts,
                output=None if i in errors else {
                    "text": generated[0] if len(generated) == 1 else generated},
                latency_ms=latency_ms, error=errors.get(i))
