"""The texts a conversion is scored (and int8-static calibrated) on.

Without `optimize.evaluation` these are the built-in English sentences
(`lmo_runtime.families.heldout_texts` / `calibration_texts`, disjoint). With it, the user's
own data: JSON Lines, one object per line, the text at `field`, the first `limit` records.

    uri                      read from
    s3://BUCKET/KEY          boto3 with the checkpoint's credentials (AWS_* env)
    file:///path, /path      the local file
    pvc://CLAIM/PATH         the claim mounted at $LMO_PVC_ROOT/CLAIM (like checkpoints)
    configmap://NAME/KEY     a ConfigMap: the conversion Job mounts NAME at
                             $LMO_CONFIGMAP_ROOT/NAME (default /etc/lmo/configmaps), KEY is
                             its file

When int8-static may be produced, every second record (up to `calibration_samples`)
calibrates and the rest is held out for the gate, so the gate never scores on calibration
inputs; otherwise every record is held out. The digest is sha256 over the whole file (what
`sha256sum` prints; `evaluation.sha256` pins it), recorded with the record counts in the
manifest and the version's status.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from lmo_runtime.errors import ConversionError
from lmo_runtime.manifest import Evaluation, EvaluationRecord

FIELD = "optimize.evaluation"
CONFIGMAP_ROOT_ENV = "LMO_CONFIGMAP_ROOT"
DEFAULT_CONFIGMAP_ROOT = "/etc/lmo/configmaps"
SCHEMES = ("s3", "file", "pvc", "configmap")
# Largest evaluation file read (JSON Lines of texts; a ConfigMap holds at most 1 MiB).
MAX_BYTES = 64 << 20
BUILTIN = "builtin"


@dataclass(frozen=True)
class EvaluationSet:
    """Texts read from the evaluation data (after `limit`), with the file's digest."""

    source: str
    sha256: str
    texts: tuple[str, ...]


def configmap_path(uri: str, env: Mapping[str, str]) -> Path:
    """Where the conversion Job finds `configmap://NAME/KEY` (NAME mounted as a volume)."""
    parsed = urlparse(uri)
    key = unquote(parsed.path).lstrip("/")
    if not parsed.netloc or not key or "/" in key:
        raise ConversionError(
            f"{FIELD}.uri {uri}: a ConfigMap is named configmap://NAME/KEY (the ConfigMap "
            "and one of its data keys)"
        )
    root = Path(env.get(CONFIGMAP_ROOT_ENV, DEFAULT_CONFIGMAP_ROOT))
    return root / parsed.netloc / key


def read_bytes(uri: str, env: Mapping[str, str]) -> bytes:
    """The raw evaluation file; ConversionError naming the uri when it cannot be read."""
    from lmo_runtime import store

    s = urlparse(uri).scheme or "file"  # a plain path is a file
    if s not in SCHEMES:
        raise ConversionError(
            f"{FIELD}.uri {uri}: unsupported scheme; use s3://BUCKET/KEY, file:///path, "
            "pvc://CLAIM/PATH or configmap://NAME/KEY"
        )
    if s == "s3":
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = store._s3_split(uri)
        try:
            obj = store.s3_client(env).get_object(Bucket=bucket, Key=key)
            if int(obj.get("ContentLength") or 0) > MAX_BYTES:
                raise ConversionError(f"{FIELD}.uri {uri}: larger than {MAX_BYTES >> 20} MiB")
            return obj["Body"].read()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "?")
            missing = code in ("404", "NoSuchKey", "NotFound")
            raise ConversionError(
                f"{FIELD}.uri {uri}: "
                + ("no such object; upload the JSON Lines file there or fix the uri"
                   if missing else f"S3 error {code} (check the bucket, key and credentials)")
            ) from None
        except BotoCoreError as err:
            raise ConversionError(f"{FIELD}.uri {uri}: S3 unreachable ({type(err).__name__})") from None
    path = configmap_path(uri, env) if s == "configmap" else store.local_path(uri, env)
    assert path is not None
    if not path.is_file():
        where = (f" (the conversion Job mounts the ConfigMap at {path.parent}; under `lmo up` "
                 "use file:// instead)" if s == "configmap" else "")
        raise ConversionError(
            f"{FIELD}.uri {uri}: no such file {path}{where}; point it at a JSON Lines file "
            "with one object per line"
        )
    if path.stat().st_size > MAX_BYTES:
        raise ConversionError(f"{FIELD}.uri {uri}: larger than {MAX_BYTES >> 20} MiB")
    return path.read_bytes()


def parse(data: bytes, evaluation: Evaluation) -> tuple[str, ...]:
    """The texts at `evaluation.field` of the first `limit` records."""
    uri, name = evaluation.uri, evaluation.field
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConversionError(f"{FIELD}.uri {uri}: not UTF-8 ({err.reason} at byte {err.start})") from None
    texts: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if len(texts) >= evaluation.limit:
            break
        try:
            record = json.loads(line)
        except ValueError as err:
            raise ConversionError(
                f"{FIELD}.uri {uri}: line {n} is not JSON ({err.msg}); the file must be JSON "
                f'Lines, one object per line such as {{"{name}": "..."}}'
            ) from None
        if not isinstance(record, dict):
            raise ConversionError(
                f"{FIELD}.uri {uri}: line {n} is a JSON {type(record).__name__}, not an object "
                f'such as {{"{name}": "..."}}'
            )
        if name not in record:
            fields = ", ".join(sorted(record)[:8]) or "none"
            raise ConversionError(
                f"{FIELD}.field {name!r}: line {n} of {uri} has no such field (its fields: "
                f"{fields}); set {FIELD}.field to the field holding the text"
            )
        value = record[name]
        if not isinstance(value, str):
            raise ConversionError(
                f"{FIELD}.field {name!r}: line {n} of {uri} holds a {type(value).__name__}, "
                "not a text; set it to a field holding strings"
            )
        if value.strip():
            texts.append(value)
    if not texts:
        raise ConversionError(
            f"{FIELD}.uri {uri}: no records with a non-empty {name!r}; the evaluation data "
            "must hold at least one text"
        )
    return tuple(texts)


def load(evaluation: Evaluation, env: Mapping[str, str] | None = None) -> EvaluationSet:
    """Read, digest-check and parse the evaluation data (ConversionError on any problem)."""
    env = dict(os.environ if env is None else env)
    data = read_bytes(evaluation.uri, env)
    digest = hashlib.sha256(data).hexdigest()
    if evaluation.sha256 and evaluation.sha256.lower() != digest:
        raise ConversionError(
            f"{FIELD}.sha256 mismatch: expected {evaluation.sha256.lower()}, got {digest} for "
            f"{evaluation.uri}; the file changed or the digest is wrong (sha256sum FILE)"
        )
    return EvaluationSet(source=evaluation.uri, sha256=digest, texts=parse(data, evaluation))


def split(
    data: EvaluationSet | None, calibrate: bool, calibration_samples: int
) -> tuple[list[str], list[str], EvaluationRecord]:
    """(held-out texts, calibration texts, what the manifest records), disjoint.

    Built-in data when `data` is None; else every second record calibrates (up to
    `calibration_samples`) when `calibrate`, the rest is held out.
    """
    from lmo_runtime.families import calibration_texts, heldout_texts

    if data is None:
        heldout = heldout_texts()
        calibration = calibration_texts(calibration_samples) if calibrate else []
        digest = hashlib.sha256("\n".join(heldout + calibration).encode()).hexdigest()
        source = BUILTIN
    else:
        texts = list(data.texts)
        if calibrate and len(texts) < 2:
            raise ConversionError(
                f"{FIELD}: int8-static needs at least 2 records (one to calibrate, one to "
                f"score), {data.source} has {len(texts)}; add records or choose int8"
            )
        picked = set(range(1, len(texts), 2)[:calibration_samples]) if calibrate else set()
        calibration = [t for i, t in enumerate(texts) if i in picked]
        heldout = [t for i, t in enumerate(texts) if i not in picked]
        digest, source = data.sha256, data.source
    record = EvaluationRecord(
        source=source, sha256=digest, records=len(heldout) + len(calibration),
        heldout=len(heldout), calibration=len(calibration),
    )
    return heldout, calibration, record
