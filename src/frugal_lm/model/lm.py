"""What every net shares: scaled token embedding, recurrence over stacks, untied LM head.

A net is a schedule of *stack passes* over recurrent states (HRM: 8 passes of two
half-depth stacks; Transformer: 1 pass; Universal Transformer: 4 passes of one stack).
Truncated backprop ("deep credit assignment"): only the last `bp_steps` passes carry
gradients; the earlier ones run under `torch.no_grad()`, so activation memory is that of
`bp_steps` passes. The first pass inside the window then gets an input that no longer
depends on the embedding; we add `emb - emb.detach()` to it, a zero in the forward pass
(bitwise: forward results do not depend on `bp_steps`) that routes the window's input
gradient to the embedding, the one-step gradient approximation HRM is built on. Without
it the embedding would get no gradient at all while bp_steps < 5.

Inference passes a KV cache (`kv_cache`, see `layers.AttentionCache`); the schedule
numbers the passes, so pass p's block j uses cache slot p * layers_per_stack + j, the
layout of transformers' `hrm_text`, for every net without the nets knowing about caches.

Init: LeCun truncated normal (std 1/sqrt(fan_in), cut at 2 std, std-corrected) for every
matrix (an MoE's stacked experts per expert matrix); the embedding uses `init_std` and is
scaled by 1/init_std, so tokens enter at unit scale while the embedding's parameters stay
small for the optimizer.
"""

from __future__ import annotations

import abc
import math
from contextlib import nullcontext

import torch
from torch import nn

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import AttentionLayout, select_backend
from frugal_lm.model.head import head_loss
from frugal_lm.model.layers import AttentionCache, RotaryEmbedding, Stack
from frugal_lm.model.moe import MixtureOfExperts

# Std of a standard normal truncated to [-2, 2]; dividing by it makes the truncated std exact.
_TRUNCATED_STD = 0.87962566103423978


def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    scaled = std / _TRUNCATED_STD
    return nn.init.trunc_normal_(tensor, mean=0.0, std=scaled, a=-2 * scaled, b=2 * scaled)


class PassSchedule:
    """Runs stack passes in order, with gradients only for the last `bp_steps` of `total`,
    and with cache slots of their own when a KV cache is given."""

    def __init__(
        self, total: int, bp_steps: int | None, embedding: torch.Tensor, kv_cache: AttentionCache | None = None
    ):
        self.first_with_grad = 0 if bp_steps is None else max(0, total - bp_steps)
        self.embedding = embedding
        self.kv_cache = kv_cache
        self.index = 0

    def run(self, stack: Stack, x_BTC: torch.Tensor, *args) -> torch.Tensor:
        with_grad = self.index >= self.first_with_grad
        if with_grad and torch.is_grad_enabled() and self.embedding.requires_grad and not x_BTC.requires_grad:
            x_BTC = x_BTC + (self.embedding - self.embedding.detach())
        pass_index = self.index
        self.index += 1
        with nullcontext() if with_grad else torch.no_grad():
            if self.kv_cache is None:
                return stack(x_BTC, *args)
            return stack(x_BTC, *args, cache=self.kv_cache, first_slot=pass_index * len(stack.layers))


class LanguageModel(nn.Module, abc.ABC):
    """Base of all nets: `forward` gives logits, `hidden_states` the trunk's output."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding_scale = 1.0 / config.embedding_init_std
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def reset_parameters(self) -> None:
        """LeCun truncated-normal init of every weight (call after `to_empty` on meta models)."""
        trunc_normal_(self.embed_tokens.weight, self.config.embedding_init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, 1.0 / math.sqrt(module.in_features))
            elif isinstance(module, MixtureOfExperts):  # its router and stacked experts, per fan-in too
                module.reset_parameters(trunc_normal_)
        self.rotary.inv_freq.copy_(RotaryEmbedding(self.config.head_dim, self.config.rope_theta).inv_freq)

    @abc.abstractmethod
    def trunk(
        self, x_BTC: torch.Tensor, rotary, layout: AttentionLayout, backend: str, schedule: PassSchedule
    ) -> torch.Tensor:
        """The net's recurrence: embedded tokens (B, T, C) -> final states, every stack
        pass run through `schedule.run`."""

    def hidden_states(
        self,
        input_ids_BT: torch.Tensor,
        position_ids_BT: torch.Tensor,
        layout: AttentionLayout | None,
        bp_steps: int | None = None,
        kv_cache: AttentionCache | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, C). `bp_steps=None` backpropagates through every pass.
        With `kv_cache`, attention goes through the cache and `layout` is not used."""
        x_BTC = self.embed_tokens(input_ids_BT) * self.embedding_scale
        rotary = self.rotary(position_ids_BT, x_BTC.dtype)
        # Through a cache, attention is the cache's own: there is no backend to choose.
        backend = (
            "sdpa"
            if kv_cache is not None
            else select_backend(self.config.attention_backend, x_BTC.device, torch.is_grad_enabled())
        )
        if kv_cache is None and layout is not None:
            layout.prepare(backend)
        schedule = PassSchedule(self.config.stack_passes, bp_steps, x_BTC, kv_cache)
        return self.trunk(x_BTC, rotary, layout, backend, schedule)

    def forward(
        self,
        input_ids_BT: torch.Tensor,
        position_ids_BT: torch.Tensor,
        layout: AttentionLayout | None,
        bp_steps: int | None = None,
        logits_at_BT: torch.Tensor | None = None,
        kv_cache: AttentionCache | None = None,
        targets_N: torch.Tensor | None = None,
    ):
        """Logits (B, T, V); with a boolean `logits_at_BT`, only at those positions (N, V),
        which is how the loss skips the LM head on unlabelled tokens (and the engine all
        but the last prompt token). With `targets_N` (one per selected position), the
        head's cross-entropy instead (`head.HeadLoss`, chunked when the logits would be
        large). Calling the model (not `hidden_states`) is what lets FSDP2's root hooks
        gather the embedding and head, and `functional_call` swap in bf16 weights."""
        hidden_BTC = self.hidden_states(input_ids_BT, position_ids_BT, layout, bp_steps, kv_cache)
        selected = hidden_BTC if logits_at_BT is None else hidden_BTC[logits_at_BT]
        if targets_N is not None:
            return head_loss(selected, self.lm_head.weight, targets_N)
        return self.lm_head(selected)


def bp_steps_at(config: ModelConfig, step: int, total_steps: int) -> int:
    """Passes with gradients at `step`: grows linearly from start to end over the warmup
    fraction of `total_steps` (floor), then stays at end; never more passes than exist."""
    warmup_steps = config.bp_warmup_fraction * total_steps
    if warmup_steps <= 0 or step >= warmup_steps:
        steps = config.bp_steps_end
    else:
        steps = config.bp_steps_start + math.floor((config.bp_steps_end - config.bp_steps_start) * step / warmup_steps)
    return min(steps, config.stack_passes)
