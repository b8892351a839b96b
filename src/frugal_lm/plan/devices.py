"""Accelerators the planner knows: dense bf16 peak FLOP/s (no sparsity), memory, and the
links between devices that expert parallelism's all-to-all crosses.

Peaks are the vendors' dense tensor-core numbers with fp32 accumulation, the convention
MFU is quoted against (H100/H200 SXM 989.5 TFLOP/s; the RTX 4090's 165 TFLOP/s is its
fp32-accumulate rate, half its fp16-accumulate one). The CPU has no datasheet number we
can trust, so it is measured with a short fp32 matmul benchmark.

Interconnect, per GPU and per direction (an all-to-all sends and receives at once):
- H100 SXM and H200 SXM: NVLink 4, 18 links, 900 GB/s bidirectional per GPU (NVIDIA H100
  and H200 datasheets) = 450 GB/s each way inside an 8-GPU HGX/DGX node; between nodes one
  ConnectX-7 InfiniBand NDR port of 400 Gb/s per GPU (DGX H100/H200 user guides) = 50 GB/s.
- A100 SXM: NVLink 3, 600 GB/s bidirectional (A100 datasheet) = 300 GB/s each way; between
  nodes one ConnectX-6 HDR port of 200 Gb/s per GPU (DGX A100 user guide) = 25 GB/s.
- L40S and RTX 4090: no NVLink; PCIe Gen4 x16, 64 GB/s bidirectional (L40S datasheet) =
  32 GB/s each way inside a node. Between nodes there is no reference system: 100 Gb/s
  Ethernet per GPU (12.5 GB/s) is our assumption, not a datasheet figure.
Rates are link peaks; NCCL's all-to-all reaches a large share of them at the message sizes
of MoE dispatch, which the planner does not model further.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from frugal_lm.errors import FrugalError


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float
    """Dense bf16 (fp32 on the CPU) FLOP/s."""
    memory_bytes: float
    description: str
    gpus_per_node: int = 8
    intra_node_bytes_per_s: float = float("nan")
    """Per GPU, per direction, to another GPU of the same node (NaN: unknown)."""
    inter_node_bytes_per_s: float = float("nan")
    """Per GPU, per direction, to a GPU of another node (NaN: unknown)."""
    interconnect: str = "unknown interconnect"


DEVICES: dict[str, Device] = {
    device.name: device
    for device in (
        Device("h100", 989.5e12, 80e9, "NVIDIA H100 SXM 80 GB", 8, 450e9, 50e9, "NVLink 4 / InfiniBand NDR"),
        Device("h200", 989.5e12, 141e9, "NVIDIA H200 SXM 141 GB", 8, 450e9, 50e9, "NVLink 4 / InfiniBand NDR"),
        Device("a100-80g", 312e12, 80e9, "NVIDIA A100 SXM 80 GB", 8, 300e9, 25e9, "NVLink 3 / InfiniBand HDR"),
        Device("l40s", 362.05e12, 48e9, "NVIDIA L40S 48 GB", 8, 32e9, 12.5e9, "PCIe Gen4 / 100 Gb Ethernet"),
        Device(
            "rtx-4090", 165.2e12, 24e9, "NVIDIA GeForce RTX 4090 24 GB", 8, 32e9, 12.5e9, "PCIe Gen4 / 100 Gb Ethernet"
        ),
    )
}


def measure_cpu_peak_flops(size: int = 512, seconds: float = 0.3, bf16: bool = False) -> float:
    """Best observed fp32 (or bf16) matmul FLOP/s of this process's CPU threads (a short benchmark)."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        elapsed = time.perf_counter() - start
        best = max(best, 2.0 * size**3 / max(elapsed, 1e-9))
    return best


def device_running_here(device_type: str, device_index: int = 0, bf16: bool = False) -> Device:
    """The device a training process runs on: a known GPU by its CUDA name, else this CPU
    measured now in the precision the run computes in. Unknown GPUs get NaN peak (no MFU)."""
    import torch

    if device_type == "cuda":
        name = torch.cuda.get_device_name(device_index).lower()
        for key, pattern in (
            ("h100", "h100"),
            ("h200", "h200"),
            ("a100-80g", "a100"),
            ("l40s", "l40s"),
            ("rtx-4090", "4090"),
        ):
            if pattern in name:
                return DEVICES[key]
        return Device(name, float("nan"), float(torch.cuda.get_device_properties(device_index).total_memory), name)
    import os

    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    precision = "bf16" if bf16 else "fp32"
    return Device("cpu", measure_cpu_peak_flops(bf16=bf16), float(pages), f"this CPU (measured {precision} matmul)")


def get_device(name: str) -> Device:
    """A device by table name, or `cpu` (measured now)."""
    key = name.lower()
    if key == "cpu":
        import os

        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return Device("cpu", measure_cpu_peak_flops(), float(pages), "this machine's CPU (measured fp32 matmul)")
    if key not in DEVICES:
        raise FrugalError(f"unknown gpu {name!r}; allowed: {', '.join([*DEVICES, 'cpu'])}")
    return DEVICES[key]
