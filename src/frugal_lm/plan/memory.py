"""Memory per device for training, so the planner can warn before a run cannot fit.

Assumptions (stated in `frugal plan --help` too):
- model state in fp32, sharded by FSDP over every GPU: master weights 4 B, gradients 4 B,
  AdamATan2's two moments 8 B and the EMA copy 4 B = 20 bytes per parameter / gpus;
- FSDP gathers one block's weights at a time in the compute dtype, with one block
  prefetched, plus the root unit (embedding and LM head) while it runs;
- activations only for the `bp_steps` passes inside the gradient window (the others run
  under no_grad and keep only the recurrent states). Counting the tensors autograd saves
  in our block: per token 15 C + 4 I values (norm inputs and outputs, q/k before and after
  RoPE, v, attention output and its reshaped copy, sigmoid gate, gated product; SwiGLU
  gate, SiLU, up, product) plus per-token scalars (2 RMS factors, H log-sum-exps);
  MagicNorm adds C per pass;
- LM head on labelled tokens: the gathered hidden state (C), logits and their fp32 copy,
  and the fp32 log-softmax cross-entropy keeps, i.e. C + 2 V values in fp32 + V in the
  compute dtype per labelled token.
Transient buffers (allocator slack, NCCL, the backward's own temporaries) come on top; the
planner adds `overhead_fraction` for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugal_lm.config import ModelConfig
from frugal_lm.model import count_parameters

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


def block_parameters(config: ModelConfig) -> int:
    width = config.n_heads * config.head_dim
    return 5 * config.hidden_size * width + 3 * config.hidden_size * config.intermediate_size


def activation_values_per_token_per_block(config: ModelConfig) -> int:
    """Values autograd keeps per token for one block (see the module docstring)."""
    return 15 * config.hidden_size + 4 * config.intermediate_size + 2 + config.n_heads


def estimate_memory(
    config: ModelConfig,
    tokens_per_device: int,
    gpus: int = 1,
    bp_steps: int | None = None,
    label_fraction: float = 0.7,
    compute_bytes: int = 2,
    overhead_fraction: float = 0.1,
    sharded: bool = True,
) -> MemoryEstimate:
    """Peak bytes on one device for one micro-batch of `tokens_per_device` tokens.

    `compute_bytes`: 2 when training computes in bf16, 4 in fp32. `sharded=False` is a
    single process without FSDP (nothing gathered, nothing divided)."""
    parameters = count_parameters(config)
    shards = gpus if sharded else 1
    model_state = MODEL_STATE_BYTES_PER_PARAMETER * parameters / shards
    root = 2 * config.vocab_size * config.hidden_size
    gathered = (2 * block_parameters(config) + root) * compute_bytes if sharded and gpus > 1 else 0.0
    passes = config.stack_passes if bp_steps is None else min(bp_steps, config.stack_passes)
    per_pass = config.layers_per_stack * activation_values_per_token_per_block(config) + config.hidden_size
    states = 2 * config.hidden_size  # recurrent states alive across no_grad passes
    activations = tokens_per_device * (passes * per_pass + states) * compute_bytes
    labelled = tokens_per_device * label_fraction
    lm_head = labelled * ((config.hidden_size + 2 * config.vocab_size) * 4 + config.vocab_size * compute_bytes)
    subtotal = model_state + gathered + activations + lm_head
    return MemoryEstimate(model_state, gathered, activations, lm_head, overhead_fraction * subtotal)
