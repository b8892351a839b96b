"""Memory per device for training, so the planner can warn before a run cannot fit.

Assumptions (stated in `frugal plan --help` too):
- model state in fp32: master weights 4 B, gradients 4 B, AdamATan2's two moments 8 B and
  the EMA copy 4 B = 20 bytes per parameter, sharded by FSDP over every GPU, except the
  routed experts under expert parallelism (`train/expert_parallel.py`): a rank keeps its
  E / expert_parallel experts of every MoE layer whole, the same on each of the
  gpus / expert_parallel replicas, so their state is 20 B x routed parameters / expert_parallel;
- weights in the compute dtype: FSDP gathers each block once per step and keeps it until the
  backward pass (`reshard_after_forward=False` in `train/distributed.py`: the recurrent
  passes reuse every block), so each FSDP-sharded parameter is resident once more, gathered
  (bf16 runs gather bf16; a single bf16 process holds the same copy, its weights cast once
  per step). Expert-parallel experts are not gathered;
- activations only for the `bp_steps` passes inside the gradient window (the others run
  under no_grad and keep only the recurrent states). Counting the tensors autograd saves
  in our block: per token 15 C + 4 I values (norm inputs and outputs, q/k before and after
  RoPE, v, attention output and its reshaped copy, sigmoid gate, gated product; SwiGLU
  gate, SiLU, up, product) plus per-token scalars (2 RMS factors, H log-sum-exps);
  MagicNorm adds C per pass. Grouped-query attention shrinks the k and v terms to
  G x D each, `attention_gate: false` drops the gate's 2 C. An MoE block keeps, instead of
  the SwiGLU's 4 I, per routed copy of a token (top_k of them) its dispatched input and
  expert output (2 C) and the expert's 4 W, the shared experts' 4 S x W, and the router's
  scores and probabilities (2 E); balanced routing hands each rank top_k copies per token
  it sends, so the count is the same with expert parallelism. With activation
  checkpointing a block keeps only its input (C per token) and the backward pass
  recomputes one block at a time: its full count once, on top;
- LM head on labelled tokens: the gathered hidden state (C), logits and their fp32 copy,
  and the fp32 log-softmax cross-entropy keeps, i.e. C + 2 V values in fp32 + V in the
  compute dtype per labelled token.
Transient buffers (allocator slack, NCCL, the backward's own temporaries) come on top; the
planner adds `overhead_fraction` for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal_lm.config import ModelConfig
from frugal_lm.plan.parameters import ParameterBreakdown

MODEL_STATE_BYTES_PER_PARAMETER = 20
"""fp32 weights + fp32 grads + two fp32 AdamATan2 moments + fp32 EMA."""


@dataclass(frozen=True)
class MemoryEstimate:
    model_state: float
    gathered_weights: float
    activations: float
    lm_head: float
    overhead: float

    @property
    def total(self) -> float:
        return self.model_state + self.gathered_weights + self.activations + self.lm_head + self.overhead


def _attention_values(config: ModelConfig) -> int:
    C, kv_width = config.hidden_size, config.kv_heads * config.head_dim
    return 10 * C + 3 * kv_width + 2 * C * config.attention_gate + 2 + config.n_heads


def _ffn_values(config: ModelConfig, moe_block: bool) -> int:
    if not moe_block:
        return 4 * config.intermediate_size
    moe, C, W = config.moe, config.hidden_size, config.expert_intermediate_size
    return moe.top_k * (4 * W + 2 * C) + 4 * moe.shared_experts * W + 2 * moe.experts


def activation_values_per_token_per_block(config: ModelConfig, moe_block: bool = False) -> int:
    """Values autograd keeps per token for one block (see the module docstring)."""
    return _attention_values(config) + _ffn_values(config, moe_block)


def activation_values_per_token_per_pass(config: ModelConfig) -> int:
    """Values one stack pass keeps per token: its blocks and the MagicNorm."""
    parameters = ParameterBreakdown.of(config)
    dense = parameters.dense_blocks_per_stack * activation_values_per_token_per_block(config)
    moe = parameters.moe_blocks_per_stack * activation_values_per_token_per_block(config, moe_block=True)
    return dense + moe + config.hidden_size


def estimate_memory(
    config: ModelConfig,
    tokens_per_device: int,
    gpus: int = 1,
    bp_steps: int | None = None,
    label_fraction: float = 0.7,
    compute_bytes: int = 2,
    overhead_fraction: float = 0.1,
    sharded: bool = True,
    expert_parallel: int = 1,
    activation_checkpointing: bool = False,
) -> MemoryEstimate:
    """Peak bytes on one device for one micro-batch of `tokens_per_device` tokens.

    `compute_bytes`: 2 when training computes in bf16, 4 in fp32. `sharded=False` is a
    single process without FSDP (nothing gathered, nothing divided). `expert_parallel`:
    ranks each MoE layer's routed experts are split over. `activation_checkpointing`: each
    block keeps only its input and one block's activations are recomputed at a time."""
    parameters = ParameterBreakdown.of(config)
    # Expert parallelism's experts are its own (not FSDP's): E / expert_parallel per rank, whole.
    own_experts = parameters.routed_experts if expert_parallel > 1 else 0
    fsdp = parameters.total - own_experts
    model_state = MODEL_STATE_BYTES_PER_PARAMETER * (fsdp / (gpus if sharded else 1) + own_experts / expert_parallel)
    gathering = sharded and gpus > 1
    gathered = fsdp * compute_bytes if gathering or compute_bytes < 4 else 0.0
    passes = config.stack_passes if bp_steps is None else min(bp_steps, config.stack_passes)
    per_pass = activation_values_per_token_per_pass(config)
    states = 2 * config.hidden_size  # recurrent states alive across no_grad passes
    if activation_checkpointing:
        largest_block = max(
            activation_values_per_token_per_block(config, moe_block=config.is_moe_layer(index))
            for index in range(config.layers_per_stack)
        )
        per_pass = (config.layers_per_stack + 1) * config.hidden_size
        states += largest_block
    activations = tokens_per_device * (passes * per_pass + states) * compute_bytes
    labelled = tokens_per_device * label_fraction
    lm_head = labelled * ((config.hidden_size + 2 * config.vocab_size) * 4 + config.vocab_size * compute_bytes)
    subtotal = model_state + gathered + activations + lm_head
    return MemoryEstimate(model_state, gathered, activations, lm_head, overhead_fraction * subtotal)
