"""`frugal import hf`: a local transformers `hrm_text` directory -> one of our model directories.

The result holds `config.yaml` (a `RunConfig` whose `model` is the imported architecture),
`model.safetensors` (our names, fp32), `tokenizer/` (`tokenizer.json` as shipped plus our
`tokenizer_info.json`) and `import.json` (provenance). That is the layout of one of our
checkpoints, so `--model OUT`, `init_from=OUT` and `frugal export hf --model OUT` take it
as they take any checkpoint.

Design choices:
- Local files only: nothing here reaches the network (no hub ids, only a directory), and
  only JSON and safetensors are read.
- `read_hf_model` is shared with `--model DIR` on a transformers directory (ours exported,
  or released weights), so serving one and importing one check the same things: the config
  (`hf_config.from_hf_config`), the tokenizer roles, and every tensor's name and shape
  against our model before anything is written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from frugal_lm import __version__
from frugal_lm.config import ModelConfig, RunConfig
from frugal_lm.data.tokenizer import TextTokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.files import staged_output
from frugal_lm.interop.hf_config import MODEL_TYPE, from_hf_config, tied_embeddings
from frugal_lm.interop.hf_tokenizer import load_hf_tokenizer, write_tokenizer_info
from frugal_lm.interop.hf_weights import from_hf_tensors, hf_name, read_hf_weights, weight_files
from frugal_lm.model import build_model
from frugal_lm.train.safetensors_io import checksum_metadata

COMMAND = "frugal import hf"


@dataclass
class HFModel:
    config: ModelConfig
    weights: dict[str, torch.Tensor]  # our names, fp32, shapes checked against `config`
    tokenizer: TextTokenizer
    weights_path: Path  # model.safetensors, or the first shard
    source_dtypes: list[str]


def is_hf_model_directory(directory: Path) -> bool:
    """A transformers model directory (config.json) that is not one of our checkpoints (config.yaml)."""
    return (directory / "config.json").is_file() and not (directory / "config.yaml").is_file()


def read_hf_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not directory.is_dir():
        raise FrugalError(f"{directory}: no such directory")
    if not path.is_file():
        raise FrugalError(f"{directory}: no config.json (expected a transformers {MODEL_TYPE} model directory)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise FrugalError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise FrugalError(f"{path}: expected a JSON object")
    return data


def _check_against(config: ModelConfig, weights: dict[str, torch.Tensor], source: Path) -> None:
    expected = build_model(config, device="meta").state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise FrugalError(f"{source}: tensor {hf_name(missing[0])!r} is missing ({len(missing)} missing in all)")
    if unexpected:
        raise FrugalError(
            f"{source}: unexpected tensor {hf_name(unexpected[0])!r} for the architecture in "
            f"config.json ({len(unexpected)} unexpected in all)"
        )
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            fused = "" if hf_name(name).endswith(name) else f" (its {name.rpartition('.layers.')[2]} part)"
            raise FrugalError(
                f"{source}: {hf_name(name)}{fused} has shape {tuple(weights[name].shape)}, "
                f"config.json implies {tuple(tensor.shape)}"
            )


def read_hf_model(directory: Path | str, special_tokens_file: Path | None = None) -> HFModel:
    """Config, fp32 weights under our names, and tokenizer of a transformers hrm_text directory."""
    directory = Path(directory)
    data = read_hf_config(directory)
    config = from_hf_config(data, directory / "config.json")
    tokenizer = load_hf_tokenizer(directory, special_tokens_file)
    if tokenizer.vocab_size > config.vocab_size:
        raise FrugalError(
            f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens, more than the model's "
            f"vocab_size {config.vocab_size}"
        )
    files = weight_files(directory)
    raw = read_hf_weights(directory)
    weights = from_hf_tensors(raw, tied_embeddings(data), str(directory))
    _check_against(config, weights, directory)
    dtypes = sorted({str(tensor.dtype).removeprefix("torch.") for tensor in raw.values()})
    return HFModel(
        config,
        {name: tensor.to(torch.float32).contiguous() for name, tensor in weights.items()},
        tokenizer,
        files[0],
        dtypes,
    )


@dataclass
class ImportResult:
    out: Path
    config: ModelConfig
    source_dtypes: list[str]


def import_hf(hf_dir: Path | str, out: Path | str, special_tokens_file: Path | str | None = None) -> ImportResult:
    """Import the transformers hrm_text model in `hf_dir` into our directory `out`."""
    hf_dir, out = Path(hf_dir), Path(out)
    model = read_hf_model(hf_dir, Path(special_tokens_file) if special_tokens_file is not None else None)
    run_config = RunConfig(model=model.config)
    provenance = {
        "frugal_lm_version": __version__,
        "source": str(hf_dir.resolve()),
        "source_dtypes": model.source_dtypes,
    }
    with staged_output(out, COMMAND, replace_own=False) as staging:
        save_file(model.weights, str(staging / "model.safetensors"), metadata=checksum_metadata(model.weights))
        (staging / "config.yaml").write_text(yaml.safe_dump(run_config.model_dump(mode="json"), sort_keys=False))
        (staging / "tokenizer").mkdir()
        shutil.copyfile(hf_dir / "tokenizer.json", staging / "tokenizer" / "tokenizer.json")
        write_tokenizer_info(model.tokenizer, staging / "tokenizer")
        (staging / "import.json").write_text(json.dumps(provenance, indent=1))
    return ImportResult(out, model.config, model.source_dtypes)
