"""Weights between our state dict and transformers' `hrm_text` safetensors.

Design choices:
- Our parameter names already are hrm_text's, inside its `model.` prefix (`model.L_module.
  layers.0.self_attn.q_proj.weight`, `model.z_L_init`); only `lm_head.weight` sits at the
  top in both. So the mapping is a prefix, with no reshapes or transposes: export(import(x))
  is bitwise x.
- Safetensors only, never pickle: a directory with only `pytorch_model.bin` is refused with
  a hint to convert it. A sharded checkpoint is read through `model.safetensors.index.json`
  and checked both ways (every listed tensor is in its shard, no shard holds a tensor twice).
- Imported weights become fp32, the precision our trainer keeps master weights in
  (bf16 -> fp32 is exact); exports are written as fp32 (what we trained), with the
  `format: pt` metadata transformers expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from frugal_lm.errors import FrugalError

HF_PREFIX = "model."
HEAD = "lm_head.weight"
EMBEDDING = "embed_tokens.weight"
INDEX_FILE = "model.safetensors.index.json"
# Non-persistent buffers that some older transformers versions saved anyway: recomputed, never read.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")


def to_hf_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name if name == HEAD else HF_PREFIX + name: tensor for name, tensor in weights.items()}


def from_hf_names(weights: dict[str, torch.Tensor], tied: bool, source: str) -> dict[str, torch.Tensor]:
    """Our names for hrm_text tensors; with tied embeddings, the head becomes a copy of the embedding."""
    ours = {}
    for name, tensor in weights.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name == HEAD:
            ours[HEAD] = tensor
        elif name.startswith(HF_PREFIX):
            ours[name.removeprefix(HF_PREFIX)] = tensor
        else:
            raise FrugalError(f"{source}: unexpected tensor {name!r} (not part of an HrmTextForCausalLM)")
    if HEAD not in ours and tied and EMBEDDING in ours:
        ours[HEAD] = ours[EMBEDDING].clone()
    return ours


def _read_file(path: Path, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            available = set(handle.keys())
            wanted = list(available) if names is None else names
            missing = [name for name in wanted if name not in available]
            if missing:
                raise FrugalError(f"{path}: the index lists {missing[0]!r} in this shard, but it is not there")
            return {name: handle.get_tensor(name) for name in wanted}
    except (SafetensorError, OSError) as error:
        raise FrugalError(f"{path}: unreadable safetensors file ({error})") from None


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding a transformers model in `directory` (one, or the shards)."""
    single, index = directory / "model.safetensors", directory / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        return sorted({directory / shard for shard in _read_index(index).values()})
    if any(directory.glob("pytorch_model*.bin")):
        raise FrugalError(f"{directory}: only pytorch_model*.bin (pickle) weights; frugal-lm never unpickles. "
                          f"Convert them to safetensors first (save_pretrained(..., safe_serialization=True))")
    raise FrugalError(f"{directory}: no model.safetensors or {INDEX_FILE}")


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise FrugalError(f"{index}: not a safetensors index with a weight_map ({error})") from None
    if not isinstance(weight_map, dict):
        raise FrugalError(f"{index}: weight_map must map tensor names to shard files")
    return weight_map


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model in `directory` under its transformers name, as stored (any dtype)."""
    single = directory / "model.safetensors"
    if single.is_file():
        return _read_file(single)
    weight_files(directory)  # raises the right error when there are no weights at all
    weight_map = _read_index(directory / INDEX_FILE)
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    weights: dict[str, torch.Tensor] = {}
    for shard, names in sorted(by_shard.items()):
        path = directory / shard
        if not path.is_file():
            raise FrugalError(f"{directory / INDEX_FILE}: shard {shard} is missing")
        weights.update(_read_file(path, names))
    return weights


def write_hf_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Our weights under transformers' names, contiguous fp32, as one safetensors file."""
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in to_hf_names(weights).items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
