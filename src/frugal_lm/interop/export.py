"""`frugal export hf`: one of our models -> a directory transformers loads as `hrm_text`.

Output (built in `OUT.partial`, then renamed: `files.staged_output`; OUT must be new or empty):
- `config.json`: every forward-affecting field (`hf_config.to_hf_config`);
- `model.safetensors`: EMA weights by default (the averaged weights are the better model),
  the raw ones with `use_ema=False`; fp32, transformers' names;
- `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json` for AutoTokenizer
  (which marks the instruction with `token_type_ids`, see `hf_tokenizer.py`), and our
  `tokenizer_info.json`, so `--model OUT` reloads the roles exactly;
- `generation_config.json`: EOA is EOS (and stops `generate`), PAD is our pad token, BOQ is
  BOS; greedy by default, 256 new tokens (our engine's default; transformers' own is 20);
- `frugal_export.json`: where the weights came from.

The interop layer sits below infer, so the run/checkpoint directory is read here with the
train layer's helpers (`weights_file`, `load_weights`) rather than `infer.loading`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from frugal_lm import __version__
from frugal_lm.config import ModelConfig, RunConfig, validate
from frugal_lm.data.tokenizer import load_tokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.files import staged_output
from frugal_lm.interop.hf_config import to_hf_config
from frugal_lm.interop.hf_tokenizer import write_hf_tokenizer
from frugal_lm.interop.hf_weights import write_hf_weights
from frugal_lm.train.weights import load_weights, weights_file

COMMAND = "frugal export hf"
DEFAULT_MAX_NEW_TOKENS = 256


@dataclass
class ExportResult:
    out: Path
    weights_source: Path  # the file the exported weights came from (ema.safetensors or model.safetensors)
    config: ModelConfig


def _model_config(folder: Path, model_dir: Path) -> ModelConfig:
    path = folder / "config.yaml"
    if not path.is_file():
        if (model_dir / "config.json").is_file():
            raise FrugalError(f"{model_dir}: already a transformers model directory (config.json); nothing to export")
        raise FrugalError(f"{folder}: no config.yaml (expected a training run, a checkpoint or an imported model)")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise FrugalError(f"{path}: unreadable run config ({error})") from None
    return validate(RunConfig, data if isinstance(data, dict) else {}, str(path)).model


def export_hf(model_dir: Path | str, out: Path | str, use_ema: bool = True) -> ExportResult:
    """Export the model in `model_dir` (run, checkpoint or imported directory) to `out`."""
    model_dir, out = Path(model_dir), Path(out)
    source = weights_file(model_dir, prefer_ema=use_ema)
    folder = source.parent
    config = _model_config(folder, model_dir)
    tokenizer_dir = folder / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise FrugalError(f"{folder}: no tokenizer/ folder; an exported model needs its tokenizer")
    tokenizer = load_tokenizer(tokenizer_dir)
    hf_config = to_hf_config(config, tokenizer.special_ids)  # refuses what the format cannot hold, first
    if tokenizer.vocab_size > config.vocab_size:
        raise FrugalError(
            f"{tokenizer_dir}: the tokenizer has {tokenizer.vocab_size} tokens, more than the "
            f"model's vocab_size {config.vocab_size}"
        )
    weights = load_weights(model_dir, config, prefer_ema=use_ema)
    generation = {
        "bos_token_id": tokenizer.special_ids["boq"],
        "eos_token_id": tokenizer.special_ids["eoa"],
        "pad_token_id": tokenizer.special_ids["pad"],
        "do_sample": False,
        "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
    }
    provenance = {
        "frugal_lm_version": __version__,
        "source": str(source.resolve()),
        "weights": "ema" if source.name == "ema.safetensors" else "raw",
    }
    with staged_output(out, COMMAND, replace_own=False) as staging:
        write_hf_weights(staging / "model.safetensors", weights)
        (staging / "config.json").write_text(json.dumps(hf_config, indent=1))
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=1))
        write_hf_tokenizer(tokenizer, staging, config.max_seq_len)
        (staging / "frugal_export.json").write_text(json.dumps(provenance, indent=1))
    return ExportResult(out, source, config)
