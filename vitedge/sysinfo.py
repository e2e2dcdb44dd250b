"""Facts about the machine a measurement was taken on (device side: no torch)."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_vnni() -> bool:
    """Whether this x86 CPU has an int8 dot-product instruction (VNNI or AMX), so u8 x s8
    products accumulate in int32 without the int16 saturation of `vpmaddubsw`."""
    return any(f in cpu_flags() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


@lru_cache(maxsize=1)
def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                              "amx_int8")
                    return [x for x in wanted if x in flags]
    except OSError:
        pass
    return []


def system_info() -> dict[str, Any]:
    import numpy

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores_available": cores,
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": numpy.__version__,
    }
