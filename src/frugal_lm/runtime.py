"""Where the code runs: the device, and the precision training computes in.

Below every stage that runs a model (train, infer, evals), so serving never imports the
training loop to find its device.
"""

from __future__ import annotations

import os
import shutil

import torch

from frugal_lm.errors import FrugalError

# Narrower than this, bf16 matmuls on a CPU with native bf16 instructions lose to fp32
# (their kernels are tuned for large tiles); at this width and above bf16 wins
# (benchmarks/RESULTS.md, "Training throughput": 2.3x at hidden 512, 0.6x at hidden 128).
CPU_BF16_MIN_HIDDEN = 512


def resolve_device(name: str) -> torch.device:
    """`auto`, `cpu` or `cuda` (the `device=` key and every command's `--device`) -> a device."""
    if name == "cuda" and not torch.cuda.is_available():
        raise FrugalError("device cuda was asked for, but PyTorch sees no CUDA GPU; use cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_bf16(precision: str, device: torch.device, hidden_size: int) -> bool:
    """Whether training computes in bf16 (fp32 master weights): `precision=bf16`, or `auto`
    on a GPU, or on a CPU with native bf16 instructions for a model wide enough to gain."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return cpu_has_native_bf16() and hidden_size >= CPU_BF16_MIN_HIDDEN


# On a CPU, compiling the blocks costs seconds up front (more with a cold cache) and measured
# 1.04-1.23x per step after (benchmarks/RESULTS.md): `compile=auto` turns it on for runs long
# enough to earn that back.
CPU_COMPILE_MIN_STEPS = 1000


def _has_cpp_compiler() -> bool:
    return any(name and shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "clang++", "c++"))


def check_can_compile(device: torch.device) -> None:
    """torch.compile on a CPU generates C++: say so up front instead of failing mid-run."""
    if device.type == "cpu" and not _has_cpp_compiler():
        raise FrugalError(
            "compile=true on a CPU needs a C++ compiler (g++ or clang++, or CXX=...); install one, "
            "or train with compile=false"
        )


def compiles(setting: bool | str, device: torch.device, total_steps: int) -> bool:
    """Whether a run compiles its blocks: `compile=true/false`, or `auto`: always on CUDA, and
    on a CPU with a C++ compiler for runs of CPU_COMPILE_MIN_STEPS steps or more."""
    if setting != "auto":
        return bool(setting)
    if device.type == "cuda":
        return True
    return total_steps >= CPU_COMPILE_MIN_STEPS and _has_cpp_compiler()
