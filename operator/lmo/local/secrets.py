"""Secrets for `lmo up`, where there is no API server to hold them.

Three sources, the same shape as a cluster's Secret (name -> data):
* `--secrets FILE`: YAML with one or more `kind: Secret` documents (`data` base64 encoded,
  `stringData` plain), exactly what `kubectl apply` would take;
* Secret documents beside the LanguageModel in the `-f` file itself (as `kubectl apply -f`
  would create them on a cluster);
* the environment: `LMO_SECRET_<NAME>` holding a JSON object of the Secret's plain data,
  NAME upper-cased with `-` and `.` as `_` (Secret `chat-keys` -> `LMO_SECRET_CHAT_KEYS`).

Values are never logged or put in an error message: errors name the file, the Secret and
the key only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Mapping

import yaml

from lmo.api import Protection
from lmo.errors import UserError

Secrets = dict[str, dict[str, str]]


def env_name(secret: str) -> str:
    return "LMO_SECRET_" + secret.upper().replace("-", "_").replace(".", "_")


def load_file(path: str | Path, only_secrets: bool = True) -> Secrets:
    """Secret documents of a YAML file by name; other kinds are refused, or skipped when
    `only_secrets` is False (the LanguageModel file)."""
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except OSError as err:
        raise UserError(f"--secrets {path}: cannot read it ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise UserError(f"--secrets {path}: not YAML ({err})") from None
    out: Secrets = {}
    for i, doc in enumerate(docs):
        where = f"--secrets {path} (document {i + 1})" if only_secrets else \
            f"{path} (document {i + 1})"
        if not only_secrets and not (isinstance(doc, dict) and doc.get("kind") == "Secret"):
            continue
        if not isinstance(doc, dict) or doc.get("kind") != "Secret":
            raise UserError(f"{where}: expected kind: Secret, a v1 Secret as kubectl takes it")
        name = (doc.get("metadata") or {}).get("name")
        if not name:
            raise UserError(f"{where}: metadata.name is missing")
        data: dict[str, str] = {}
        for key, value in (doc.get("data") or {}).items():
            try:
                data[str(key)] = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise UserError(f"{where}: data.{key} of Secret {name} is not base64 text; "
                                "put plain text under stringData instead") from None
        for key, value in (doc.get("stringData") or {}).items():
            data[str(key)] = str(value)
        out[name] = data
    return out


def from_env(name: str, environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    environ = os.environ if environ is None else environ
    var = env_name(name)
    raw = environ.get(var)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f'{var} must be a JSON object of strings such as {{"alice": "<key>"}}')
    return {str(k): v for k, v in data.items()}


def api_keys(protection: Protection | None, secrets: Secrets,
             environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The client id -> API key table spec.protection.auth names, or a UserError saying
    where to put it. Empty without auth."""
    if protection is None or protection.auth is None:
        return {}
    name = protection.auth.api_keys.secret_ref.name
    data = secrets.get(name)
    if data is None:
        data = from_env(name, environ)
    if data is None:
        raise UserError(
            f"spec.protection.auth.apiKeys.secretRef.name: Secret {name!r} not found; give "
            f"it with --secrets FILE (a v1 Secret YAML), as a kind: Secret document in the "
            f"model's file, or {env_name(name)}="
            '\'{"client-id": "<key>"}\''
        )
    keys = {client: key for client, key in data.items() if key}
    if not keys:
        raise UserError(f"Secret {name!r} (spec.protection.auth.apiKeys) has no keys: each "
                        "data key is a client id, its value that client's API key")
    return keys
