"""`--model DIR`: find a model's config, weights and tokenizer, and build it for inference.

DIR may be (ARCHITECTURE.md, "Model directories"):
- a training run directory: its latest complete checkpoint;
- one checkpoint directory (`checkpoints/step_00001234/`);
- an exported model directory (`frugal export hf`), read through `frugal_lm.interop`;
- a `frugal demo` directory: its `run/` (the README's `--model runs/demo`).

EMA weights are used when present (`prefer_ema=False` for the raw weights): the averaged
weights are the better model. Only safetensors and YAML/JSON are read, never pickle.

Weights are stored fp32; `dtype` casts the built model (`--dtype`: `auto` is bf16 on a GPU,
half the memory and traffic of fp32 for the weights and the KV cache, and fp32 on CPU,
where fp32 gives the exact tokens of the training forward). The RoPE frequencies stay fp32
in any dtype: positions times a bf16 frequency would be off by whole radians at long
contexts.
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
from frugal_lm.train.checkpoint import checkpoint_of, latest_checkpoint
from frugal_lm.train.weights import load_weights, read_model_config, weights_file


@dataclass
class LoadedModel:
    model: LanguageModel  # in eval mode, on `device`
    config: ModelConfig
    tokenizer: TextTokenizer
    weights_path: Path  # the file the weights came from (EMA or raw)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device


def model_directory(directory: Path) -> Path:
    """DIR itself, or the training run inside a `frugal demo` directory (DIR/run)."""
    if (
        directory.is_dir()
        and not (directory / "config.yaml").is_file()
        and latest_checkpoint(directory) is None
        and not is_hf_model_directory(directory)
        and latest_checkpoint(directory / "run") is not None
    ):
        return directory / "run"
    return directory


def default_model_name(directory: Path | str) -> str:
    """A name for the model in DIR that says which model it is: the directory's name, except a
    run named `run` (the demo's) is called after its parent, and a checkpoint after its run
    and step (`mine-step1200`)."""
    path = model_directory(Path(directory)).resolve()
    if path.name.startswith("step_") and path.parent.name == "checkpoints":
        return f"{default_model_name(path.parent.parent)}-step{int(path.name.removeprefix('step_') or 0)}"
    return path.parent.name if path.name == "run" and path.parent.name else path.name


def checkpoint_folder(directory: Path) -> Path:
    """The checkpoint DIR stands for (`checkpoint_of`), after a demo directory's run."""
    return checkpoint_of(model_directory(directory))


INFERENCE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def inference_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`, `fp32` or `bf16` (every inference command's `--dtype`) -> a dtype."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in INFERENCE_DTYPES:
        raise FrugalError(f"--dtype must be auto, {' or '.join(INFERENCE_DTYPES)}; got {name!r}")
    return INFERENCE_DTYPES[name]


def load_model(
    directory: Path | str,
    device: torch.device | str = "cpu",
    prefer_ema: bool = True,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Build the model stored in `directory` (in `dtype`, eval mode) with its tokenizer."""
    directory = Path(directory)
    if directory.is_dir() and is_hf_model_directory(directory):
        # `frugal export hf` output, or released hrm_text weights: one file, EMA or not was chosen at export.
        hf_model = read_hf_model(directory)
        return LoadedModel(
            materialize(hf_model.config, hf_model.weights, device, dtype),
            hf_model.config,
            hf_model.tokenizer,
            hf_model.weights_path,
        )
    checkpoint = checkpoint_folder(directory)
    config = read_model_config(checkpoint)
    tokenizer_dir = checkpoint / "tokenizer"
    if not tokenizer_dir.is_dir():
        raise FrugalError(f"{checkpoint}: no tokenizer/ folder (the checkpoint was written without one)")
    tokenizer = load_tokenizer(tokenizer_dir)
    model = materialize(config, load_weights(checkpoint, config, prefer_ema), device, dtype)
    return LoadedModel(model, config, tokenizer, weights_file(checkpoint, prefer_ema))


def materialize(
    config: ModelConfig,
    weights: dict[str, torch.Tensor],
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> LanguageModel:
    """The model with `weights`, in `dtype` and eval mode, without paying for a random init first."""
    model = build_model(config, device="meta")
    model.to_empty(device=device)
    model.to(dtype)
    model.load_state_dict(weights, strict=True)  # casts each tensor as it copies
    # The RoPE frequencies are a non-persistent buffer: recompute them (fp32), not load them.
    model.rotary.inv_freq = RotaryEmbedding(config.head_dim, config.rope_theta).inv_freq.to(device)
    return model.eval()
