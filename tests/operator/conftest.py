"""Operator tests: one emulator + one real Kopf operator per test module (start-up costs ~1 s).

Each test uses its own LanguageModel name, so tests share the cluster without seeing each
other's children.
"""

from __future__ import annotations

import os

import pytest_asyncio

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tests.fixtures.kmock_fixture import Cluster, start_cluster  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster() -> Cluster:
    async with await start_cluster() as (c, _operator):
        yield c
