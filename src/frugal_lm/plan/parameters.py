"""Where a model's parameters sit, from its config alone: what the planner's FLOPs, memory
and expert-parallel traffic are counted from.

Parameters are a pure function of the config (no biases, parameter-free norms):
- embedding V x C and an untied LM head C x V;
- per block, attention: q and o (C x H*D each), k and v (C x G*D each, G = n_kv_heads), and
  the sigmoid gate (C x H*D) unless `attention_gate: false`;
- per block, the FFN: a dense SwiGLU (3 C x I) in the first `moe.first_dense_layers` blocks
  of each stack and in every block of a dense model; otherwise a mixture of experts: the
  router (E x C), E routed experts and `shared_experts` always-on ones, each a SwiGLU of
  width W = `moe.intermediate_size` (3 C x W).
A token runs through the dense parts, the router, its `top_k` routed experts and the shared
ones: those are its *active* parameters, what compute scales with. `total` and `active`
equal `frugal_lm.model.parameter_counts` (and the built module's `numel`; tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal_lm.config import ModelConfig


@dataclass(frozen=True)
class ParameterBreakdown:
    embedding: int
    lm_head: int
    stacks: int
    """Stacks with their own weights (HRM: H and L; Transformer and Universal: one)."""
    blocks_per_stack: int
    moe_blocks_per_stack: int
    attention: int
    """One block's attention projections."""
    dense_ffn: int
    """One dense block's SwiGLU."""
    router: int
    expert: int
    """One routed (or shared) expert's SwiGLU."""
    experts: int
    shared_experts: int
    top_k: int

    @classmethod
    def of(cls, config: ModelConfig) -> ParameterBreakdown:
        C = config.hidden_size
        width, kv_width = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
        moe = config.moe
        per_stack = config.layers_per_stack
        return cls(
            embedding=config.vocab_size * C,
            lm_head=C * config.vocab_size,
            stacks=config.n_layers // per_stack,
            blocks_per_stack=per_stack,
            moe_blocks_per_stack=sum(config.is_moe_layer(index) for index in range(per_stack)),
            attention=C * (2 * width + 2 * kv_width + width * config.attention_gate),
            dense_ffn=3 * C * config.intermediate_size,
            router=moe.experts * C if moe.enabled else 0,
            expert=3 * C * config.expert_intermediate_size if moe.enabled else 0,
            experts=moe.experts,
            shared_experts=moe.shared_experts if moe.enabled else 0,
            top_k=moe.top_k if moe.enabled else 0,
        )

    @property
    def dense_blocks_per_stack(self) -> int:
        return self.blocks_per_stack - self.moe_blocks_per_stack

    @property
    def moe_blocks(self) -> int:
        """MoE blocks in the whole model (each stack has its own)."""
        return self.stacks * self.moe_blocks_per_stack

    @property
    def dense_block(self) -> int:
        return self.attention + self.dense_ffn

    @property
    def moe_block(self) -> int:
        return self.attention + self.router + (self.experts + self.shared_experts) * self.expert

    @property
    def active_moe_block(self) -> int:
        return self.attention + self.router + (self.top_k + self.shared_experts) * self.expert

    @property
    def stack(self) -> int:
        """One stack's parameters."""
        return self.dense_blocks_per_stack * self.dense_block + self.moe_blocks_per_stack * self.moe_block

    @property
    def active_per_pass(self) -> int:
        """Parameters one token runs through in one pass over a stack: 2x this is the pass's
        forward matmul FLOPs per token."""
        return self.dense_blocks_per_stack * self.dense_block + self.moe_blocks_per_stack * self.active_moe_block

    @property
    def routed_experts(self) -> int:
        """Every routed expert's parameters: what expert parallelism shards."""
        return self.moe_blocks * self.experts * self.expert

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.stacks * self.stack

    @property
    def active(self) -> int:
        return self.embedding + self.lm_head + self.stacks * self.active_per_pass
