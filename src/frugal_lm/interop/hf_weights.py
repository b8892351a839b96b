"""Weights between our state dict and transformers' `hrm_text` safetensors.

Design choices:
- On disk, hrm_text checkpoints (the released HRM-Text weights, and whatever
  `save_pretrained` writes) fuse projections: `attn.gqkv_proj` = [gate; q; k; v] and
  `mlp.gate_up_proj` = [gate; up] stacked along the output dimension, and `attn.o_proj`;
  transformers splits them when loading (its `conversion_mapping`, unchanged since 5.9).
  Export writes that on-disk layout, so other tools that read released checkpoints read
  ours; import takes it and also the unfused in-memory names (`self_attn.q_proj`, ...).
  Everything else is our own name inside hrm_text's `model.` prefix (`lm_head.weight` sits
  at the top in both). Concatenation and chunking are exact: export(import(x)) is bitwise x.
- Safetensors only, never pickle: a directory with only `pytorch_model.bin` is refused with
  a hint to convert it. A sharded checkpoint is read through `model.safetensors.index.json`
  and checked both ways (every listed tensor is in its shard, no shard is missing); a
  shard path must name a file inside the model directory (no `../`, no absolute path).
- Every file is read through `train.safetensors_io.read_tensors`: a checksum mismatch (our
  exports carry one), a non-float or a non-finite tensor is refused, naming file and tensor.
- Imported weights become fp32, the precision our trainer keeps master weights in
  (bf16 -> fp32 is exact); exports are written as fp32 (what we trained), with the
  `format: pt` metadata transformers expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from frugal_lm.errors import FrugalError
from frugal_lm.train.safetensors_io import checksum_metadata, read_tensors

HF_PREFIX = "model."
HEAD = "lm_head.weight"
EMBEDDING = "embed_tokens.weight"
INDEX_FILE = "model.safetensors.index.json"
# Non-persistent buffers that some older transformers versions saved anyway: recomputed, never read.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")


# Fused on-disk tensor -> our tensors, in the order they are stacked (transformers' conversion_mapping).
FUSED = {
    "attn.gqkv_proj.weight": (
        "self_attn.gate_proj.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
    ),
    "mlp.gate_up_proj.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}
RENAMED = {"attn.o_proj.weight": "self_attn.o_proj.weight"}


def hf_name(name: str) -> str:
    """The on-disk name that holds our tensor `name` (for error messages)."""
    if name == HEAD:
        return HEAD
    for fused, parts in FUSED.items():
        for part in parts:
            if name.endswith("." + part):
                return HF_PREFIX + name.removesuffix(part) + fused
    for disk, ours in RENAMED.items():
        if name.endswith("." + ours):
            return HF_PREFIX + name.removesuffix(ours) + disk
    return HF_PREFIX + name


def to_hf_tensors(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> hrm_text's on-disk names and fused projections."""
    hf: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        disk = hf_name(name)
        fused = next((key for key in FUSED if disk.endswith("." + key)), None)
        if fused is None:
            hf[disk] = tensor
        elif name.endswith("." + FUSED[fused][0]):  # the first part assembles the whole fused tensor
            prefix = name.removesuffix(FUSED[fused][0])
            hf[disk] = torch.cat([weights[prefix + part] for part in FUSED[fused]], dim=0)
    return hf


def from_hf_tensors(weights: dict[str, torch.Tensor], tied: bool, source: str) -> dict[str, torch.Tensor]:
    """Our names for hrm_text tensors (fused or not); with tied embeddings, the head becomes a copy
    of the embedding."""
    ours: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name == HEAD:
            ours[HEAD] = tensor
            continue
        if not name.startswith(HF_PREFIX):
            raise FrugalError(f"{source}: unexpected tensor {name!r} (not part of an HrmTextForCausalLM)")
        name = name.removeprefix(HF_PREFIX)
        fused = next((key for key in FUSED if name.endswith("." + key)), None)
        renamed = next((key for key in RENAMED if name.endswith("." + key)), None)
        if fused is not None:
            parts = FUSED[fused]
            if tensor.shape[0] % len(parts):
                raise FrugalError(
                    f"{source}: {HF_PREFIX + name} has {tensor.shape[0]} rows, not a multiple of "
                    f"the {len(parts)} projections it fuses"
                )
            prefix = name.removesuffix(fused)
            for part, chunk in zip(parts, torch.chunk(tensor, len(parts), dim=0)):
                ours[prefix + part] = chunk.contiguous()
        elif renamed is not None:
            ours[name.removesuffix(renamed) + RENAMED[renamed]] = tensor
        else:
            ours[name] = tensor
    if HEAD not in ours and tied and EMBEDDING in ours:
        ours[HEAD] = ours[EMBEDDING].clone()
    return ours


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files holding a transformers model in `directory` (one, or the shards)."""
    single, index = directory / "model.safetensors", directory / INDEX_FILE
    if single.is_file():
        return [single]
    if index.is_file():
        return sorted({_shard_path(directory, shard, index) for shard in _read_index(index).values()})
    if any(directory.glob("pytorch_model*.bin")):
        raise FrugalError(
            f"{directory}: only pytorch_model*.bin (pickle) weights; frugal-lm never unpickles. "
            f"Convert them to safetensors first (save_pretrained(..., safe_serialization=True))"
        )
    raise FrugalError(f"{directory}: no model.safetensors or {INDEX_FILE}")


def _read_index(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise FrugalError(f"{index}: not a safetensors index with a weight_map ({error})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise FrugalError(f"{index}: weight_map must map tensor names to shard files")
    return weight_map


def _shard_path(directory: Path, shard: str, index: Path) -> Path:
    """`directory / shard`, refused unless it stays inside `directory`: an index is data someone
    else wrote, and `../x` or `/etc/x` must not make us read files outside the model."""
    path = directory / shard
    if Path(shard).is_absolute() or not path.resolve().is_relative_to(directory.resolve()):
        raise FrugalError(
            f"{index}: shard {shard!r} is outside the model directory; shard files must lie inside {directory}"
        )
    return path


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the model in `directory` under its transformers name, as stored (any dtype)."""
    single = directory / "model.safetensors"
    if single.is_file():
        return read_tensors(single)
    weight_files(directory)  # raises the right error when there are no weights at all
    weight_map = _read_index(directory / INDEX_FILE)
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    weights: dict[str, torch.Tensor] = {}
    for shard, names in sorted(by_shard.items()):
        path = _shard_path(directory, shard, directory / INDEX_FILE)
        if not path.is_file():
            raise FrugalError(f"{directory / INDEX_FILE}: shard {shard} is missing")
        weights.update(read_tensors(path, names))
    return weights


def write_hf_weights(path: Path, weights: dict[str, torch.Tensor]) -> None:
    """Our weights under transformers' names, contiguous fp32, as one safetensors file."""
    tensors = {
        name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in to_hf_tensors(weights).items()
    }
    save_file(tensors, str(path), metadata=checksum_metadata(tensors, {"format": "pt"}))
