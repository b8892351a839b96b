"""Streaming 1-D `.npy` files: written from chunks and read in chunks, never whole.

Token arrays outgrow memory long before they outgrow disk, so tokenize and mix move them
in fixed-size chunks with plain reads and writes. Plain file I/O rather than `np.memmap`:
mapped pages count towards a process's resident memory until unmapped (and dirty ones
until written back), so a memory-mapped copy of a 1 GB array shows ~1 GB of RSS. The
files are byte-identical to `np.save` of the whole array (same version 1.0 header).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

CHUNK_ELEMENTS = 1 << 22


def npy_length(path: Path) -> int:
    """Number of elements of a 1-D `.npy`, from its header alone."""
    with open(path, "rb") as handle:
        shape, _, _ = _read_header(handle)
    return int(np.prod(shape))


def _read_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def npy_problem(path: Path, length: int) -> str | None:
    """Why `path` is not a whole 1-D numeric `.npy` of `length` elements (missing, bad
    header, other length, cut short or padded), or None. Reads the header only."""
    try:
        with open(path, "rb") as handle:
            shape, _, dtype = _read_header(handle)
            header_bytes = handle.tell()
    except FileNotFoundError:
        return f"{path.name} is missing"
    except (OSError, ValueError, EOFError) as error:
        return f"{path.name} has no readable .npy header ({error})"
    if len(shape) != 1 or dtype.hasobject:
        return f"{path.name} is not a 1-D numeric array (shape {shape}, {dtype})"
    if shape[0] != length:
        return f"{path.name} holds {shape[0]:,} elements, meta.json says {length:,}"
    expected = header_bytes + length * dtype.itemsize
    if (size := path.stat().st_size) != expected:
        return f"{path.name} has {size:,} bytes, its header announces {expected:,}"
    return None


def iter_npy_chunks(path: Path, chunk: int = CHUNK_ELEMENTS) -> Iterator[np.ndarray]:
    with open(path, "rb") as handle:
        shape, fortran_order, dtype = _read_header(handle)
        if len(shape) != 1 or dtype.hasobject:
            raise ValueError(f"{path}: expected a 1-D numeric array, got shape {shape} of {dtype}")
        remaining = shape[0]
        while remaining:
            values = np.fromfile(handle, dtype=dtype, count=min(chunk, remaining))
            if not len(values):
                raise ValueError(f"{path}: file ends {remaining:,} elements early")
            remaining -= len(values)
            yield values


class NpyWriter:
    """Write a 1-D `.npy` of `length` elements of `dtype` chunk by chunk (values are cast)."""

    def __init__(self, path: Path, dtype: np.dtype, length: int):
        self.path, self.dtype, self.length, self.written = Path(path), np.dtype(dtype), length, 0
        self.handle = open(self.path, "wb")
        np.lib.format.write_array_header_1_0(
            self.handle, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)}
        )

    def write(self, values: np.ndarray) -> None:
        if self.written + len(values) > self.length:
            raise ValueError(f"{self.path}: more than the {self.length:,} elements announced")
        self.handle.write(memoryview(np.ascontiguousarray(values, dtype=self.dtype)))
        self.written += len(values)

    def close(self) -> None:
        self.handle.close()
        if self.written != self.length:
            raise ValueError(f"{self.path}: {self.written:,} elements written, {self.length:,} announced")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.handle.close()


def raw_to_npy(raw: Path, npy: Path, raw_dtype: np.dtype, dtype: np.dtype) -> None:
    """A headerless array file -> `.npy` of `dtype`, chunk by chunk."""
    raw_dtype = np.dtype(raw_dtype)
    length = raw.stat().st_size // raw_dtype.itemsize
    with open(raw, "rb") as source, NpyWriter(npy, dtype, length) as writer:
        while len(values := np.fromfile(source, dtype=raw_dtype, count=CHUNK_ELEMENTS)):
            writer.write(values)
