"""The Transformer block every net shares, and the stack of blocks that recurrent nets reuse.

Block (pre-norm, no biases): x + GatedAttention(rms(x)), then x + SwiGLU(rms(x)).
- RMSNorm has no parameters (eps 1e-6), as in HRM-Text.
- Attention has RoPE and a sigmoid output gate per channel, computed from the block input:
  out = o_proj(sigmoid(gate_proj(x)) * attention(x)). Two options depart from `hrm_text`
  (export refuses them): `n_kv_heads` < `n_heads` is grouped-query attention (each key/value
  head serves n_heads / n_kv_heads query heads; caches store only the key/value heads) and
  `attention_gate: false` drops gate_proj (out = o_proj(attention(x)), as Grok-1).
- The FFN is a SwiGLU, or with `model.moe` a mixture of experts (`moe.py`) in every block
  but the first `moe.first_dense_layers` of each stack; recurrent nets share it across
  passes like every weight, and each pass routes afresh.
- A stack ends with one more RMSNorm ("MagicNorm"), so every recurrent state a stack
  hands on has unit RMS, whatever the depth of the recurrence.
Parameter names follow transformers' `hrm_text` so weights map one to one.

KV caches (inference): every module takes an optional `cache`, an object with
`attend(layer_slot, q, k, v)` that stores this call's keys and values at its slot and
returns the attention over everything cached (`frugal_lm.infer.kv_cache` implements it).
The model only says *which* slot a layer is (`first_slot + block index`; recurrent nets
give each stack pass its own slots); how keys are stored, masked and batched is the
engine's business. With `cache=None` the code path is exactly the training one.

Shape legend: B rows, T tokens, C hidden size, H heads (G key/value heads), D head dim.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import AttentionLayout, prefix_lm_attention
from frugal_lm.model.moe import MixtureOfExperts


class AttentionCache(Protocol):
    def attend(self, layer_slot: int, q_BHTD: torch.Tensor, k_BHTD: torch.Tensor, v_BHTD: torch.Tensor) -> torch.Tensor:
        """Store k, v (B, G, T, D) for `layer_slot` and return attention (B, H, T, D) over the cache."""


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in fp32 even when computing in bf16: the recurrence feeds states back many
    # times. PyTorch's fused kernel: one pass forward and one backward instead of six ops.
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).type_as(x)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the given positions (positions restart at 0 per packed example)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs_BTd = position_ids_BT[..., None].float() * self.inv_freq
        angles_BTD = torch.cat([freqs_BTd, freqs_BTd], dim=-1)
        return angles_BTD.cos().to(dtype), angles_BTD.sin().to(dtype)


def apply_rotary(x_BHTD: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor) -> torch.Tensor:
    half = x_BHTD.shape[-1] // 2
    rotated = torch.cat([-x_BHTD[..., half:], x_BHTD[..., :half]], dim=-1)
    return x_BHTD * cos_BTD[:, None] + rotated * sin_BTD[:, None]


class GatedAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.kv_heads, config.head_dim
        width, kv_width = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=False)
        # Registered in this order (q, k, v, gate, o) so that the seeded init stays the same.
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=False) if config.attention_gate else None
        self.o_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(
        self,
        x_BTC: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        layout: AttentionLayout | None,
        backend: str,
        cache: AttentionCache | None = None,
        layer_slot: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x_BTC.shape

        def heads(projection: nn.Linear, n_heads: int) -> torch.Tensor:
            return projection(x_BTC).view(B, T, n_heads, self.head_dim).transpose(1, 2)

        cos, sin = rotary
        q_BHTD = apply_rotary(heads(self.q_proj, self.n_heads), cos, sin)
        k_BGTD = apply_rotary(heads(self.k_proj, self.n_kv_heads), cos, sin)
        v_BGTD = heads(self.v_proj, self.n_kv_heads)
        if cache is None:
            attended_BHTD = prefix_lm_attention(q_BHTD, k_BGTD, v_BGTD, layout, backend)
        else:
            attended_BHTD = cache.attend(layer_slot, q_BHTD, k_BGTD, v_BGTD)
        attended_BTC = attended_BHTD.transpose(1, 2).reshape(B, T, -1)
        if self.gate_proj is not None:
            attended_BTC = torch.sigmoid(self.gate_proj(x_BTC)) * attended_BTC
        return self.o_proj(attended_BTC)


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig, intermediate_size: int | None = None):
        super().__init__()
        width = config.intermediate_size if intermediate_size is None else intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)

    def forward(self, x_BTC: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x_BTC)) * self.up_proj(x_BTC))


def feed_forward(config: ModelConfig, block_index: int) -> nn.Module:
    """Block `block_index`'s FFN: the dense SwiGLU, or a mixture of experts (`model.moe`)."""
    if not config.is_moe_layer(block_index):
        return SwiGLU(config)
    width = config.expert_intermediate_size * config.moe.shared_experts
    return MixtureOfExperts(config, SwiGLU(config, width) if width else None)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, index: int = 0):
        super().__init__()
        self.eps = config.norm_eps
        self.self_attn = GatedAttention(config)
        self.mlp = feed_forward(config, index)

    def forward(
        self,
        x_BTC,
        rotary,
        layout: AttentionLayout | None,
        backend: str,
        cache: AttentionCache | None = None,
        layer_slot: int = 0,
    ) -> torch.Tensor:
        x_BTC = x_BTC + self.self_attn(rms_norm(x_BTC, self.eps), rotary, layout, backend, cache, layer_slot)
        if isinstance(self.mlp, SwiGLU):
            return x_BTC + self.mlp(rms_norm(x_BTC, self.eps))
        # Padding never reaches an expert: the experts see the packed batch's example ids.
        segments_BT = layout.segment_ids_BT if layout is not None and cache is None else None
        return x_BTC + self.mlp(rms_norm(x_BTC, self.eps), segments_BT)

    def report_routing(self) -> None:
        """Hand an MoE FFN's routing statistics of the last call to its recorder, if any (eager
        code, outside a compiled block)."""
        if isinstance(self.mlp, MixtureOfExperts):
            self.mlp.report()


class Stack(nn.Module):
    """`n_blocks` blocks followed by the MagicNorm."""

    def __init__(self, config: ModelConfig, n_blocks: int):
        super().__init__()
        self.eps = config.norm_eps
        self.layers = nn.ModuleList(Block(config, index) for index in range(n_blocks))
        self.checkpoint_blocks = False
        """Recompute each block's activations in the backward pass (activation checkpointing)."""

    def forward(
        self,
        x_BTC,
        rotary,
        layout: AttentionLayout | None,
        backend: str,
        cache: AttentionCache | None = None,
        first_slot: int = 0,
    ) -> torch.Tensor:
        recompute = self.checkpoint_blocks and cache is None and torch.is_grad_enabled()
        for index, block in enumerate(self.layers):
            if recompute:
                x_BTC = checkpoint(block, x_BTC, rotary, layout, backend, use_reentrant=False)
            else:
                x_BTC = block(x_BTC, rotary, layout, backend, cache, first_slot + index)
            block.report_routing()
        return rms_norm(x_BTC, self.eps)
