"""The operator starts under a uid that /etc/passwd does not list (the images' 65532, a uid a
platform assigns): Kopf's identity comes from getpass.getuser(), which raises KeyError there.
Found when the operator image first ran as a real pod (tests/realnode)."""

from __future__ import annotations

import os
import pwd

import pytest
from kopf._core.engines import peering

from lmo.operator_main import ensure_login_name


@pytest.fixture
def unknown_uid(monkeypatch):
    def getpwuid(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME", "POD_ID"):
        monkeypatch.delenv(var, raising=False)


def test_kopf_identity_needs_a_login_name(unknown_uid):
    with pytest.raises(KeyError):
        peering.detect_own_id(manual=False)


def test_operator_identity_without_a_passwd_entry(unknown_uid, monkeypatch):
    ensure_login_name()
    assert os.environ["USER"] == f"uid-{os.getuid()}"
    assert peering.detect_own_id(manual=False).startswith(f"uid-{os.getuid()}@")


def test_a_known_login_name_is_kept(monkeypatch):
    monkeypatch.setenv("USER", "someone")
    ensure_login_name()
    assert os.environ["USER"] == "someone"
