"""Triton Python-backend model `text_generation_stream` (decoupled): one response per token.

Same inputs and parameters (request parameter `add_special_tokens` included) as `text_generation` (its model.py is copied beside this file as
`text_generation_model.py`); each request must carry one prompt. Every response holds the
next piece of text in TEXT_OUTPUT (concatenated they equal `text_generation`'s output for
the same request); the last one is an empty response with the FINAL flag.

`execute` reads each request's inputs and returns at once; the generation runs on a pool of
STREAM_WORKERS threads (default 4) that send the responses, so concurrent streams progress
together instead of queueing behind the longest one (onnxruntime releases the GIL while it
computes). `finalize` waits for the streams in flight.

A sampled stream is logged once it ends (the whole generated text; lmo_runtime.payloads),
and prompts feed the input drift metrics, as in `text_generation`.
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import textgen  # noqa: E402
from text_generation_model import (  # noqa: E402
    make_generator,
    observability,
    observe_prompts,
    optional_inputs,
)


class TritonPythonModel:
    def initialize(self, args):
        self.generator, self.defaults = make_generator(args)
        params = json.loads(args["model_config"]).get("parameters", {})
        workers = int(params.get("STREAM_WORKERS", {}).get("string_value", "4"))
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                       thread_name_prefix="lmo-stream")
        self.payloads, self.payload_metrics, self.drift = observability(
            args, self.generator.tokenizer)

    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            began = time.perf_counter()
            sender = request.get_response_sender()
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            # None: not sampled; else what the record needs once the stream ends
            log = None
            if self.payloads is not None and self.payloads.sampled():
                log = {"request_id": request.request_id(), "began": began}
            try:
                texts = textgen.texts_from_input(raw)
                if len(texts) != 1:
                    raise ValueError(f"send one prompt per streaming request, got {len(texts)}")
                (params,) = textgen.with_request_parameters(
                    textgen.params_from_inputs(optional_inputs(request), 1, self.defaults),
                    request.parameters())
            except ValueError as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=final)
                if log is not None:
                    self._log(log, [t.decode("utf-8", "replace") if isinstance(t, bytes)
                                    else str(t) for t in raw.reshape(-1)], None, str(exc))
                continue
            observe_prompts(self.drift, self.generator.tokenizer, texts)
            self.pool.submit(self._stream, sender, texts[0], params, final, raw.shape, log)
        return None

    def _stream(self, sender, prompt, params, final, shape, log=None):
        pieces = []
        try:
            for piece in self.generator.stream(prompt, params):
                pieces.append(piece)
                out = np.array([piece.encode("utf-8")], dtype=np.object_).reshape(shape)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT_OUTPUT", out)]))
        except Exception as exc:  # noqa: BLE001 - reported to the client, stream closed
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                        flags=final)
            if log is not None:
                self._log(log, prompt, None, str(exc))
            return
        sender.send(flags=final)
        if log is not None:
            self._log(log, prompt, {"text": "".join(pieces)}, None)

    def _log(self, log, prompt, output, error):
        self.payloads.log(request_id=log["request_id"], text=prompt, output=output,
                          latency_ms=(time.perf_counter() - log["began"]) * 1000.0,
                          error=error)

    def finalize(self):
        self.pool.shutdown(wait=True)
        if self.payloads is not None:
            self.payloads.close()
