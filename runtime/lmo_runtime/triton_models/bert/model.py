"""Triton Python-backend entry model for encoder tasks (shipped into every encoder artifact).

Input TEXT (STRING, one text per batch row). Outputs by task, per row:
feature-extraction EMBEDDING (FP32 [hidden]);
text-classification LABEL (BYTES) and SCORE (FP32), shape [labels]: every label sorted by
score, best first, or the first top_k of them;
fill-mask TOKEN (BYTES), SCORE (FP32), SEQUENCE (BYTES), shape [masks, top_k]: for each
mask of the text (in order) the top_k candidates, best first (top_k 5 unless asked); the
SEQUENCE of candidate j at mask i is the text with that candidate at mask i and every other
mask filled with its best candidate. Rows of one request with fewer masks than the others
are padded with "" / 0.0.

The optional request parameter `top_k` (KServe v2 `"parameters": {"top_k": N}`, an
integer >= 1) picks how many candidates; text-classification gives every label when it is
larger than their number, fill-mask refuses more than the artifact kept (fill_mask_top_k).

The texts of all requests of one `execute` call are tokenized, right-padded to one length and
run through the ONNX model in a single call, then split back per request: that is where
Triton's dynamic batching pays off on CPU. A request that cannot be answered (no [MASK], or
a [MASK] that truncation to max_length cut off) gets its own error response; the others of
the call are answered. The ONNX model runs here with onnxruntime (`runner: ort`,
for tritonservers without the ONNX Runtime backend) or in a sibling model through BLS
(`runner: bls`, the ONNX Runtime backend on GPU). Settings come from lmo_model.json written
at conversion. Only numpy, tokenizers and (for `ort`) onnxruntime are needed in the server.

Observability (lmo_payloads.py and lmo_drift.py, shipped beside this file): sampled payload
records (spec.logging.payloads) and the input drift metrics, see lmo_runtime.payloads and
lmo_runtime.drift.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        here = Path(args["model_repository"]) / args["model_version"]
        self.meta = json.loads((here / "lmo_model.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(here / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=int(self.meta["max_length"]))
        self.task = self.meta["task"]
        self._observe_init(args, here)
        self.session = None
        if self.meta["runner"] == "ort":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            threads = int(os.environ.get("LMO_ORT_THREADS", "0"))
            if threads:
                opts.intra_op_num_threads = threads
            # Busy-waiting worker threads burn a pod's CPU quota (CFS throttling) and, on a
            # shared machine, the cores other processes need; LMO_ORT_SPIN=1 re-enables it.
            if os.environ.get("LMO_ORT_SPIN", "0") != "1":
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            providers = ["CPUExecutionProvider"]
            if args.get("model_instance_kind") == "GPU" and (
                "CUDAExecutionProvider" in ort.get_available_providers()
            ):
                providers = [
                    ("CUDAExecutionProvider", {"device_id": int(args["model_instance_device_id"])}),
                    "CPUExecutionProvider",
                ]
            if providers == ["CPUExecutionProvider"]:
                # what the converter scored the model with (e.g. fusions onnxruntime's CPU
                # kernels run slower); absent from artifacts of earlier converters
                for key, value in self.meta.get("session_config", {}).items():
                    opts.add_session_config_entry(key, value)
            self.session = ort.InferenceSession(
                str(here / self.meta["onnx_model"]), opts, providers=providers
            )
            self.input_names = {i.name for i in self.session.get_inputs()}

    def _observe_init(self, args, here):
        """Payload logger and drift metrics (lmo_payloads / lmo_drift beside this file)."""
        sys.path.insert(0, str(here))
        import lmo_drift
        import lmo_payloads

        self.payloads, self.payload_metrics = lmo_payloads.for_model(pb_utils, args, self.task)
        self.drift = lmo_drift.TritonDrift(pb_utils, args["model_name"], here,
                                           embeddings=self.task == "feature-extraction")
        self.unk_id = lmo_drift.unknown_id(self.tokenizer)
        self.token_counts = lmo_drift.token_counts

    def finalize(self):
        if self.payloads is not None:
            self.payloads.close()

    # ------------------------------------------------------------------ model call

    def _run(self, feed):
        if self.session is not None:
            feed = {k: v for k, v in feed.items() if k in self.input_names}
            return self.session.run(self.meta["outputs"], feed)
        import lmo_bls  # beside this file: outputs in CPU memory, also from a GPU model

        return lmo_bls.call(pb_utils, self.meta["onnx_model"], feed, self.meta["outputs"])

    def _encode(self, encs):
        """Right-padded model inputs (the ones the graph takes) for the encodings `encs`."""
        length = max(len(e.ids) for e in encs)
        pad = int(self.meta["pad_token_id"])
        ids = np.full((len(encs), length), pad, dtype=np.int64)
        mask = np.zeros((len(encs), length), dtype=np.int64)
        types = np.zeros((len(encs), length), dtype=np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = 1
            types[i, :n] = e.type_ids
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: feed[k] for k in self.meta["inputs"]}

    def _run_batched(self, feed):
        """One model call, split into chunks of max_batch_size for the BLS model."""
        limit = int(self.meta["max_batch_size"]) if self.session is None else 0
        n = len(feed["input_ids"])
        if not limit or n <= limit:
            return self._run(feed)
        parts = [self._run({k: v[i : i + limit] for k, v in feed.items()}) for i in range(0, n, limit)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]

    # ------------------------------------------------------------------ execute

    def execute(self, requests):
        began = time.perf_counter()
        encodings, counts, errors, texts, ks = [], [], [], [], []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            batch = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw]
            texts.append(batch)
            error, k = self._top_k(request)
            encs = []
            if error is None:
                error, encs = self._tokenize(batch)
            errors.append(error)
            ks.append(k)
            if error is None:
                encodings += encs
            counts.append(0 if error else len(batch))
        answers = [None] * len(requests)
        if encodings:
            self.drift.observe(*self.token_counts(encodings, self.unk_id))
            feed = self._encode(encodings)
            out = self._run_batched(feed)
            if self.task == "feature-extraction":
                self.drift.observe_embeddings(out[0])
            start = 0
            for i, (count, error) in enumerate(zip(counts, errors)):
                if error is None:
                    rows = slice(start, start + count)
                    answers[i] = self._postprocess(out, feed["input_ids"], rows, ks[i])
                    start += count
        responses = []
        for answer, error in zip(answers, errors):
            if error is not None:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error)))
                continue
            tensors = [pb_utils.Tensor(name, value) for name, value in answer]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        if self.payloads is not None:
            self._log_payloads(requests, texts, errors, answers, began)
        return responses

    def _top_k(self, request):
        """(error, k) from the request parameter top_k; k is None when it is absent."""
        try:
            params = json.loads(request.parameters() or "{}")
        except (AttributeError, ValueError):
            params = {}
        if "top_k" not in params:
            return None, None
        k = params["top_k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            return f"parameter top_k must be an integer >= 1, got {json.dumps(k)}", None
        if self.task == "fill-mask":
            limit = self._fill_mask_limit()
            if k > limit:
                return (f"parameter top_k must be at most {limit} for this fill-mask model "
                        f"(the candidates it keeps per mask), got {k}"), None
        return None, k

    def _fill_mask_limit(self):
        return int(self.meta["fill_mask_top_k"])

    def _log_payloads(self, requests, texts, errors, answers, began):
        """One record per sampled request: its text, an output summary, the call's latency."""
        latency_ms = (time.perf_counter() - began) * 1000.0
        for request, batch, error, answer in zip(requests, texts, errors, answers):
            if not self.payloads.sampled():
                continue
            summary = None if error is not None else self._summary(answer)
            self.payloads.log(request_id=request.request_id(),
                              text=batch[0] if len(batch) == 1 else batch,
                              output=summary, latency_ms=latency_ms, error=error)

    def _summary(self, answer):
        """The best label/score, token/score/sequence (of every mask) or the embedding norm
        of one request's rows."""
        values = dict(answer)
        if self.task == "feature-extraction":
            norms = np.linalg.norm(values["EMBEDDING"].reshape(len(values["EMBEDDING"]), -1),
                                   axis=1)
            out = {"embeddingNorm": [round(float(n), 5) for n in norms]}
        else:
            out = {}
            for name, value in values.items():
                flat = value[..., 0].reshape(-1)  # the best candidate of each row / mask
                out[name.lower()] = [
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else round(float(v), 6)
                    for v in flat
                ]
        return {k: v[0] if len(v) == 1 else v for k, v in out.items()}

    def _tokenize(self, batch):
        """(error, encodings) for one request's texts. A request that cannot be answered gets
        its own error response; the other requests of the execute() call are still run."""
        if not batch:
            return "TEXT is empty", []
        token = self.meta["mask_token"]
        if self.task == "fill-mask":
            bad = [t for t in batch if token not in t]
            if bad:
                return f"TEXT must contain the mask token {token} (got {bad[0][:80]!r})", []
        encs = self.tokenizer.encode_batch(batch)
        if self.task == "fill-mask":
            mask_id = int(self.meta["mask_token_id"])
            for text, enc in zip(batch, encs):
                if mask_id not in enc.ids:  # truncation cut the text before its mask
                    return (
                        f"the {token} token is past the model's {self.meta['max_length']}-token "
                        f"context; shorten the text (got {text[:80]!r}...)"
                    ), []
        return None, encs

    def _postprocess(self, out, input_ids, rows, k):
        """The output tensors of one request (its `rows` of the call), top_k `k` or None."""
        if self.task == "feature-extraction":
            return [("EMBEDDING", out[0][rows].astype(np.float32))]
        if self.task == "text-classification":
            probs = out[0][rows]
            order = np.argsort(-probs, axis=-1, kind="stable")[:, : k or probs.shape[-1]]
            labels = np.array([label.encode() for label in self.meta["labels"]], dtype=np.object_)
            return [
                ("LABEL", labels[order]),
                ("SCORE", np.take_along_axis(probs, order, axis=-1).astype(np.float32)),
            ]
        k = min(k or 5, self._fill_mask_limit())
        token_ids, token_scores = out[0][rows], out[1][rows]
        mask_id = int(self.meta["mask_token_id"])
        per_row = []
        for row, ids, probs in zip(input_ids[rows], token_ids, token_scores):
            positions = np.flatnonzero(row == mask_id)
            best = row.copy()
            best[positions] = ids[positions, 0]
            tokens, scores, sequences = [], [], []
            for pos in positions:
                tokens.append([self.tokenizer.decode([int(t)]).strip().encode()
                               for t in ids[pos, :k]])
                scores.append([float(p) for p in probs[pos, :k]])
                seqs = []
                for t in ids[pos, :k]:
                    filled = best.copy()
                    filled[pos] = t
                    seqs.append(self.tokenizer.decode([int(x) for x in filled]).encode())
                sequences.append(seqs)
            per_row.append((tokens, scores, sequences))
        masks = max(len(t) for t, _, _ in per_row)
        shape = (len(per_row), masks, k)
        token_out = np.full(shape, b"", dtype=np.object_)
        score_out = np.zeros(shape, dtype=np.float32)
        sequence_out = np.full(shape, b"", dtype=np.object_)
        for i, (tokens, scores, sequences) in enumerate(per_row):
            n = len(tokens)
            token_out[i, :n] = np.array(tokens, dtype=np.object_).reshape(n, k)
            score_out[i, :n] = scores
            sequence_out[i, :n] = np.array(sequences, dtype=np.object_).reshape(n, k)
        return [("TOKEN", token_out), ("SCORE", score_out), ("SEQUENCE", sequence_out)]
