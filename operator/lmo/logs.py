"""Logging for `lmo operator`: Kopf's formatters, JSON when LMO_LOG_FORMAT=json.

Kopf hands every handler a `logger` bound to its object; its JSON formatter then adds the
object's reference (apiVersion, kind, namespace, name, uid) under the key `object`, so a
log pipeline can filter one LanguageModel's story. Text format prefixes `[ns/name]`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import Any

import kopf

from lmo.api import API_VERSION, KIND

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


class _ObjectAdapter(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = dict(self.extra or {}) | dict(kwargs.get("extra") or {})
        return msg, kwargs


def object_logger(namespace: str, name: str, uid: str | None = None,
                  base: logging.Logger | None = None) -> logging.LoggerAdapter:
    """A logger whose lines carry the LanguageModel like the loggers Kopf gives handlers.

    For work no Kopf handler started (resync timers, child events, retries): JSON lines get
    the same `object` key, text lines the `[ns/name]` prefix. `k8s_skip` keeps Kopf from
    posting them as Events.
    """
    ref = {"apiVersion": API_VERSION, "kind": KIND, "namespace": namespace, "name": name,
           "uid": uid}
    return _ObjectAdapter(base or logging.getLogger("lmo"), {"k8s_ref": ref, "k8s_skip": True})
