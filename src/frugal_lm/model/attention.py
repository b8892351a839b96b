"""Packed PrefixLM attention behind one function, with three interchangeable backends.

Inside a packed row, query q may see key k iff both belong to the same example and
(k <= q or k is in that example's instruction). Padding queries see only themselves
(a fully masked row would make SDPA return NaN and poison the backward pass), and no
real token ever sees padding, so padding cannot leak into real outputs.

Backends, identical on every real token:
- `sdpa`: a dense boolean mask (B, 1, T, T) and `scaled_dot_product_attention`; any
  device, with gradients. The CPU training path.
- `flex`: the same predicate as a FlexAttention block mask, so fully masked tiles are
  skipped. Compiled on GPU; on CPU only for inference (the eager fallback has no fused
  backward worth training with).
- `fa3`: FlashAttention 3 varlen, two calls per layer: instruction queries attend
  bidirectionally within their instruction, response queries attend causally
  (bottom-right aligned) over their whole example. Only where `flash_attn_interface`
  imports (Hopper GPUs).

Grouped-query attention: keys and values may have fewer heads (G) than the queries (H, a
multiple of G). `sdpa` and `flex` take them as they are (`enable_gqa`, no copy); FA3's varlen
kernel accepts G < H natively. With G == H nothing changes (no `enable_gqa` flag is passed).

Shape legend: B rows, T tokens per row, H query heads, G key/value heads, D head dim, N segments in the batch.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from frugal_lm.errors import FrugalError

BACKENDS = ("sdpa", "flex", "fa3")


@dataclass
class AttentionLayout:
    """Who-sees-whom for one packed batch; built once and shared by every layer and pass.

    `segment_ids_BT`: example index inside its row, -1 for padding; examples are contiguous.
    `prefix_BT`: True on instruction tokens.
    """

    segment_ids_BT: torch.Tensor
    prefix_BT: torch.Tensor

    @classmethod
    def from_lengths(
        cls, rows: list[list[tuple[int, int]]], row_len: int, device: torch.device | str = "cpu"
    ) -> AttentionLayout:
        """Rows of (prefix_len, causal_len) examples, packed left to right, padded to `row_len`."""
        segment_ids = torch.full((len(rows), row_len), -1, dtype=torch.int32)
        prefix = torch.zeros((len(rows), row_len), dtype=torch.bool)
        for row, examples in enumerate(rows):
            start = 0
            for index, (prefix_len, causal_len) in enumerate(examples):
                end = start + prefix_len + causal_len
                if end > row_len:
                    raise ValueError(f"row {row} holds {end} tokens, more than row_len={row_len}")
                segment_ids[row, start:end] = index
                prefix[row, start : start + prefix_len] = True
                start = end
        return cls(segment_ids.to(device), prefix.to(device))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.segment_ids_BT.shape)  # type: ignore[return-value]

    def to(self, device: torch.device | str) -> AttentionLayout:
        return AttentionLayout(self.segment_ids_BT.to(device), self.prefix_BT.to(device))

    def prepare(self, backend: str) -> None:
        """Build `backend`'s mask now, once for the step, outside any compiled block: every
        layer and pass then reads the same object, and no compiled graph traces its making."""
        mask_of_backend = {"sdpa": "dense_mask_B1TT", "flex": "block_mask", "fa3": "varlen"}
        if backend in mask_of_backend:
            getattr(self, mask_of_backend[backend])  # a cached property: computed here, once

    @functools.cached_property
    def dense_mask_B1TT(self) -> torch.Tensor:
        """The mask as booleans, True where attention is allowed."""
        segment, prefix = self.segment_ids_BT, self.prefix_BT
        _, T = segment.shape
        position = torch.arange(T, device=segment.device)
        same_example = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0)
        visible = (position[None, :] <= position[:, None])[None] | prefix[:, None, :]
        itself = torch.eye(T, dtype=torch.bool, device=segment.device)[None]
        return ((same_example & visible) | itself)[:, None]

    @functools.cached_property
    def block_mask(self):
        from torch.nn.attention.flex_attention import create_block_mask

        segment, prefix = self.segment_ids_BT, self.prefix_BT
        B, T = segment.shape

        def mask_mod(b, h, q, k):
            same_example = (segment[b, q] == segment[b, k]) & (segment[b, q] >= 0)
            return (same_example & ((k <= q) | prefix[b, k])) | (q == k)

        return create_block_mask(mask_mod, B, None, T, T, device=segment.device)

    @functools.cached_property
    def varlen(self) -> VarlenLayout:
        return VarlenLayout.from_layout(self)


@dataclass
class VarlenLayout:
    """The flattened (B*T) token stream cut into segments, for FlashAttention's varlen API.

    Each row's padding tail is one extra segment with an empty prefix, so every token of
    the stream belongs to exactly one segment and `cu_seqlens` covers all B*T tokens.
    """

    cu_seqlens: torch.Tensor  # (N+1,) int32, segment starts in the flat stream
    cu_prefix_lens: torch.Tensor  # (N+1,) int32, over the concatenated instruction tokens
    cu_causal_lens: torch.Tensor  # (N+1,) int32, over the concatenated response tokens
    prefix_index: torch.Tensor  # flat positions of instruction tokens, in stream order
    causal_index: torch.Tensor  # flat positions of the other tokens, in stream order
    max_seqlen: int
    max_prefix_len: int
    max_causal_len: int

    @classmethod
    def from_layout(cls, layout: AttentionLayout) -> VarlenLayout:
        segment = layout.segment_ids_BT.long()
        B, T = segment.shape
        prefix = layout.prefix_BT.reshape(-1)
        # A segment starts where the id changes within a row, and at every row start.
        starts_BT = torch.ones_like(segment, dtype=torch.bool)
        starts_BT[:, 1:] = segment[:, 1:] != segment[:, :-1]
        starts = torch.nonzero(starts_BT.reshape(-1)).flatten()
        cu_seqlens = torch.cat([starts, starts.new_tensor([B * T])])
        segment_of_token = torch.cumsum(starts_BT.reshape(-1).long(), 0) - 1
        n_segments = starts.numel()
        prefix_lens = torch.bincount(segment_of_token[prefix], minlength=n_segments)
        causal_lens = torch.bincount(segment_of_token[~prefix], minlength=n_segments)

        def cumulative(lengths: torch.Tensor) -> torch.Tensor:
            return F.pad(torch.cumsum(lengths, 0), (1, 0)).to(torch.int32)

        return cls(
            cu_seqlens=cu_seqlens.to(torch.int32),
            cu_prefix_lens=cumulative(prefix_lens),
            cu_causal_lens=cumulative(causal_lens),
            prefix_index=torch.nonzero(prefix).flatten(),
            causal_index=torch.nonzero(~prefix).flatten(),
            max_seqlen=int((cu_seqlens[1:] - cu_seqlens[:-1]).max()),
            max_prefix_len=int(prefix_lens.max()),
            max_causal_len=int(causal_lens.max()),
        )


# Probed once at import: a module constant is free inside a compiled model, where an import
# lookup would break the graph (torch.compile does not trace importlib).
_FA3_AVAILABLE = importlib.util.find_spec("flash_attn_interface") is not None
_FLEX_AVAILABLE = importlib.util.find_spec("torch.nn.attention.flex_attention") is not None


def fa3_available() -> bool:
    return _FA3_AVAILABLE


def flex_available() -> bool:
    return _FLEX_AVAILABLE


def select_backend(requested: str, device: torch.device, needs_grad: bool) -> str:
    """Resolve `auto` and check that a forced backend can run here; errors name the fix."""
    if requested not in ("auto", *BACKENDS):
        raise FrugalError(f"unknown attention backend {requested!r}; allowed: auto, {', '.join(BACKENDS)}")
    on_gpu = device.type == "cuda"
    if requested == "auto":
        if on_gpu and fa3_available() and torch.cuda.get_device_capability(device)[0] == 9:
            return "fa3"
        return "flex" if on_gpu and flex_available() else "sdpa"
    if requested == "fa3" and not (on_gpu and fa3_available()):
        raise FrugalError(
            "attention_backend=fa3 needs a CUDA GPU and the flash_attn_interface package "
            "(FlashAttention 3, Hopper); use attention_backend=auto"
        )
    if requested == "flex":
        if not flex_available():
            raise FrugalError(
                f"attention_backend=flex needs torch.nn.attention.flex_attention "
                f"(PyTorch >= 2.5); this is PyTorch {torch.__version__}"
            )
        if not on_gpu and needs_grad:
            raise FrugalError(
                "attention_backend=flex runs on CPU only without gradients; "
                "train on CPU with attention_backend=sdpa (or auto)"
            )
    return requested


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def grouped_query(q_BHTD: torch.Tensor, k_BGTD: torch.Tensor) -> dict[str, bool]:
    """`enable_gqa=True` for SDPA and FlexAttention when keys have fewer heads than queries;
    nothing otherwise, so multi-head attention calls the kernels exactly as before."""
    return {"enable_gqa": True} if k_BGTD.shape[1] != q_BHTD.shape[1] else {}


def _flex(q, k, v, layout: AttentionLayout) -> torch.Tensor:
    if q.device.type == "cuda":
        return _compiled_flex_attention()(q, k, v, block_mask=layout.block_mask, **grouped_query(q, k))
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=layout.block_mask, **grouped_query(q, k))


def _fa3(q, k, v, layout: AttentionLayout) -> torch.Tensor:
    from flash_attn_interface import flash_attn_varlen_func

    B, H, T, D = q.shape
    varlen = layout.varlen
    # (B, H|G, T, D) -> (B*T, H|G, D): the token stream FlashAttention's varlen API expects
    # (it takes G < H key/value heads as they are).
    q_flat, k_flat, v_flat = (x.transpose(1, 2).reshape(B * T, x.shape[1], D) for x in (q, k, v))
    out_flat = torch.empty_like(q_flat)
    index = varlen.prefix_index
    out_flat[index] = _first(
        flash_attn_varlen_func(
            q_flat[index],
            k_flat[index],
            v_flat[index],
            varlen.cu_prefix_lens,
            varlen.cu_prefix_lens,
            varlen.max_prefix_len,
            varlen.max_prefix_len,
            causal=False,
        )
    )
    # Response queries over their whole example; causal masks align bottom-right, so the
    # j-th response query sees the instruction and response tokens 0..j.
    index = varlen.causal_index
    out_flat[index] = _first(
        flash_attn_varlen_func(
            q_flat[index],
            k_flat,
            v_flat,
            varlen.cu_causal_lens,
            varlen.cu_seqlens,
            varlen.max_causal_len,
            varlen.max_seqlen,
            causal=True,
        )
    )
    return out_flat.reshape(B, T, H, D).transpose(1, 2)


def _first(result):
    # flash_attn_interface returns (out, softmax_lse) in some versions and out in others.
    return result[0] if isinstance(result, tuple) else result


def prefix_lm_attention(
    q_BHTD: torch.Tensor, k_BGTD: torch.Tensor, v_BGTD: torch.Tensor, layout: AttentionLayout, backend: str
) -> torch.Tensor:
    """Attention under the packed PrefixLM mask; `backend` already resolved by `select_backend`."""
    if backend == "sdpa":
        return F.scaled_dot_product_attention(
            q_BHTD, k_BGTD, v_BGTD, attn_mask=layout.dense_mask_B1TT, **grouped_query(q_BHTD, k_BGTD)
        )
    if backend == "flex":
        return _flex(q_BHTD, k_BGTD, v_BGTD, layout)
    if backend == "fa3":
        return _fa3(q_BHTD, k_BGTD, v_BGTD, layout)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
