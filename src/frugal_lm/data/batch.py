"""Packed PrefixLM batches: examples laid into fixed-length rows, as ARCHITECTURE.md describes.

One example is an instruction `i` (P tokens: BOQ, condition tags, text, EOQ) and a
response `o` (R tokens ending in EOA). Packed, it contributes P + R - 1 positions:

    input_ids    = i + o[:-1]
    labels       = ignore * (P - 1) + o          (position j predicts token j + 1)
    position_ids = 0, 1, ..., P + R - 2          (restart per example)

and attends with the PrefixLM rule (see `frugal_lm.model.attention`). With
`instruction_loss=True` the example becomes a plain causal LM sample instead: the loss also
covers the instruction, and the instruction is attended causally, because a bidirectional
instruction would let position j read the very token it is asked to predict.

Which examples share a row is the loader's business (multipack); this module only lays
out given rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass
class Example:
    instruction: Sequence[int]
    response: Sequence[int]

    def __post_init__(self):
        if len(self.instruction) < 1 or len(self.response) < 1:
            raise ValueError("an example needs at least one instruction and one response token")

    @property
    def packed_len(self) -> int:
        return len(self.instruction) + len(self.response) - 1


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # (B, T) int64
    labels: torch.Tensor  # (B, T) int64, IGNORE_INDEX where there is no loss
    position_ids: torch.Tensor  # (B, T) int64
    segment_ids: torch.Tensor  # (B, T) int32, example index inside the row, -1 on padding
    prefix_mask: torch.Tensor  # (B, T) bool, True on tokens attended bidirectionally

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int((self.segment_ids >= 0).sum())

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            *(
                tensor.to(device, non_blocking=True)
                for tensor in (self.input_ids, self.labels, self.position_ids, self.segment_ids, self.prefix_mask)
            )
        )


def pack_rows(
    rows: Sequence[Sequence[Example]], row_len: int, instruction_loss: bool = False, pad_id: int = 0
) -> PackedBatch:
    """Lay each row's examples left to right and pad the row to `row_len`."""
    B = len(rows)
    input_ids = np.full((B, row_len), pad_id, dtype=np.int64)
    labels = np.full((B, row_len), IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros((B, row_len), dtype=np.int64)
    segment_ids = np.full((B, row_len), -1, dtype=np.int32)
    prefix = np.zeros((B, row_len), dtype=bool)
    for row, examples in enumerate(rows):
        start = 0
        for index, example in enumerate(examples):
            P, length = len(example.instruction), example.packed_len
            end = start + length
            if end > row_len:
                raise ValueError(f"row {row} needs {end} tokens, more than row_len={row_len}")
            input_ids[row, start : start + P] = example.instruction
            input_ids[row, start + P : end] = example.response[:-1]
            labels[row, start + P - 1 : end] = example.response
            if instruction_loss:
                labels[row, start : start + P - 1] = example.instruction[1:]
            else:
                prefix[row, start : start + P] = True
            positions[row, start:end] = np.arange(length)
            segment_ids[row, start:end] = index
            start = end
    return PackedBatch(*(torch.from_numpy(array) for array in (input_ids, labels, positions, segment_ids, prefix)))
