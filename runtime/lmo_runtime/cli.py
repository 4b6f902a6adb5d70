"""`lmo convert`: checkpoint -> Triton model repository, behind the accuracy gate.

    lmo convert CHECKPOINT --task T --precision P --out DIR_OR_URI [...]

Exit status: 0 accepted (or served from the cache), 3 refused by the accuracy gate (the
refusal manifest is printed and written to --manifest-out), 2 bad input (the message names
the field and the fix), 1 an unexpected failure (one line naming the exception; set
LMO_DEBUG=1 for the traceback). Only an accepted conversion writes an artifact. `--out` may be a directory or an artifact-store URI (file://,
pvc://, s3://): the artifact is built locally, then published with its manifest last.
`--manifest-out PATH` (e.g. /dev/termination-log) receives a compact JSON summary under
4 KiB that the operator reads back from the Job's pod.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from lmo_runtime.errors import ConversionError, GateRefused
from lmo_runtime.manifest import ConversionRequest, Evaluation, Manifest

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_REFUSED = 0, 1, 2, 3
SUMMARY_LIMIT = 4096
# The summary size golden inputs may grow it to (the rest of SUMMARY_LIMIT is margin).
GOLDEN_SUMMARY_BUDGET = 3072
TASKS = ["feature-extraction", "fill-mask", "text-classification", "text-generation"]
PRECISIONS = ["fp32", "fp16", "int8", "int8-static"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint URI or directory (s3://, pvc://, https://, file://, path)")
    parser.add_argument("--task", choices=TASKS, help="what the served model does (required unless --print-digest)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default), fp16 (GPU serving), int8 (dynamic), "
                             "int8-static (calibrated)")
    parser.add_argument("--out", help="artifact directory or store URI (file://, pvc://, s3://)")
    parser.add_argument("--sha256", help="expected checkpoint digest (see --print-digest)")
    parser.add_argument("--min-score", type=float, default=0.99, help="accuracy gate threshold (0..1, default 0.99)")
    parser.add_argument("--fallback", action="store_true",
                        help="on a gate refusal try the next safer precision")
    parser.add_argument("--calibration-samples", type=int, default=64,
                        help="texts used to calibrate int8-static (default 64)")
    parser.add_argument("--backend", choices=["onnxruntime", "python"], default="onnxruntime",
                        help="Triton backend running the ONNX model: onnxruntime (default, "
                             "official Triton images) or python (onnxruntime inside Triton's "
                             "Python backend, for builds without the onnxruntime backend such "
                             "as the nvidia-pytriton tritonserver)")
    parser.add_argument("--max-batch-size", type=int, default=16,
                        help="Triton max_batch_size (default 16; 0 disables batching)")
    parser.add_argument("--max-queue-delay-us", type=int, default=500,
                        help="dynamic batching max queue delay (default 500)")
    parser.add_argument("--gpus", type=int, default=0, help="GPUs per Triton replica (0 = CPU)")
    parser.add_argument("--accelerator", choices=["cuda", "tensorrt"],
                        help="GPU execution of the ONNX Runtime backend models: cuda (default) "
                             "or tensorrt (engines built at load, cached; needs --gpus)")
    parser.add_argument("--queue-max-size", type=int,
                        help="Triton queue policy: reject beyond this many waiting requests")
    parser.add_argument("--queue-timeout-us", type=int,
                        help="Triton queue policy: reject after waiting this long (microseconds)")
    parser.add_argument("--evaluation-uri",
                        help="your own evaluation data, JSON Lines (s3://, file://, pvc://, "
                             "configmap://NAME/KEY): scores the accuracy gate and calibrates "
                             "int8-static instead of the built-in English sentences")
    parser.add_argument("--evaluation-field", default="text",
                        help="field of each record holding the text (default text)")
    parser.add_argument("--evaluation-limit", type=int, default=512,
                        help="use at most this many records (default 512)")
    parser.add_argument("--evaluation-sha256", help="expected sha256 of the evaluation file")
    parser.add_argument("--cache-dir", type=Path, default=_default_cache(),
                        help="content cache of accepted artifacts (default $LMO_CACHE_DIR/artifacts)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or fill the cache")
    parser.add_argument("--manifest-out", type=Path,
                        help="also write a compact JSON summary here (e.g. /dev/termination-log)")
    parser.add_argument("--print-digest", action="store_true",
                        help="print the checkpoint digest (for checkpoint.sha256) and exit")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _default_cache() -> Path:
    root = os.environ.get("LMO_CACHE_DIR") or Path.home() / ".cache" / "lmo"
    return Path(root) / "artifacts"


def request_from_args(args: argparse.Namespace) -> ConversionRequest:
    from pydantic import ValidationError

    from lmo_runtime.store import local_path

    checks = [
        ("--min-score", 0.0 <= args.min_score <= 1.0, "must be between 0 and 1 (e.g. 0.99)"),
        ("--calibration-samples", args.calibration_samples >= 1, "must be at least 1"),
        ("--max-batch-size", args.max_batch_size >= 0, "must be >= 0 (0 disables batching)"),
        ("--max-queue-delay-us", args.max_queue_delay_us >= 0, "must be >= 0"),
        ("--gpus", args.gpus >= 0, "must be >= 0 (0 serves on CPU)"),
        ("--queue-max-size", args.queue_max_size is None or args.queue_max_size >= 1,
         "must be at least 1"),
        ("--queue-timeout-us", args.queue_timeout_us is None or args.queue_timeout_us >= 1,
         "must be at least 1"),
        ("--evaluation-limit", args.evaluation_limit >= 1, "must be at least 1"),
        ("--evaluation-field", bool(args.evaluation_field), "must name a field (e.g. text)"),
    ]
    for flag, ok, why in checks:
        if not ok:
            raise ConversionError(f"{flag} {why}")
    uri = args.checkpoint
    if "://" not in uri:  # a plain path: make it absolute so the cache key is stable
        uri = str(Path(uri).resolve())
    elif uri.startswith("file://"):
        uri = str(local_path(uri).resolve())
    try:
        return ConversionRequest(
            checkpoint_uri=uri,
            checkpoint_sha256=args.sha256.lower() if args.sha256 else None,
            task=args.task,
            precision=args.precision,
            min_score=args.min_score,
            fallback=args.fallback,
            calibration_samples=args.calibration_samples,
            backend=args.backend,
            max_batch_size=args.max_batch_size,
            max_queue_delay_microseconds=args.max_queue_delay_us,
            gpus=args.gpus,
            accelerator=args.accelerator,
            queue_max_size=args.queue_max_size,
            queue_timeout_microseconds=args.queue_timeout_us,
            evaluation=_evaluation(args),
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConversionError(f"--{field.replace('_', '-')}: {first['msg']}") from None


def _evaluation(args: argparse.Namespace) -> Evaluation | None:
    from lmo_runtime.store import local_path

    if not args.evaluation_uri:
        return None
    uri = args.evaluation_uri
    if "://" not in uri:  # a plain path: absolute, so that the cache key is stable
        uri = f"file://{Path(uri).resolve()}"
    elif uri.startswith("file://"):
        uri = f"file://{local_path(uri).resolve()}"
    return Evaluation(uri=uri, field=args.evaluation_field, limit=args.evaluation_limit,
                      sha256=args.evaluation_sha256.lower() if args.evaluation_sha256 else None)


def summary(manifest: Manifest, uri: str) -> dict[str, Any]:
    """A compact JSON-able summary (no golden outputs, no file list) under 4 KiB.

    An accepted artifact's summary carries its golden inputs (`goldenInputs`, texts only):
    the operator replays them against a candidate and the stable version during a rollout
    (`maxOutputDrift`) and cannot read the manifest from the artifact store itself. They are
    bounded (`Manifest.golden_inputs`: 8 inputs of at most 200 characters; the last ones
    dropped until the summary fits in `GOLDEN_SUMMARY_BUDGET` bytes), so the summary stays
    well under the kubelet's 4 KiB termination-message limit.
    """
    out: dict[str, Any] = {
        "key": manifest.key,
        "accepted": manifest.accepted,
        "uri": uri,
        "task": manifest.task,
        "architecture": manifest.architecture,
        "precision": manifest.precision,
        "entryModel": manifest.entry_model,
        "checkpointSha256": manifest.checkpoint_sha256,
        "sha256": manifest.digest() if manifest.accepted else None,
        "sizeBytes": manifest.size_bytes,
        "score": None if manifest.score is None else round(manifest.score.value, 6),
        "metric": None if manifest.score is None else manifest.score.metric,
        "attempts": [
            {"metric": s.metric, "value": round(s.value, 6), "passed": s.passed}
            for s in manifest.attempts
        ],
        "reason": manifest.reason,
    }
    if manifest.evaluation is not None:
        out["evaluation"] = manifest.evaluation.summary()
    if manifest.shared_memory_bytes:
        out["sharedMemoryBytes"] = manifest.shared_memory_bytes
    text = json.dumps(out, separators=(",", ":"))
    if len(text.encode()) > SUMMARY_LIMIT:
        out["reason"] = manifest.reason[:1000]
        out["attempts"] = out["attempts"][-4:]
    if manifest.accepted:
        inputs = manifest.golden_inputs()
        while inputs and _size(out | {"goldenInputs": inputs}) > GOLDEN_SUMMARY_BUDGET:
            inputs.pop()
        if inputs:
            out["goldenInputs"] = inputs
    return out


def _size(data: dict[str, Any]) -> int:
    return len(json.dumps(data, separators=(",", ":")).encode())


def _write_summary(path: Path | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    text = json.dumps(data, separators=(",", ":"))
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text[:SUMMARY_LIMIT])


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from lmo_runtime import store

    try:
        if args.print_digest:
            with tempfile.TemporaryDirectory(prefix="lmo-digest-") as tmp:
                path = store.local_path(args.checkpoint)
                if path is None or not path.is_dir():
                    path = store.fetch(args.checkpoint, Path(tmp) / "ckpt", progress=not args.quiet)
                print(store.checkpoint_digest(path))
            return EXIT_OK
        if not args.task or not args.out:
            raise ConversionError("--task and --out are required (unless --print-digest)")
        request = request_from_args(args)
        return _convert(request, args)
    except GateRefused as err:
        manifest = err.manifest
        print(f"lmo convert: refused: {err}", file=sys.stderr)
        if manifest is not None:
            data = summary(manifest, args.out)
            print(json.dumps(data, indent=2))
            _write_summary(args.manifest_out, data)
        return EXIT_REFUSED
    except ConversionError as err:
        print(f"lmo convert: error: {err}", file=sys.stderr)
        _write_summary(args.manifest_out, {"accepted": False, "reason": str(err)[:3000]})
        return EXIT_BAD_INPUT
    except Exception as err:  # a bug or a checkpoint no check foresaw: one line, not a traceback
        reason = f"{type(err).__name__}: {' '.join(str(err).split())[:1000]}"
        debug = os.environ.get("LMO_DEBUG") == "1"
        if debug:
            traceback.print_exc()
        print(f"lmo convert: error: {reason}"
              + ("" if debug else " (rerun with LMO_DEBUG=1 for the traceback)"), file=sys.stderr)
        _write_summary(args.manifest_out, {"accepted": False, "reason": reason[:3000]})
        return EXIT_FAILED


def _convert(request: ConversionRequest, args: argparse.Namespace) -> int:
    from lmo_runtime import store
    from lmo_runtime.convert import convert

    cache = None if args.no_cache else args.cache_dir
    target = store.local_path(args.out)
    if target is not None:
        manifest = convert(request, target, cache_dir=cache, progress=not args.quiet)
    else:
        if store.scheme(args.out) in ("https", "http"):
            raise ConversionError("--out: artifacts are published to a directory, file://, pvc:// or s3://")
        publish_env = store.store_env()
        manifest = _published(args.out, request, publish_env)
        if manifest is None:
            with tempfile.TemporaryDirectory(prefix="lmo-out-") as tmp:
                local = Path(tmp) / "artifact"
                manifest = convert(request, local, cache_dir=cache, progress=not args.quiet)
                store.put(local, args.out, env=publish_env)
    data = summary(manifest, args.out)
    if not args.quiet:
        print(json.dumps(data, indent=2))
    _write_summary(args.manifest_out, data)
    return EXIT_OK


def _published(uri: str, request: ConversionRequest, env: dict[str, str]) -> Manifest | None:
    """The accepted artifact for this request already at `uri` (a retried Job, a second
    operator replica): publishing it again would only cost time."""
    from lmo_runtime import store

    text = store.read_manifest(uri, env=env)
    if text is None:
        return None
    try:
        manifest = Manifest.model_validate_json(text)
    except ValueError:
        return None
    return manifest if manifest.accepted and manifest.key == request.key() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmo convert", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
