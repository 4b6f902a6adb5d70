"""Triton Python-backend model `text_generation_stream` (decoupled): one response per token.

Same inputs and parameters as `text_generation` (its model.py is copied beside this file as
`text_generation_model.py`); each request must carry one prompt. Every response holds the
next piece of text in TEXT_OUTPUT (concatenated they equal `text_generation`'s output for
the same request); the last one is an empty response with the FINAL flag.

`execute` reads each request's inputs and returns at once; the generation runs on a pool of
STREAM_WORKERS threads (default 4) that send the responses, so concurrent streams progress
together instead of queueing behind the longest one (onnxruntime releases the GIL while it
computes). `finalize` waits for the streams in flight.
"""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import textgen  # noqa: E402
from text_generation_model import make_generator, optional_inputs  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.generator, self.defaults = make_generator(args)
        params = json.loads(args["model_config"]).get("parameters", {})
        workers = int(params.get("STREAM_WORKERS", {}).get("string_value", "4"))
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers),
                                       thread_name_prefix="lmo-stream")

    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            try:
                texts = textgen.texts_from_input(raw)
                if len(texts) != 1:
                    raise ValueError(f"send one prompt per streaming request, got {len(texts)}")
                (params,) = textgen.params_from_inputs(optional_inputs(request), 1, self.defaults)
            except ValueError as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=final)
                continue
            self.pool.submit(self._stream, sender, texts[0], params, final, raw.shape)
        return None

    def _stream(self, sender, prompt, params, final, shape):
        try:
            for piece in self.generator.stream(prompt, params):
                out = np.array([piece.encode("utf-8")], dtype=np.object_).reshape(shape)
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT_OUTPUT", out)]))
        except Exception as exc:  # noqa: BLE001 - reported to the client, stream closed
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                        flags=final)
            return
        sender.send(flags=final)

    def finalize(self):
        self.pool.shutdown(wait=True)
