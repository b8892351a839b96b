"""`--model DIR`: find a model's config, weights and tokenizer, and build it for inference.

DIR may be (ARCHITECTURE.md, "Model directories"):
- a training run directory: its latest complete checkpoint;
- one checkpoint directory (`checkpoints/step_00001234/`);
- an exported model directory (`frugal export hf`), read through `frugal_lm.interop`;
- a `frugal demo` directory: its `run/` (the README's `--model runs/demo`).

EMA weights are used when present (`prefer_ema=False` for the raw weights): the averaged
weights are the better model. Only safetensors and YAML/JSON are read, never pickle.

Weights are stored fp32; `--dtype` chooses how the built model computes (`Precision`):
- `fp32`: the exact tokens of the training forward; `auto` on CPU.
- `bf16`: half the memory and traffic of fp32 for the weights and the KV cache; `auto` on
  a GPU.
- `int8`: the Linear weights int8 with a scale per output channel (`quantize.py`), the rest
  bf16: a quarter of fp32's weight bytes, which bound decoding on a CPU.
The RoPE frequencies stay fp32 in any dtype: positions times a bf16 frequency would be off
by whole radians at long contexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from frugal_lm.config import ModelConfig
from frugal_lm.data.tokenizer import TextTokenizer, load_tokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.infer.quantize import has_int8_weights, quantize_linears_int8
from frugal_lm.interop import is_hf_model_directory, read_hf_model
from frugal_lm.model import LanguageModel, build_model
from frugal_lm.model.layers import RotaryEmbedding
from frugal_lm.runtime import cpu_has_native_bf16
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
        return self.model.embed_tokens.weight.device

    @property
    def precision(self) -> str:
        """fp32, bf16 or int8: how the model computes (`--dtype`)."""
        if has_int8_weights(self.model):
            return "int8"
        return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(self.model.embed_tokens.weight.dtype, "other")


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


@dataclass(frozen=True)
class Precision:
    """How an inference model computes: `compute_dtype` for activations, norms, attention and
    the KV cache, and either the same dtype for the Linear weights or int8 ones."""

    name: str
    compute_dtype: torch.dtype
    int8_weights: bool = False


PRECISIONS = {
    "fp32": Precision("fp32", torch.float32),
    "bf16": Precision("bf16", torch.bfloat16),
    "int8": Precision("int8", torch.bfloat16, int8_weights=True),
}


def inference_precision(name: str, device: torch.device) -> Precision:
    """Every inference command's `--dtype` (auto, fp32, bf16 or int8) on `device`."""
    if name == "auto":
        name = "bf16" if device.type == "cuda" else "fp32"
    if name not in PRECISIONS:
        raise FrugalError(f"--dtype must be auto, {', '.join(PRECISIONS)}; got {name!r}")
    return PRECISIONS[name]


def precision_note(precision: Precision, device: torch.device) -> str | None:
    """A line for the user when `precision` computes in bf16 on a CPU without bf16
    instructions: it runs, emulated, slower than fp32."""
    if device.type == "cpu" and precision.compute_dtype == torch.bfloat16 and not cpu_has_native_bf16():
        return (
            f"note: --dtype {precision.name} computes in bf16, which this CPU has no instructions for: "
            "it runs emulated, slower than fp32"
        )
    return None


def load_model(
    directory: Path | str,
    device: torch.device | str = "cpu",
    prefer_ema: bool = True,
    dtype: torch.dtype | Precision = torch.float32,
) -> LoadedModel:
    """Build the model stored in `directory` (in `dtype`, or as a `Precision` says; eval
    mode) with its tokenizer."""
    precision = dtype if isinstance(dtype, Precision) else Precision(str(dtype).removeprefix("torch."), dtype)
    loaded = _load(Path(directory), device, prefer_ema, precision.compute_dtype)
    if precision.int8_weights:
        quantize_linears_int8(loaded.model)
    return loaded


def _load(directory: Path, device: torch.device | str, prefer_ema: bool, dtype: torch.dtype) -> LoadedModel:
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
