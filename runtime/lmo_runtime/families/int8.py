"""Which int8 kernels this CPU has, and the quantizer settings that follow from them.

onnxruntime's x86 int8 GEMM multiplies uint8 activations by int8 weights (u8s8). With VNNI
(avx512_vnni, avx_vnni) or AMX (amx_int8) the products are accumulated in int32 directly.
Without them (AVX2 only) it uses vpmaddubsw, which adds two u8*s8 products into an int16
that can saturate; onnxruntime's remedy is `reduce_range` (7-bit weights), at a small
accuracy cost. Other CPUs (Arm's dot-product kernels) do not saturate.

The settings are picked on the machine that converts (recorded in the score details as
`int8_reduce_range`); when conversion Jobs run on other CPUs than the Triton pods,
`LMO_INT8_REDUCE_RANGE=1` (or 0) forces the choice. The accuracy gate measures whatever was
produced, so a wrong guess costs speed or a refusal, never a silently worse model.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
ENV = "LMO_INT8_REDUCE_RANGE"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The int8-relevant flags of /proc/cpuinfo (empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    return frozenset(re.findall(r"\b(" + "|".join(REPORTED_FLAGS) + r")\b", cpuinfo))


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    return found.group(1).strip() if found else "unknown"


@dataclass(frozen=True)
class Int8Kernel:
    """The quantizer settings for this CPU."""

    isa: str  # "vnni" (VNNI or AMX), "avx2" (x86 without VNNI) or "other"
    reduce_range: bool

    def details(self) -> dict[str, float]:
        return {"int8_reduce_range": float(self.reduce_range),
                "int8_vnni": float(self.isa == "vnni")}


def int8_kernel(env: Mapping[str, str] | None = None, cpuinfo: str | None = None) -> Int8Kernel:
    """u8s8 at full range with VNNI/AMX (or off x86); reduce_range on AVX2 without VNNI."""
    env = os.environ if env is None else env
    flags = cpu_flags(cpuinfo)
    isa = "vnni" if flags & VNNI_FLAGS else "avx2" if "avx2" in flags else "other"
    forced = env.get(ENV, "").strip()
    if forced in ("0", "1"):
        return Int8Kernel(isa, forced == "1")
    return Int8Kernel(isa, isa == "avx2")
