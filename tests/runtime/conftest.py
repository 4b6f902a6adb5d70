"""Fixtures for the runtime tests (conversion, Triton, families)."""

from tests.fixtures.triton import triton_server_factory, triton_servers  # noqa: F401
