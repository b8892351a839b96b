"""Models: plain PyTorch, no knowledge of training, parallelism or serving."""

from __future__ import annotations

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.model.attention import AttentionLayout, prefix_lm_attention, select_backend
from frugal_lm.model.baselines import Transformer, UniversalTransformer
from frugal_lm.model.hrm import HRM
from frugal_lm.model.lm import LanguageModel, bp_steps_at
from frugal_lm.model.loss import LossOutput, language_model_loss

NETS: dict[str, type[LanguageModel]] = {"hrm": HRM, "transformer": Transformer, "universal": UniversalTransformer}


def build_model(config: ModelConfig, device: torch.device | str | None = None) -> LanguageModel:
    """Instantiate and initialise `config.net`. On `device="meta"` nothing is allocated:
    use `model.to_empty(device=...)` then `model.reset_parameters()` to materialise."""
    with torch.device(device) if device is not None else torch.device("cpu"):
        return NETS[config.net](config)


def count_parameters(config: ModelConfig) -> int:
    """Trainable parameters, from the config alone (equals sum(p.numel()) of the model)."""
    return parameter_counts(config)[0]


def parameter_counts(config: ModelConfig) -> tuple[int, int]:
    """(total, active) trainable parameters from the config alone: `active` are those one
    token goes through (a mixture of experts routes it through `top_k` of its experts)."""
    C, V = config.hidden_size, config.vocab_size
    width, kv_width = config.n_heads * config.head_dim, config.kv_heads * config.head_dim
    attention = C * (2 * width + 2 * kv_width + width * config.attention_gate)  # q, o, k, v, gate; no biases
    mlp = 3 * C * config.intermediate_size  # gate, up, down
    stacks = config.n_layers // config.layers_per_stack
    moe_layers = stacks * sum(config.is_moe_layer(index) for index in range(config.layers_per_stack))
    dense = 2 * V * C + config.n_layers * attention + (config.n_layers - moe_layers) * mlp  # untied embedding + head
    moe = config.moe
    expert = 3 * C * config.expert_intermediate_size
    router = moe.experts * C
    total = dense + moe_layers * (router + (moe.experts + moe.shared_experts) * expert)
    active = dense + moe_layers * (router + (moe.top_k + moe.shared_experts) * expert)
    return total, active


__all__ = [
    "NETS",
    "AttentionLayout",
    "HRM",
    "LanguageModel",
    "LossOutput",
    "Transformer",
    "UniversalTransformer",
    "bp_steps_at",
    "build_model",
    "count_parameters",
    "language_model_loss",
    "parameter_counts",
    "prefix_lm_attention",
    "select_backend",
]
