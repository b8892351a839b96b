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
    C, V = config.hidden_size, config.vocab_size
    attention = 5 * C * config.n_heads * config.head_dim  # q, k, v, gate, o; no biases
    mlp = 3 * C * config.intermediate_size  # gate, up, down
    return 2 * V * C + config.n_layers * (attention + mlp)  # untied embedding + head


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
    "prefix_lm_attention",
    "select_backend",
]
