"""FLOP model of our nets, exact for the matmuls the code actually runs.

Why a hand count instead of 6ND: an HRM runs its stacks 8 times per token (2 H cycles x
(3 L + 1 H) passes of n_layers / 2 blocks), so its forward costs 4x a Transformer of the
same parameters, while truncated backprop differentiates only the last `bp_steps` passes,
and the LM head runs only on labelled (response) tokens. 6ND is wrong in both directions.

Counted (FLOPs = 2 x multiply-adds, per token):
- per stack pass, per block: the q, k, v, sigmoid-gate and o projections (k and v of the
  n_kv_heads key/value heads; no gate with `attention_gate: false`) and the FFN: the dense
  SwiGLU (3 C x I), or in a mixture-of-experts block the router (E x C), the `top_k` routed
  experts and the shared ones (3 C x W each); forward 2 x that, i.e. 2 x the pass's active
  parameters (`parameters.ParameterBreakdown.active_per_pass`). A token's top-k experts are
  the same FLOPs whichever experts they are; dropped tokens (a capacity factor) are not
  subtracted;
- attention scores and values: 4 x H*D per attended (query, key) pair per block and pass,
  under the PrefixLM mask (see `attended_pairs`), i.e. what a mask-aware kernel (flex,
  FA3) does; a dense-mask kernel does T x T per row instead;
- backward = 2 x forward (input and weight gradients) for the `bp_steps` passes inside
  the gradient window only; the earlier passes run under no_grad. The straight-through
  embedding gradient (`emb - emb.detach()`) is a scatter-add, no matmul;
- LM head (2 C V forward, 4 C V backward) only on labelled tokens.
Elementwise work (norms, RoPE, SiLU, softmax) is left out, as every MFU convention does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from frugal_lm.config import ModelConfig
from frugal_lm.model.lm import bp_steps_at
from frugal_lm.plan.parameters import ParameterBreakdown

BACKWARD_FACTOR = 2.0
"""Backward matmuls per forward matmul: one for the input gradient, one for the weights."""


def attended_pairs(prefix_len: int, total_len: int) -> int:
    """(query, key) pairs one example attends under PrefixLM: the instruction (prefix_len
    tokens) sees itself bidirectionally, each later token sees every earlier one and itself."""
    if not 0 <= prefix_len <= total_len:
        raise ValueError(f"need 0 <= prefix_len <= total_len, got {prefix_len}, {total_len}")
    causal = total_len * (total_len + 1) // 2 - prefix_len * (prefix_len + 1) // 2
    return prefix_len * prefix_len + causal


@dataclass(frozen=True)
class LengthProfile:
    """What the attention FLOPs depend on: attended pairs per token.

    For examples of length n with prefix P, pairs per token = sum(pairs) / sum(n): the mean
    of squared lengths over the mean length, halved by the causal part. Build it from real
    data with `from_examples` or assume a mean length with `assumed`."""

    pairs_per_token: float

    @classmethod
    def from_examples(cls, lengths: Iterable[tuple[int, int]]) -> LengthProfile:
        """From (prefix_len, total_len) per example, e.g. a mixed data set's inst/resp lengths."""
        pairs = tokens = 0
        for prefix_len, total_len in lengths:
            pairs += attended_pairs(prefix_len, total_len)
            tokens += total_len
        if tokens == 0:
            raise ValueError("no tokens in the length profile")
        return cls(pairs / tokens)

    @classmethod
    def assumed(cls, mean_len: float, prefix_fraction: float = 0.3) -> LengthProfile:
        """Every example `mean_len` long with the given instruction share (continuous form)."""
        prefix = prefix_fraction * mean_len
        return cls((prefix * prefix + (mean_len * mean_len - prefix * prefix) / 2) / mean_len)


def matmul_flops_per_pass(config: ModelConfig) -> int:
    """Forward matmul FLOPs per token for one stack pass (all its blocks)."""
    return 2 * ParameterBreakdown.of(config).active_per_pass


def attention_flops_per_pass(config: ModelConfig, profile: LengthProfile) -> float:
    """Forward score (QK^T) and value (PV) FLOPs per token for one stack pass (every query
    head scores every key it sees: grouped-query attention saves memory, not these FLOPs)."""
    return 4.0 * config.n_heads * config.head_dim * profile.pairs_per_token * config.layers_per_stack


def lm_head_flops(config: ModelConfig) -> int:
    """Forward FLOPs of the LM head per labelled token."""
    return 2 * config.hidden_size * config.vocab_size


def mean_bp_steps(config: ModelConfig, total_steps: int = 10_000) -> float:
    """`bp_steps` averaged over a run of `total_steps` optimizer steps (the 2 -> 5 warmup
    over the first 20% of steps pulls it below the final value)."""
    if total_steps < 1:
        raise ValueError("total_steps must be >= 1")
    return sum(bp_steps_at(config, step, total_steps) for step in range(total_steps)) / total_steps


@dataclass(frozen=True)
class FlopBreakdown:
    """Training FLOPs per processed token, by component (forward and backward together)."""

    matmul_forward: float
    matmul_backward: float
    attention_forward: float
    attention_backward: float
    lm_head: float

    @property
    def matmul(self) -> float:
        """What a FLOP counter sees as dense matmuls (projections, MLP, LM head)."""
        return self.matmul_forward + self.matmul_backward + self.lm_head

    @property
    def attention(self) -> float:
        return self.attention_forward + self.attention_backward

    @property
    def total(self) -> float:
        return self.matmul + self.attention


def flop_breakdown(
    config: ModelConfig,
    bp_steps: float | None = None,
    label_fraction: float = 0.7,
    profile: LengthProfile | None = None,
) -> FlopBreakdown:
    """Per-token training FLOPs. `bp_steps`: passes with gradients (None = every pass, a
    fraction = an average over the run, see `mean_bp_steps`); `label_fraction`: share of
    tokens that carry a label (responses); `profile`: attention lengths (default: examples of
    `max_seq_len / 2` tokens, 30% instruction)."""
    passes = config.stack_passes
    window = passes if bp_steps is None else min(float(bp_steps), passes)
    if not 0.0 <= label_fraction <= 1.0:
        raise ValueError("label_fraction must be within [0, 1]")
    profile = profile or LengthProfile.assumed(config.max_seq_len / 2)
    matmul = matmul_flops_per_pass(config)
    attention = attention_flops_per_pass(config, profile)
    return FlopBreakdown(
        matmul_forward=matmul * passes,
        matmul_backward=BACKWARD_FACTOR * matmul * window,
        attention_forward=attention * passes,
        attention_backward=BACKWARD_FACTOR * attention * window,
        lm_head=(1 + BACKWARD_FACTOR) * lm_head_flops(config) * label_fraction,
    )


def training_flops_per_token(
    config: ModelConfig,
    bp_steps: float | None = None,
    label_fraction: float = 0.7,
    profile: LengthProfile | None = None,
) -> float:
    """Model FLOPs per processed (non-padding) token of one training step; tokens/s times
    this over the peak FLOP/s is the MFU the trainer reports."""
    return flop_breakdown(config, bp_steps, label_fraction, profile).total


def reference_flops_per_token(config: ModelConfig, bp_steps: float) -> float:
    """HRM-Text's own count, to compare MFU with its published runs: 2N per forward stack pass
    and 4N per backward one, N the parameters of one stack pass; no attention, no LM head."""
    stack_parameters = matmul_flops_per_pass(config) / 2
    return 2 * stack_parameters * config.stack_passes + 4 * stack_parameters * min(bp_steps, config.stack_passes)


def dense_transformer_flops_per_token(parameters: int) -> float:
    """The usual 6N: what a dense Transformer of `parameters` spends per token, for comparison
    (for a mixture of experts, N is the active parameters)."""
    return 6.0 * parameters
