"""Fixtures for the rollout tests: real Triton servers, a real Prometheus, real artifacts."""

from tests.fixtures.artifacts import (  # noqa: F401
    artifact_cache,
    minilm_fp32_artifact,
    minilm_int8_artifact,
    minilm_path,
)
from tests.fixtures.k8s_tools import k8s_tools  # noqa: F401  (session fixture)
from tests.fixtures.prometheus import prometheus_factory  # noqa: F401
from tests.fixtures.triton import triton_server_factory, triton_servers  # noqa: F401
