"""The conversion pipeline: checkpoint -> ONNX -> (INT8) -> accuracy gate -> Triton repository.

    fetch -> digest check -> load -> export -> optimize -> score/gate -> golden -> repository
    -> manifest -> publish

`convert()` writes `out_dir/manifest.json` and `out_dir/model_repository/`. The output is
staged beside `out_dir` and renamed into place with the manifest written last, so a reader
never sees half an artifact. A refusal (digest mismatch, accuracy gate...) publishes nothing:
it raises `ConversionError` (`GateRefused` with the `accepted=false` manifest for the gate).

Content cache: an accepted artifact is also kept under `cache_dir/<request.key()>/`; the same
request is answered from there without loading torch (well under a second). Besides the
request key, the cache entry records the checkpoint digest, and a `file://` checkpoint whose
files changed since is converted again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from lmo_runtime.errors import ConversionError, GateRefused
from lmo_runtime.manifest import (
    MANIFEST_FILE,
    REPOSITORY_DIR,
    ConversionRequest,
    FileDigest,
    Manifest,
    Score,
)
from lmo_runtime.progress import Steps

if TYPE_CHECKING:
    from lmo_runtime.families import Family

__all__ = ["ConversionError", "GateRefused", "convert", "precisions_to_try", "load_manifest"]

# From least to most faithful (the same order as lmo.api.PRECISION_FALLBACK_ORDER).
FALLBACK_ORDER = ["int8-static", "int8", "fp16", "fp32"]
MODEL_SUFFIXES = (".onnx", ".onnx.data", ".data")
# In a cache entry only: the local checkpoint's stat fingerprint and digest at conversion, so a
# hit on an unchanged multi-GB checkpoint does not re-hash it.
SOURCE_FILE = ".lmo-source.json"


def precisions_to_try(request: ConversionRequest, supported: tuple[str, ...] | None = None
                      ) -> list[str]:
    """The requested precision, then (with fallback) each safer one.

    fp16 is skipped when serving on CPU (gpus == 0): CPU kernels run it through casts, slower
    than fp32 with no size benefit worth the accuracy risk. With fallback, precisions the
    family cannot produce (not in `supported`, e.g. int8-static for GPT-2) are skipped too;
    without it, `_check_precision` has refused such a request before any work. On GPUs
    (gpus > 0) int8 and int8-static are skipped (lmo_runtime.gpu: they would run on the
    pod's CPU); without fallback `_check_gpu` refuses them.
    """
    if not request.fallback:
        return [request.precision]
    from lmo_runtime.gpu import CPU_ONLY_PRECISIONS

    order = FALLBACK_ORDER[FALLBACK_ORDER.index(request.precision) :]
    order = [p for p in order if p == request.precision or p != "fp16" or request.gpus > 0]
    if request.gpus > 0:  # what a GPU would run on the pod's CPU (lmo_runtime.gpu)
        order = [p for p in order if p not in CPU_ONLY_PRECISIONS]
    return [p for p in order if supported is None or p in supported]


def _check_precision(request: ConversionRequest, family: Family) -> list[str]:
    """Refuse a precision the family cannot produce (without fallback), before the checkpoint
    is loaded; with fallback, return the skipped ones (the next safer precision is tried)."""
    unsupported = [p for p in precisions_to_try(request) if p not in family.precisions]
    if unsupported and not request.fallback:
        raise ConversionError(
            f"precision {request.precision} is not supported for {family.name} checkpoints "
            f"(it supports {', '.join(family.precisions)}); choose one of those in "
            "optimize.precision (--precision), or set accuracyGate.fallback: true "
            "(--fallback) to try the next safer one"
        )
    return unsupported


def _check_gpu(request: ConversionRequest, steps: Steps) -> None:
    """Refuse what a GPU would not run as asked (lmo_runtime.gpu), before any work: int8 and
    int8-static on GPUs (with fallback: skipped, the next precision a GPU runs is tried),
    and an accelerator the spec rules refuse too."""
    from lmo_runtime import gpu

    problem = gpu.precision_problem(request.precision, request.gpus > 0)
    if problem and request.fallback:
        steps.note(f"{request.precision}: cannot serve on GPUs, skipped (fallback): "
                   f"{problem}")
        problem = None
    problem = problem or gpu.accelerator_problem(
        request.task, request.accelerator or "cuda", request.gpus > 0, request.backend)
    if problem:
        raise ConversionError(problem)


def load_manifest(artifact_dir: Path) -> Manifest | None:
    path = Path(artifact_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    return Manifest.model_validate_json(path.read_text())


def file_digests(root: Path) -> list[FileDigest]:
    """sha256 and size of every file under `root` except the manifest, sorted by path."""
    from lmo_runtime.store import file_sha256

    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MANIFEST_FILE:
            rel = p.relative_to(root).as_posix()
            out.append(FileDigest(path=rel, sha256=file_sha256(p), size_bytes=p.stat().st_size))
    return out


def _check_out_dir(request: ConversionRequest, out_dir: Path, env: dict[str, str]) -> None:
    """Refuse an `out_dir` that publishing would destroy, before any work is done.

    Publishing replaces `out_dir` as a whole: it must be new, empty or an earlier artifact,
    and neither the local checkpoint directory nor inside it nor above it (an `--out` equal
    to the checkpoint would delete the checkpoint, one inside it would change its digest).
    """
    from lmo_runtime.store import check_replaceable, local_path

    src = local_path(request.checkpoint_uri, env)
    if src is not None:
        out, ckpt = Path(out_dir).resolve(), src.resolve()
        if out == ckpt or ckpt in out.parents or out in ckpt.parents:
            where = ("is" if out == ckpt else "is inside" if ckpt in out.parents
                     else "contains")
            raise ConversionError(
                f"--out {out_dir} {where} the checkpoint directory {src}; publishing there "
                "would delete or change the checkpoint. Choose an --out directory outside "
                "the checkpoint"
            )
    check_replaceable(Path(out_dir), "--out")


def _publish(stage: Path, out_dir: Path, flag: str = "--out") -> None:
    """Move a complete staged artifact to `out_dir` (replacing an older artifact only)."""
    from lmo_runtime.store import check_replaceable, swap_into

    out_dir = Path(out_dir)
    check_replaceable(out_dir, flag)
    swap_into(stage, out_dir)


def _copy_artifact(src: Path, out_dir: Path, flag: str = "--out") -> None:
    """Copy an artifact directory to `out_dir`, manifest last, through a staging dir."""
    from lmo_runtime.store import staging_dir

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = staging_dir(out_dir)
    shutil.copytree(src, stage, ignore=shutil.ignore_patterns(MANIFEST_FILE, SOURCE_FILE))
    shutil.copy2(src / MANIFEST_FILE, stage / MANIFEST_FILE)
    try:
        _publish(stage, out_dir, flag)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _unchanged(src: Path, entry: Path, manifest: Manifest) -> bool:
    """Whether the local checkpoint still has the digest the artifact was converted from:
    same stat fingerprint as recorded in the cache entry, else re-hashed."""
    from lmo_runtime.store import checkpoint_digest, checkpoint_fingerprint

    recorded = entry / SOURCE_FILE
    if recorded.is_file():
        try:
            source = json.loads(recorded.read_text())
        except ValueError:
            source = {}
        if (source.get("fingerprint") == checkpoint_fingerprint(src)
                and source.get("checkpoint_sha256") == manifest.checkpoint_sha256):
            return True
    return checkpoint_digest(src) == manifest.checkpoint_sha256


def _cached(
    request: ConversionRequest, key: str, cache_dir: Path | None, out_dir: Path,
    env: dict[str, str],
) -> Manifest | None:
    """An accepted artifact for this key already at `out_dir` or in the cache."""
    from lmo_runtime.store import local_path

    candidates = [Path(out_dir)]
    if cache_dir is not None:
        candidates.append(Path(cache_dir) / key)
    for where in candidates:
        try:
            manifest = load_manifest(where)
        except ValueError:
            continue
        if manifest is None or not manifest.accepted or manifest.key != key:
            continue
        # A local checkpoint can change in place under the same URI: re-check its digest.
        src = local_path(request.checkpoint_uri, env)
        if src is not None and src.is_dir() and not _unchanged(src, where, manifest):
            continue
        # so can unpinned evaluation data (a pinned sha256 is part of the key)
        if request.evaluation is not None and not request.evaluation.sha256 and (
            manifest.evaluation is None or manifest.evaluation.sha256 != _evaluation_digest(
                request, env)):
            continue
        if where != Path(out_dir):
            _copy_artifact(where, Path(out_dir))
        return manifest
    return None


def _evaluation_digest(request: ConversionRequest, env: dict[str, str]) -> str | None:
    """sha256 of the evaluation data now, or None when it cannot be read (no cache hit then:
    the conversion reports the problem)."""
    from lmo_runtime import evaluation

    assert request.evaluation is not None
    try:
        return evaluation.load(request.evaluation, env).sha256
    except ConversionError:
        return None


def _refusal_message(request: ConversionRequest, tried: list[tuple[str, Score]],
                     skipped: list[str] | None = None) -> str:
    """Score, threshold, what was tried (and skipped as unsupported), and what to try next."""
    last_precision, last = tried[-1]
    tried_s = ", ".join(f"{p} {s.value:.4f}" for p, s in tried)
    if skipped:
        tried_s += f"; {', '.join(skipped)} not supported, skipped"
    safer = FALLBACK_ORDER[FALLBACK_ORDER.index(last_precision) + 1 :]
    hints = []
    if not request.fallback and safer:
        hints.append("set accuracyGate.fallback: true (--fallback) to try " + " -> ".join(safer))
    elif safer:
        hints.append(f"request a safer precision ({', '.join(safer)})")
    hints.append(f"or lower accuracyGate.minScore (--min-score) to at most {last.value:.4f}")
    data = ("the evaluation data" if request.evaluation is None
            else f"optimize.evaluation {request.evaluation.uri}")
    return (
        f"accuracy gate refused the artifact: {last.metric} {last.value:.4f} < minScore "
        f"{request.min_score} on {last.samples} held-out texts of {data} (tried {tried_s}); "
        + "; ".join(hints)
    )


def convert(
    request: ConversionRequest,
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    progress: bool = True,
    env: dict[str, str] | None = None,
) -> Manifest:
    """Convert `request.checkpoint_uri` into a Triton model repository at `out_dir`.

    Returns the accepted manifest. Raises ConversionError for bad input (message names the
    field and the fix; an `out_dir` that is not new, empty or an earlier artifact is refused
    first, see _check_out_dir) and GateRefused (carrying the `accepted=false` manifest) when every
    precision tried scores below `request.min_score`; in both cases nothing is written to
    `out_dir` or the cache.
    """
    from lmo_runtime import drift, evaluation, feedback, store
    from lmo_runtime.families import heldout_texts

    out_dir = Path(out_dir)
    env = dict(os.environ if env is None else env)
    key = request.key()
    steps = Steps(show=progress)
    _check_out_dir(request, out_dir, env)
    _check_gpu(request, steps)

    with steps.step("cache", key[:12]):
        hit = _cached(request, key, cache_dir, out_dir, env)
    if hit is not None:
        steps.note(f"cache hit: {out_dir}")
        return hit

    base = Manifest(key=key, request=request, accepted=False, task=request.task)
    user_data = None
    if request.evaluation is not None:  # bad evaluation data is refused before any work
        with steps.step("evaluation", request.evaluation.uri):
            user_data = evaluation.load(request.evaluation, env)
        steps.note(f"evaluation data: {len(user_data.texts)} records, sha256 "
                   f"{user_data.sha256[:12]}")
    with tempfile.TemporaryDirectory(prefix="lmo-convert-") as tmp:
        work = Path(tmp)
        with steps.step("fetch", request.checkpoint_uri):
            # a local directory (path, file://, mounted pvc://) is read in place: copying a
            # multi-GB checkpoint only to read it once would double the time and the disk
            local = store.local_path(request.checkpoint_uri, env)
            if local is not None and local.is_dir():
                ckpt_dir = local
            else:
                ckpt_dir = store.fetch(request.checkpoint_uri, work / "checkpoint", env=env,
                                       progress=progress)
        from lmo_runtime import checkpoint

        with steps.step("digest"):
            digest = store.checkpoint_digest(ckpt_dir)
            base.checkpoint_sha256 = digest
            checkpoint.verify_digest(digest, request.checkpoint_sha256)
        with steps.step("load", request.task):
            config = checkpoint.inspect(ckpt_dir)
            base.architecture = ", ".join(config.get("architectures") or [])
            from lmo_runtime.families import family_for

            family = family_for(config, request.task)
            skipped = _check_precision(request, family)
            for p in skipped:
                steps.note(f"{p}: not supported for {family.name} checkpoints, skipped (fallback)")
            loaded = family.load(ckpt_dir, request.task)
            base.architecture = loaded.architecture
        with steps.step("export", "onnx fp32"):
            exported = family.export(loaded, work / "export")
        steps.note(f"fp32 ONNX vs PyTorch max abs diff {exported.max_abs_diff:.2e}")

        calibrate = "int8-static" in precisions_to_try(request, family.precisions)
        texts, calibration, base.evaluation = evaluation.split(
            user_data, calibrate, request.calibration_samples)
        tried: list[tuple[str, Score]] = []
        chosen: tuple[str, Path, Score] | None = None
        for precision in precisions_to_try(request, family.precisions):
            with steps.step(f"optimize:{precision}"):
                onnx_path = family.optimize(
                    exported, precision, loaded, work / f"opt-{precision}", calibration,
                )
            with steps.step(f"score:{precision}"):
                score = family.score(loaded, onnx_path, texts, request.min_score)
            score.details.setdefault("max_abs_diff_fp32", exported.max_abs_diff)
            # how the precision was produced (e.g. int8_reduce_range), for the manifest
            score.details.update(loaded.extra.get("optimize_details", {}).get(precision, {}))
            tried.append((precision, score))
            steps.note(
                f"{precision}: {score.metric} {score.value:.4f} "
                f"({'pass' if score.passed else 'below'} {request.min_score})"
            )
            if score.passed:
                chosen = (precision, onnx_path, score)
                break
        # attempts are in precisions_to_try() order: attempt i used
        # precisions_to_try(request, family.precisions)[i] (unsupported ones never attempted)
        base.attempts = [s for _, s in tried]
        base.timings = steps.timings
        base.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if chosen is None:
            base.reason = _refusal_message(request, tried, skipped)
            base.score = tried[-1][1]
            raise GateRefused(base.reason, base)

        precision, onnx_path, score = chosen
        with steps.step("golden"):
            # the user's held-out records when given (a Chinese model replays Chinese text)
            golden = family.golden(loaded, texts[:8] if user_data else heldout_texts(8))
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = store.staging_dir(out_dir)
        try:
            with steps.step("repository"):
                entry = family.write_repository(loaded, onnx_path, stage / REPOSITORY_DIR, request)
                # TensorRT (serving.accelerator) on every ONNX Runtime backend model on GPUs
                from lmo_runtime.triton.config import accelerate_repository

                accelerate_repository(stage / REPOSITORY_DIR, request,
                                      loaded.extra.get("max_length"))
                input_reference = drift.write_references(stage / REPOSITORY_DIR, entry, texts,
                                                         golden)
                # outcome reports for experiments, counted as Triton metrics (lmo_runtime.feedback)
                feedback.write_model(stage / REPOSITORY_DIR)
                files = file_digests(stage)
            manifest = base.model_copy(
                update={
                    "accepted": True,
                    "precision": precision,
                    "entry_model": entry,
                    "files": files,
                    "size_bytes": sum(
                        f.size_bytes for f in files if f.path.endswith(MODEL_SUFFIXES)
                    ),
                    "score": score,
                    "golden": golden,
                    "input_reference": input_reference,
                    "shared_memory_bytes": loaded.extra.get("shared_memory_bytes"),
                    "timings": steps.timings,
                }
            )
            (stage / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
            _publish(stage, out_dir)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    if cache_dir is not None:
        entry = Path(cache_dir) / key
        _copy_artifact(out_dir, entry, "--cache-dir entry")
        local = store.local_path(request.checkpoint_uri, env)
        if local is not None and local.is_dir():
            source = {"fingerprint": store.checkpoint_fingerprint(local),
                      "checkpoint_sha256": manifest.checkpoint_sha256}
            (entry / SOURCE_FILE).write_text(json.dumps(source))
    return manifest
