"""A decode step replayed from CUDA graphs, one per (batch, context) bucket.

A decode step of the HRM launches a few kernels per block for every stack pass: about a
thousand launches per token for a 1B model, each a few microseconds of host time, while
the GPU's work per launch is small. Replaying a captured CUDA graph launches all of them
at once, so the step costs what the GPU's kernels cost (for a large model at batch 1:
reading its weights, the HBM roofline in benchmarks/generate_throughput.py).

A graph replays fixed addresses and shapes, which the engine's static step already has:
- shapes depend only on the (rows, context) bucket (`StaticDecodeView`), so each bucket is
  captured once, the first time it is met, and replayed from then on;
- the KV cache tensors are allocated once by the engine, so their addresses never change;
- the step's inputs (token ids, positions) are copied into the graph's own input tensors,
  and its logits are read from the graph's own output tensor, which the next replay
  overwrites: the engine copies out the rows it needs at once.
Capturing runs the step for real a few times first (on a side stream, as CUDA graphs need:
it also triggers any compilation and cuBLAS's workspace allocation). Those runs write the
step's keys and values exactly as the replay does, so repeating them changes nothing.
The step may be eager or compiled by torch.compile (without its own CUDA graphs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["CudaGraphSteps"]

WARMUP_RUNS = 2


@dataclass
class _CapturedStep:
    graph: torch.cuda.CUDAGraph
    input_ids_R1: torch.Tensor
    positions_R: torch.Tensor
    logits_RV: torch.Tensor


class CudaGraphSteps:
    """`step(model, cache, input_ids_R1, positions_R, context_len) -> logits_RV`, replayed
    from a CUDA graph captured per (rows, context_len)."""

    def __init__(self, step: Callable[..., torch.Tensor]):
        self.step = step
        self.captured: dict[tuple[int, int], _CapturedStep] = {}

    def __call__(self, model, cache, input_ids_R1: torch.Tensor, positions_R: torch.Tensor, context_len: int):
        key = (input_ids_R1.shape[0], context_len)
        captured = self.captured.get(key)
        if captured is None:
            captured = self.captured[key] = self._capture(model, cache, input_ids_R1, positions_R, context_len)
        else:
            captured.input_ids_R1.copy_(input_ids_R1)
            captured.positions_R.copy_(positions_R)
        captured.graph.replay()
        return captured.logits_RV

    def _capture(self, model, cache, input_ids_R1, positions_R, context_len: int) -> _CapturedStep:
        input_ids_R1, positions_R = input_ids_R1.clone(), positions_R.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.step(model, cache, input_ids_R1, positions_R, context_len)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits_RV = self.step(model, cache, input_ids_R1, positions_R, context_len)
        return _CapturedStep(graph, input_ids_R1, positions_R, logits_RV)
