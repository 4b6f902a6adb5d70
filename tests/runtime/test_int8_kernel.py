"""int8 quantizer settings follow the CPU's int8 instructions (VNNI/AMX or not)."""

from __future__ import annotations

import pytest

from lmo_runtime.convert import convert
from lmo_runtime.families.int8 import cpu_flags, cpu_model, int8_kernel
from lmo_runtime.manifest import ConversionRequest

ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16
"""
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8488C\nflags\t: avx2 avx512f avx512_vnni avx_vnni amx_bf16 amx_tile amx_int8\n"
HASWELL = "model name\t: Intel(R) Xeon(R) CPU E5-2676 v3\nflags\t: sse4_2 avx avx2 fma\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp\n"


@pytest.mark.parametrize("cpuinfo, isa, reduce_range", [
    (ZEN4, "vnni", False), (SAPPHIRE, "vnni", False), (HASWELL, "avx2", True),
    (GRAVITON, "other", False),
])
def test_reduce_range_only_without_vnni_on_x86(cpuinfo, isa, reduce_range):
    kernel = int8_kernel({}, cpuinfo)
    assert (kernel.isa, kernel.reduce_range) == (isa, reduce_range)
    # a converter pool with other CPUs than the serving nodes can force the choice
    assert int8_kernel({"LMO_INT8_REDUCE_RANGE": "1"}, cpuinfo).reduce_range is True
    assert int8_kernel({"LMO_INT8_REDUCE_RANGE": "0"}, cpuinfo).reduce_range is False


def test_flags_and_model_are_read_for_the_benchmark_record():
    assert cpu_flags(SAPPHIRE) == {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}
    assert cpu_model(ZEN4) == "AMD EPYC 9R14 96-Core Processor"
    assert cpu_model(GRAVITON) == "unknown" and cpu_flags(GRAVITON) == set()


def test_int8_records_the_kernel_choice_and_reduce_range_still_passes_the_gate(
    minilm_path, tmp_path, monkeypatch
):
    """The 7-bit-weight path (what a CPU without VNNI gets) still scores >= 0.99 on MiniLM,
    and the manifest says which path produced the artifact."""
    monkeypatch.setenv("LMO_INT8_REDUCE_RANGE", "1")
    request = ConversionRequest(checkpoint_uri=str(minilm_path), task="feature-extraction",
                                precision="int8", backend="python")
    manifest = convert(request, tmp_path / "rr", progress=False)
    assert manifest.score.details["int8_reduce_range"] == 1.0
    assert manifest.score.passed and manifest.score.value >= 0.99
    assert manifest.score.details["cosine_min"] >= 0.98

