"""The engine's decode step at static shapes: buckets, torch.compile and CUDA graphs.

Compiled graphs and CUDA graphs need fixed shapes, so the step runs one row per engine slot
for the slots 0..R-1, in slot order (rows with no token this step compute and are ignored),
over a fixed attended context under a mask (`kv_cache.StaticDecodeView`):
- R, the batch bucket: the highest fed slot rounded up to a power of two, at most the
  engine's slots. Slots are handed out lowest first, so a lightly loaded server runs small
  buckets (a lone request on an 8-slot engine computes one row, not eight). The engine
  uses batch buckets where their graphs are cheap or already built (`Engine.batch_buckets`),
  else every slot.
- the context bucket: the longest context rounded up to a power of two, at least
  `MIN_CONTEXT_BUCKET`, at most the engine's context.
One graph per (batch, context) bucket, built the first time it is met. Dynamic shapes
instead were slower per step and to compile (measured). Few graphs matter more than padding
waste: compiling the unrolled recurrence is slow on a CPU (benchmarks/RESULTS.md).

- `compile`: torch.compile (inductor) fuses the many small ops of a step (RMSNorm, RoPE,
  gates, cache writes, the mask) that otherwise dominate CPU decoding. On a CPU it uses
  the C++ wrapper; `int8` models also use inductor's max-autotune GEMM templates, which
  have a C++ kernel for int8 weights.
- `cuda_graphs` (GPU): each bucket's step, compiled or eager, is replayed from a CUDA graph
  (`cuda_graphs.py`: one launch per step instead of a thousand).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from frugal_lm.infer.cuda_graphs import CudaGraphSteps
from frugal_lm.infer.kv_cache import StaticKVCache

MIN_CONTEXT_BUCKET = 128
"""Smallest context a static decode step attends over (more buckets: more graphs)."""

StaticStep = Callable[..., torch.Tensor]
"""`step(model, cache, input_ids_R1, positions_R, context_len) -> logits_RV`."""


def static_decode_step(
    model, cache: StaticKVCache, input_ids_R1: torch.Tensor, positions_R: torch.Tensor, context_len: int
) -> torch.Tensor:
    """One decode forward whose shapes depend only on the rows R and `context_len`: what
    gets compiled or captured."""
    view = cache.static_decode(positions_R, context_len)
    return model(input_ids_R1, positions_R[:, None], None, kv_cache=view)[:, -1]


def build_static_step(
    device: torch.device, compile: bool, cuda_graphs: bool, int8_weights: bool, bucket_count: int
) -> StaticStep | None:
    """The static step to run (compiled, graphed, both), or None for the eager engine."""
    step: StaticStep | None = None
    if compile:
        step = _compiled(device, int8_weights)
        # Each bucket is a graph of its own. Raised once here (process-wide, never lowered):
        # patching the limit around every step cost a measurable share of a small step.
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, bucket_count)
    if cuda_graphs:
        step = CudaGraphSteps(step or static_decode_step)
    return step


def batch_bucket(rows: int, max_batch_size: int) -> int:
    return min(next_power_of_two(rows), max_batch_size)


def context_bucket(length: int, max_seq_len: int) -> int:
    return min(max(next_power_of_two(length), MIN_CONTEXT_BUCKET), max_seq_len)


def every_bucket(max_batch_size: int, max_seq_len: int) -> list[tuple[int, int]]:
    """Every (rows, context_len) bucket an engine with these limits can meet."""
    return sorted(
        {
            (batch_bucket(rows, max_batch_size), context_bucket(length, max_seq_len))
            for rows in _powers_of_two_up_to(max_batch_size)
            for length in _powers_of_two_up_to(max_seq_len)
        }
    )


def _powers_of_two_up_to(limit: int) -> list[int]:
    """1, 2, 4, ... below `limit`, and `limit` itself."""
    return [1 << exponent for exponent in range(limit.bit_length()) if 1 << exponent < limit] + [limit]


def bucket_count(max_batch_size: int, max_seq_len: int) -> int:
    """An upper bound on the (batch, context) buckets an engine can meet."""
    return (max_batch_size.bit_length() + 1) * (max_seq_len.bit_length() + 1)


def next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _compiled(device: torch.device, int8_weights: bool) -> StaticStep:
    if device.type == "cuda":
        # No CUDA graphs of torch.compile's own: the engine captures one per bucket
        # (`CudaGraphSteps`), with the KV cache at fixed addresses.
        return torch.compile(static_decode_step, dynamic=False, fullgraph=True)
    # cpp_wrapper: the graph's glue code in C++ too; the Python wrapper's per-kernel
    # calls cost as much as the fused kernels at these sizes (measured).
    options = {"cpp_wrapper": True}
    if int8_weights:
        # Inductor's C++ micro-GEMM for int8 weights (chosen by autotuning, the weights
        # frozen as constants) is what makes them faster than fp32; ATen's kernel is not.
        options |= {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN", "freezing": True}
    return torch.compile(static_decode_step, dynamic=False, fullgraph=True, options=options)
