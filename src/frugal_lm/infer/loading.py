"""`--model DIR`: find a model's config, weights and tokenizer, and build it for inference.

DIR may be (DESIGN.md):
- a training run directory: its latest complete checkpoint;
- one checkpoint directory (`checkpoints/step_00001234/`);
- an exported model directory (`frugal export hf`), read through `frugal_lm.interop`.

EMA weights are used when present (`prefer_ema=False` for the raw weights): the averaged
weights are the better model. Only safetensors and YAML/JSON are read, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.data.tokenizer import TextTokenizer, load_tokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.interop import is_hf_model_directory, read_hf_model
from frugal_lm.model import LanguageModel, build_model
from frugal_lm.model.layers import RotaryEmbedding
from frugal_lm.train.checkpoint import latest_checkpoint
from frugal_lm.train.weights import load_weights, read_model_config, weights_file


@dataclass
class LoadedModel:
    model: LanguageModel      # in eval mode, on `device`
    config: ModelConfig
    tokenizer: TextTokenizer
    weights_path: Path        # the file the weights came from (EMA or raw)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device


def checkpoint_folder(directory: Path) -> Path:
    """The checkpoint DIR stands for: itself, or a run's latest checkpoint."""
    if not directory.is_dir():
        raise FrugalError(f"{directory}: no such model directory")
    if (directory / "config.yaml").is_file() and (directory / "model.safetensors").is_file():
        return directory
    checkpoint = latest_checkpoint(directory)
    if checkpoint is None:
        raise FrugalError(f"{directory}: not a model directory (expected a training run with checkpoints/, "
                          f"a checkpoint with config.yaml and model.safetensors, or an exported model)")
    return checkpoint


def load_model(directory: Path | str, device: torch.device | str = "cpu", prefer_ema: bool = True) -> LoadedModel:
    """Build the model stored in `directory` (fp32, eval mode) with its tokenizer."""
    directory = Path(directory)
    if directory.is_dir() and is_hf_model_directory(directory):
        # `frugal export hf` output, or released hrm_text weights: one file, EMA or not was chosen at export.
        hf_model = read_hf_model(directory)
        return LoadedModel(materialize(hf_model.config, hf_model.weights, device), hf_model.config,
                           hf_model.tokenizer, hf_model.weights_path)
    checkpoint = checkpoint_folder(directory)
    config = read_model_config(checkpoint)
    tokenizer_dir = checkpoint / "tokenizer"
    if not tokenizer_dir.is_dir():
        raise FrugalError(f"{checkpoint}: no tokenizer/ folder (the checkpoint was written without one)")
    tokenizer = load_tokenizer(tokenizer_dir)
    model = materialize(config, load_weights(checkpoint, config, prefer_ema), device)
    return LoadedModel(model, config, tokenizer, weights_file(checkpoint, prefer_ema))


def materialize(config: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device | str) -> LanguageModel:
    """The model with `weights`, in eval mode, without paying for a random init first."""
    model = build_model(config, device="meta")
    model.to_empty(device=device)
    model.load_state_dict(weights, strict=True)
    # The RoPE frequencies are a non-persistent buffer: recompute them, not load them.
    model.rotary.inv_freq.copy_(RotaryEmbedding(config.head_dim, config.rope_theta).inv_freq)
    return model.eval()
