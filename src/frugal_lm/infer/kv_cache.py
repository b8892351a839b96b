"""Static, preallocated KV caches: one per (stack pass, block), one row per engine slot.

A recurrent net runs its stacks several times per token (HRM: h_cycles x (l_cycles + 1)
passes) and every pass attends over its own keys and values, so the cache has
`stack_passes * layers_per_stack` layer slots; pass p's block j is slot
p * layers_per_stack + j (the model numbers them; transformers' `hrm_text` layout).

Everything is allocated once, for `max_batch_size` sequences of `max_seq_len` tokens:
decoding never reallocates or concatenates (the cost of `DynamicCache`), a sequence
joining or leaving the batch only changes which rows are read, and memory use is known
when the engine starts. The price is memory for the worst case, which is the right
trade for a server that must not fail mid-request.

Views implement the model's `AttentionCache` protocol for one forward call:
- `PrefillView`: whole instructions of one or more sequences, one row each, padded to
  the longest. An instruction is one bidirectional block (PrefixLM), so attention is
  unmasked over the fresh keys except for the padding (a key-padding mask). A padded
  row also stores keys past its instruction; they are never read: decoding overwrites
  position p before any query attends to it.
- `DecodeView`: one new token for each of several sequences at their own positions.
  A response token sees every earlier token of its sequence (instruction or response),
  so the mask only hides each row's unused tail of the cache.
- `StaticDecodeView`: the same for a compiled decode step, where every shape must stay
  put from step to step: engine slots 0..R-1 are the rows, in slot order, whether they
  run or not (R: a batch bucket the engine chooses), and attention reads a fixed
  `context_len` (the engine rounds it up) under a mask. Reading rows 0..R-1 is a view of
  the cache, not a gather (a gather copied the whole context of every row at every layer:
  measured, half the compiled step at batch 8). A row with no token this step still
  writes its slot, at a position the engine picks to be harmless: a running slot's next
  position (its own next token overwrites it), else 0 (a free slot's prompt overwrites
  it at prefill, a finished slot is never read again).

Grouped-query attention: the cache stores the model's key/value heads (G = `n_kv_heads`), not
its query heads, so a model with n_heads / n_kv_heads query heads per key/value head needs
that many times less cache memory and reads that many times fewer bytes per decode step.

Shape legend: S layer slots, N engine slots, R the first R engine slots, H query heads, G key/value
heads, L max_seq_len, D head dim, B sequences in this call, T tokens per sequence in this call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import grouped_query


class StaticKVCache:
    def __init__(
        self, config: ModelConfig, n_slots: int, max_seq_len: int, dtype: torch.dtype, device: torch.device | str
    ):
        layer_slots = config.stack_passes * config.layers_per_stack
        shape = (n_slots, config.kv_heads, max_seq_len, config.head_dim)
        # A separate tensor per layer slot, not views of one: a compiled step then writes
        # each in place; writing through a view of one big tensor makes the compiled graph
        # copy the whole cache at every layer (measured: it ate the gain from compiling).
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layer_slots)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layer_slots)]
        self.max_seq_len, self.dtype = max_seq_len, dtype

    def prefill(self, slot: int) -> PrefillView:
        return PrefillView(self, [slot], None)

    def prefill_batch(self, slots: list[int], lengths_B: torch.Tensor) -> PrefillView:
        return PrefillView(self, slots, lengths_B)

    def decode(self, slots: list[int], positions_B: torch.Tensor) -> DecodeView:
        return DecodeView(self, slots, positions_B)

    def static_decode(self, positions_R: torch.Tensor, context_len: int) -> StaticDecodeView:
        return StaticDecodeView(self, positions_R, context_len)


class PrefillView:
    """Instructions of the sequences in engine slots `slots` (row b: slot `slots[b]`,
    `lengths_B[b]` real tokens, or all T when `lengths_B` is None), written at 0..T-1;
    rows are padded to T = the longest length."""

    def __init__(self, cache: StaticKVCache, slots: list[int], lengths_B: torch.Tensor | None):
        self.cache = cache
        self.rows = _rows(slots, cache.keys[0].device)
        # One key-padding mask for every layer and pass; none when no row is padded.
        self.mask_B11T = None
        if lengths_B is not None and bool((lengths_B != lengths_B.max()).any()):
            keys_T = torch.arange(int(lengths_B.max()), device=lengths_B.device)
            self.mask_B11T = (keys_T[None, :] < lengths_B[:, None])[:, None, None, :]

    def attend(self, layer_slot: int, q_BHTD: torch.Tensor, k_BGTD: torch.Tensor, v_BGTD: torch.Tensor) -> torch.Tensor:
        T = k_BGTD.shape[2]
        self.cache.keys[layer_slot][self.rows, :, :T] = k_BGTD
        self.cache.values[layer_slot][self.rows, :, :T] = v_BGTD
        return F.scaled_dot_product_attention(
            q_BHTD, k_BGTD, v_BGTD, attn_mask=self.mask_B11T, **grouped_query(q_BHTD, k_BGTD)
        )


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as 0 / -inf added to the scores: the same attention (bit for
    bit), and SDPA's CPU kernel takes it 20% faster per decode call (benchmarks/RESULTS.md)."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(~visible, float("-inf"))


def _rows(slots: list[int], device: torch.device) -> slice | torch.Tensor:
    """Engine slots as an index of the cache's first dimension: a view when adjacent
    (the usual case: slots are handed out lowest first), else a gather index."""
    if slots == list(range(slots[0], slots[0] + len(slots))):
        return slice(slots[0], slots[0] + len(slots))
    return torch.tensor(slots, device=device)


class DecodeView:
    """One token per sequence: sequence b sits in engine slot `slots[b]` and its new token
    goes to position `positions_B[b]` (its number of cached tokens)."""

    def __init__(self, cache: StaticKVCache, slots: list[int], positions_B: torch.Tensor):
        self.cache = cache
        device = positions_B.device
        self.slot_index_B = torch.tensor(slots, device=device)
        self.positions_B = positions_B
        # Read only up to the longest sequence.
        self.context_len = int(positions_B.max()) + 1
        self.rows = _rows(slots, device)
        if bool((positions_B == positions_B[0]).all()):
            self.mask_B11L = None  # every row sees the whole context: no mask needed
        else:
            keys = torch.arange(self.context_len, device=device)
            self.mask_B11L = _additive((keys[None, :] <= positions_B[:, None])[:, None, None, :], cache.dtype)

    def attend(self, layer_slot: int, q_BHTD: torch.Tensor, k_BGTD: torch.Tensor, v_BGTD: torch.Tensor) -> torch.Tensor:
        keys_NGLD, values_NGLD = self.cache.keys[layer_slot], self.cache.values[layer_slot]
        keys_NGLD[self.slot_index_B, :, self.positions_B] = k_BGTD[:, :, 0]
        values_NGLD[self.slot_index_B, :, self.positions_B] = v_BGTD[:, :, 0]
        context_keys = keys_NGLD[self.rows, :, : self.context_len]
        context_values = values_NGLD[self.rows, :, : self.context_len]
        return F.scaled_dot_product_attention(
            q_BHTD, context_keys, context_values, attn_mask=self.mask_B11L, **grouped_query(q_BHTD, k_BGTD)
        )


class StaticDecodeView:
    """`DecodeView` with shapes that depend only on the number of rows R and `context_len`,
    for torch.compile: row r is engine slot r, writes position `positions_R[r]` and attends
    over positions 0..positions_R[r] of the first `context_len`."""

    def __init__(self, cache: StaticKVCache, positions_R: torch.Tensor, context_len: int):
        self.cache, self.positions_R, self.context_len = cache, positions_R, context_len
        self.n_rows = positions_R.shape[0]
        self.rows_R = torch.arange(self.n_rows, device=positions_R.device)
        keys_L = torch.arange(context_len, device=positions_R.device)
        self.mask_R11L = _additive((keys_L[None, :] <= positions_R[:, None])[:, None, None, :], cache.dtype)

    def attend(self, layer_slot: int, q_RHTD: torch.Tensor, k_RGTD: torch.Tensor, v_RGTD: torch.Tensor) -> torch.Tensor:
        keys_NGLD, values_NGLD = self.cache.keys[layer_slot], self.cache.values[layer_slot]
        keys_NGLD[self.rows_R, :, self.positions_R] = k_RGTD[:, :, 0]
        values_NGLD[self.rows_R, :, self.positions_R] = v_RGTD[:, :, 0]
        context_keys = keys_NGLD[: self.n_rows, :, : self.context_len]
        context_values = values_NGLD[: self.n_rows, :, : self.context_len]
        return F.scaled_dot_product_attention(
            q_RHTD, context_keys, context_values, attn_mask=self.mask_R11L, **grouped_query(q_RHTD, k_RGTD)
        )
