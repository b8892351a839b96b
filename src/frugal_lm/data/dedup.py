"""Exact-duplicate detection over a stream of rows in 16 bytes per unique row.

A row's key is a 128-bit BLAKE2b digest of its content: two different rows share a key
with probability about n^2 / 2^129 (1e-25 for ten million rows), so a key match is
treated as an exact duplicate. A Python set of such digests costs ~100 bytes per row
(object headers, hash table); here the keys live in numpy arrays of `V16` (compared as
bytes) kept as a few sorted runs, log-structured: each batch becomes a sorted run, and a
run is merged into the one before it while that one is no larger than twice its size.
So there are at most ~log2(rows / batch) runs to search, each key is re-merged about as
many times (amortised O(n log n), all inside numpy), and memory is 16 bytes per unique
row plus one merge's temporary copy.
"""

from __future__ import annotations

import hashlib

import numpy as np

KEY_DTYPE = np.dtype("V16")


def row_key(instruction: str, response: str) -> bytes:
    """Digest of the (instruction, response) pair; the length prefix keeps ("ab", "c") and
    ("a", "bc") apart."""
    return hashlib.blake2b(f"{len(instruction)}:{instruction}{response}".encode(), digest_size=16).digest()


class DuplicateFilter:
    """Remembers keys; `first_seen(keys)` says which of a batch were never seen before."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []  # sorted, disjoint, oldest and largest first

    def __len__(self) -> int:
        return sum(len(run) for run in self.runs)

    def first_seen(self, keys: list[bytes]) -> np.ndarray:
        """Boolean mask over `keys`: True for a key seen neither earlier in this call nor in
        any earlier call (so of repeated keys only the first occurrence is True). The new
        keys are remembered."""
        batch = np.frombuffer(b"".join(keys), dtype=KEY_DTYPE) if keys else np.zeros(0, KEY_DTYPE)
        fresh = np.ones(len(batch), dtype=bool)
        for run in self.runs:
            slots = np.minimum(np.searchsorted(run, batch), len(run) - 1)
            fresh &= run[slots] != batch
        # np.unique's return_index gives each value's first occurrence in input order.
        _, first = np.unique(batch, return_index=True)
        in_batch_first = np.zeros(len(batch), dtype=bool)
        in_batch_first[first] = True
        fresh &= in_batch_first
        if fresh.any():
            self._add(np.sort(batch[fresh]))
        return fresh

    def _add(self, run: np.ndarray) -> None:
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            merged = np.concatenate([self.runs.pop(), run])
            merged.sort(kind="stable")  # two sorted runs: the stable sort merges in linear time
            run = merged
        self.runs.append(run)
