"""Fixtures for the rollout tests: real Triton servers and a real Prometheus."""

from tests.fixtures.prometheus import prometheus_factory  # noqa: F401
from tests.fixtures.triton import triton_server_factory, triton_servers  # noqa: F401
