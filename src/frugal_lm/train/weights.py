"""Find and read model weights: a run directory, one checkpoint, or an exported model.

`DIR` may be a training run (its latest checkpoint), a checkpoint directory, or any
directory with `model.safetensors`. EMA weights (`ema.safetensors`) are preferred when
present, as the averaged weights are the better model. Only safetensors are read: no pickle.
Reading goes through `safetensors_io.read_tensors`: a checksum mismatch, a non-float or a
non-finite tensor is a one-line error, never a model that generates garbage.
"""

from __future__ import annotations

from pathlib import Path

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.errors import FrugalError
from frugal_lm.model import build_model
from frugal_lm.train.checkpoint import checkpoint_of, read_run_config
from frugal_lm.train.safetensors_io import read_tensors


def weights_file(directory: Path | str, prefer_ema: bool = True) -> Path:
    folder = checkpoint_of(directory)
    for name in ("ema.safetensors", "model.safetensors") if prefer_ema else ("model.safetensors",):
        if (folder / name).is_file():
            return folder / name
    raise FrugalError(f"{folder}: no model.safetensors (only the EMA's; leave out --no-ema)")


def load_weights(directory: Path | str, config: ModelConfig, prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Weights checked against `config`'s shapes, ready for `load_state_dict(strict=True)`."""
    path = weights_file(directory, prefer_ema)
    weights = read_tensors(path)
    expected = build_model(config, device="meta").state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise FrugalError(
            f"{path}: weights do not fit net={config.net} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise FrugalError(
                f"{path}: {name} has shape {tuple(weights[name].shape)}, the config needs "
                f"{tuple(tensor.shape)} (check preset, vocab and model.* keys)"
            )
    return weights


def read_model_config(checkpoint: Path) -> ModelConfig:
    return read_run_config(checkpoint).model
