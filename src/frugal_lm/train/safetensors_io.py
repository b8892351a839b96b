"""Weight files we write carry a checksum; every weight file we read is checked before use.

Design choices:
- The checksum is a sha256 over the tensors (name, dtype, shape and raw bytes, in name
  order), stored in the safetensors header's `metadata` under `CHECKSUM_KEY`. It is computed
  from tensors, not from the file's bytes, because the header that holds it is part of the
  file; anything that changes a tensor's data (a flipped byte on disk, a truncated copy
  padded back) changes it. transformers and safetensors ignore metadata they do not know.
- A file without the key (released third-party weights, checkpoints from before checksums)
  still loads: the checksum proves integrity where we can, it is not required.
- Every tensor we load must be floating point and finite: an int8 or bool tensor where a
  weight belongs, or a NaN/Inf (a diverged run, a corrupted byte that a checksum-less file
  cannot reveal), would otherwise load and generate empty or garbage text with exit 0.
- This module sits at the bottom of the train layer (checkpoint.py writes through it,
  weights.py and interop read through it), so it imports nothing from frugal_lm but errors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from frugal_lm.errors import FrugalError

CHECKSUM_KEY = "frugal_lm.sha256"


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 (hex) of `tensors`' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}\0{str(tensor.dtype)}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def checksum_metadata(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> dict[str, str]:
    """`metadata` (safetensors header strings) plus the checksum of `tensors`, for `save_file`."""
    return {**(metadata or {}), CHECKSUM_KEY: tensors_checksum(tensors)}


def read_tensors(path: Path | str, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `path` (all, or `names`), verified: the checksum when
    the file has one, and floating-point, finite values always. Bad files raise a one-line
    `FrugalError` naming the file (and the tensor)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = (handle.metadata() or {}).get(CHECKSUM_KEY)
            available = set(handle.keys())
            missing = [name for name in names or [] if name not in available]
            if missing:
                raise FrugalError(f"{path}: the index lists {missing[0]!r} in this shard, but it is not there")
            # A checksum covers the whole file: read every tensor to verify it.
            wanted = sorted(available) if names is None or stored is not None else names
            tensors = {name: handle.get_tensor(name) for name in wanted}
    except (SafetensorError, OSError) as error:
        raise FrugalError(f"{path}: unreadable safetensors file ({error})") from None
    if stored is not None and tensors_checksum(tensors) != stored:
        raise FrugalError(
            f"{path}: the tensor data does not match the file's checksum ({CHECKSUM_KEY}): the "
            f"file is corrupted; copy or train it again"
        )
    check_weights(tensors, path)
    return tensors if names is None else {name: tensors[name] for name in names}


def check_weights(tensors: dict[str, torch.Tensor], source: Path | str) -> None:
    """Refuse non-floating-point or non-finite weights, naming `source` and the first bad tensor."""
    for name in sorted(tensors):
        tensor = tensors[name]
        if not tensor.is_floating_point():
            raise FrugalError(
                f"{source}: tensor {name!r} is {str(tensor.dtype).removeprefix('torch.')}; model "
                f"weights must be floating point (float32, bfloat16 or float16)"
            )
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise FrugalError(
                f"{source}: tensor {name!r} has {bad:,} NaN or infinite values of {tensor.numel():,}; "
                f"the weights are unusable (a diverged run or a corrupted file)"
            )
