"""Fixtures for the runtime tests (conversion, Triton, families)."""

from tests.fixtures.triton import triton_server_factory, triton_servers  # noqa: F401
from tests.fixtures.s3 import moto_s3  # noqa: F401
from tests.fixtures.artifacts import (  # noqa: F401
    artifact_cache,
    minilm_fp32_artifact,
    minilm_int8_artifact,
    minilm_path,
    tiny_bert_classifier,
    tiny_bert_mlm,
)
from tests.fixtures.gpt2 import (  # noqa: F401
    gpt2_checkpoint,
    gpt2_fp32_artifact,
    gpt2_int8_artifact,
    gpt2_loaded,
)
