"""Fixtures for the runtime tests (conversion, Triton, families)."""

from tests.fixtures.triton import triton_server_factory, triton_servers  # noqa: F401
from tests.fixtures.gpt2 import (  # noqa: F401
    gpt2_checkpoint,
    gpt2_fp32_artifact,
    gpt2_int8_artifact,
    gpt2_loaded,
)
