"""Logging for `lmo operator`: Kopf's formatters, JSON when LMO_LOG_FORMAT=json.

Kopf hands every handler a `logger` bound to its object; its JSON formatter then adds the
object's reference (apiVersion, kind, namespace, name, uid) under the key `object`, so a
log pipeline can filter one LanguageModel's story. Text format prefixes `[ns/name]`.
"""

from __future__ import annotations

import os

import kopf

FORMATS = {"json": kopf.LogFormat.JSON, "text": kopf.LogFormat.FULL, "plain": kopf.LogFormat.PLAIN}


def configure(fmt: str | None = None, verbose: bool = False) -> None:
    """Install the root handler; `fmt` is json, text or plain (default: LMO_LOG_FORMAT or text)."""
    name = (fmt or os.environ.get("LMO_LOG_FORMAT") or "text").lower()
    if name not in FORMATS:
        raise ValueError(f"LMO_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {name!r}")
    json_format = FORMATS[name] is kopf.LogFormat.JSON
    kopf.configure(
        verbose=verbose,
        log_format=FORMATS[name],
        log_prefix=not json_format,
        log_refkey="object" if json_format else None,
    )
