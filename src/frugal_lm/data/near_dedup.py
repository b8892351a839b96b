"""Near-duplicate detection: MinHash LSH over normalised text, in about 200 bytes per kept row.

Text is normalised (lower-cased, split into `\\w+` words, so punctuation, case and spacing
never tell two rows apart) and cut into word 5-grams; a text of fewer than 5 words is one
shingle of all its words, so it matches only a text with the same words. Two texts' Jaccard
similarity over those shingle sets is estimated by MinHash: the signatures come from rensa
(`RMinHash`, Rust; about 12x faster than datasketch's `MinHash.generator` on this project's
2-core machine at 128 permutations: 230-470k vs 17-30k short texts/s), never a hand-written
MinHash.

The signature's first `bands * rows_per_band` values are cut into bands; two texts whose
values agree in one whole band are duplicates (the LSH S-curve: a pair of Jaccard s is
caught with probability 1 - (1 - s^r)^b). `choose_bands` picks the most rows per band (the
fewest false positives) that still catches a pair at exactly the threshold 9 times in 10,
with at most 16 bands: at 0.8 and 128 permutations, 16 bands of 8 rows, which catches a pair
at 0.8 with p = 0.95, at 0.9 with p > 0.999, at 0.6 with p = 0.24, at 0.5 with p = 0.06.

Memory: only the band keys of kept rows are stored (no signatures, no texts), each as a
64-bit hash of the band with the band's number, beside the 32-bit number of the kept row it
belongs to: 12 bytes per band, 192 bytes per kept row at 16 bands. They live in numpy arrays
kept as a few sorted runs (log-structured, as in `dedup.DuplicateFilter`), so a lookup is a
binary search and nothing is a Python object per row. Two different bands share a 64-bit key
with probability ~2^-64 per pair, negligible at any corpus size one machine holds.
"""

from __future__ import annotations

import os
import re
import tempfile
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frugal_lm.errors import FrugalError

SHINGLE_WORDS = 5
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
MAX_BANDS = 16
RECALL_AT_THRESHOLD = 0.9
_WORD = re.compile(r"\w+", re.UNICODE)
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def normalised_words(text: str) -> list[str]:
    """Lower-cased words: punctuation, case and whitespace removed."""
    return _WORD.findall(text.lower())


def shingles(text: str, n: int = SHINGLE_WORDS) -> list[str]:
    """The distinct word n-grams of `text`; all its words as one shingle when it has fewer
    than n; the raw stripped text when it has no word at all (so it still matches only itself)."""
    words = normalised_words(text)
    if not words:
        return [text.strip()]
    size = min(n, len(words))
    return list({" ".join(words[start : start + size]) for start in range(len(words) - size + 1)})


def catch_probability(similarity: float, bands: int, rows_per_band: int) -> float:
    """Probability that LSH with these bands makes a pair of this Jaccard similarity a candidate."""
    return 1.0 - (1.0 - similarity**rows_per_band) ** bands


def choose_bands(threshold: float, num_perm: int, max_bands: int = MAX_BANDS) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band whose chance of catching a pair at
    `threshold` is at least RECALL_AT_THRESHOLD, with at most `max_bands` bands."""
    if not 0.0 < threshold < 1.0:
        raise FrugalError(f"--near-dedup-threshold must be between 0 and 1 (exclusive), got {threshold}")
    for rows_per_band in range(num_perm, 0, -1):
        bands = min(num_perm // rows_per_band, max_bands)
        if catch_probability(threshold, bands, rows_per_band) >= RECALL_AT_THRESHOLD:
            return bands, rows_per_band
    return min(num_perm, max_bands), 1


def _fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit affects every output bit."""
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> np.uint64(33))
    values = values * np.uint64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> np.uint64(33))


class BandKeys:
    """Turns MinHash signatures into one 64-bit key per band (band number mixed in)."""

    def __init__(self, bands: int, rows_per_band: int, seed: int = 0) -> None:
        self.bands, self.rows_per_band = bands, rows_per_band
        rng = np.random.default_rng(seed)
        # Random odd multipliers: a different linear combination of the band's values per band.
        self.multipliers = rng.integers(0, 2**63, size=(bands, rows_per_band), dtype=np.uint64) * np.uint64(2) + 1
        self.offsets = rng.integers(0, 2**63, size=bands, dtype=np.uint64)

    def __call__(self, signatures: np.ndarray) -> np.ndarray:
        """(rows, bands) uint64 keys from (rows, num_perm) uint32 signatures."""
        values = signatures[:, : self.bands * self.rows_per_band].astype(np.uint64)
        values = values.reshape(len(signatures), self.bands, self.rows_per_band)
        with np.errstate(over="ignore"):
            combined = (_fmix64(values) * self.multipliers).sum(axis=2, dtype=np.uint64) + self.offsets
            return _fmix64(combined)


class SortedKeyRuns:
    """uint64 keys, each with a uint32 value, in sorted runs merged log-structurally."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, values), largest first

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.runs)

    @property
    def nbytes(self) -> int:
        return sum(keys.nbytes + values.nbytes for keys, values in self.runs)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The smallest value stored under each key (any shape), or -1 where there is none: a
        run holds a key's values oldest first (stable merges), so its leftmost is its smallest."""
        flat = keys.ravel()
        found = np.full(len(flat), -1, dtype=np.int64)
        for run_keys, run_values in self.runs:
            slots = np.minimum(np.searchsorted(run_keys, flat), len(run_keys) - 1)
            hit = run_keys[slots] == flat
            values = run_values[slots[hit]].astype(np.int64)
            found[hit] = np.where(found[hit] >= 0, np.minimum(found[hit], values), values)
        return found.reshape(keys.shape)

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        run = (keys[order], values[order].astype(np.uint32))
        while self.runs and len(self.runs[-1][0]) <= 2 * len(run[0]):
            old_keys, old_values = self.runs.pop()
            merged_keys = np.concatenate([old_keys, run[0]])
            order = np.argsort(merged_keys, kind="stable")  # two sorted runs: linear-time merge
            run = (merged_keys[order], np.concatenate([old_values, run[1]])[order])
        self.runs.append(run)


def shingle_hashes(shingle_set: Sequence[str]) -> np.ndarray:
    """A text's distinct shingles as sorted 64-bit hashes (Python's string hash: stable within
    one process, which is all verification needs)."""
    return np.unique(np.array([hash(shingle) for shingle in shingle_set], dtype=np.int64).view(np.uint64))


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingle hashes."""
    shared = np.intersect1d(first, second, assume_unique=True).size
    return shared / (first.size + second.size - shared)


class KeptShingles:
    """Each kept row's shingle hashes, appended to an anonymous scratch file (unlinked at
    creation, so nothing is left behind, and inside the command's own staging directory when
    given): candidates are verified on their exact Jaccard similarity while memory holds only
    8 bytes per kept row, the end of its hashes in the file."""

    def __init__(self, scratch_dir: Path | None = None) -> None:
        self.file = tempfile.TemporaryFile(dir=scratch_dir, buffering=0)
        self.ends = array("q")

    def add(self, hashes: np.ndarray) -> None:
        data = hashes.tobytes()
        written = self.file.write(data)
        if written != len(data):
            raise OSError(f"near-dedup scratch file: wrote {written} of {len(data)} bytes")
        self.ends.append((self.ends[-1] if self.ends else 0) + len(data))

    def get(self, number: int) -> np.ndarray:
        start = self.ends[number - 1] if number else 0
        return np.frombuffer(os.pread(self.file.fileno(), self.ends[number] - start, start), dtype=np.uint64)

    def close(self) -> None:
        self.file.close()


class NearDuplicateFilter:
    """`check(texts)` says, for each text of a batch in order, which earlier kept text it
    near-duplicates (that text's number), or None: then the text is kept and numbered
    0, 1, 2, ... in the order kept. LSH proposes candidates. With `verify`, a candidate counts
    only when the exact Jaccard similarity of the two shingle sets reaches the threshold: LSH
    alone also removes pairs well below it now and then, which catches more edited copies of
    short rows and removes more distinct ones (benchmarks/RESULTS.md, "Near-duplicate removal")."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        num_perm: int = DEFAULT_NUM_PERM,
        seed: int = 0,
        scratch_dir: Path | None = None,
        verify: bool = False,
    ):
        if num_perm < 1:
            raise FrugalError(f"--near-dedup-perms must be >= 1, got {num_perm}")
        self.threshold, self.num_perm, self.seed = threshold, num_perm, seed
        self.bands, self.rows_per_band = choose_bands(threshold, num_perm)
        self.band_keys = BandKeys(self.bands, self.rows_per_band, seed)
        self.index = SortedKeyRuns()
        self.verify = verify
        self.kept_shingles = KeptShingles(scratch_dir) if verify else None
        self.kept = 0

    @property
    def index_bytes(self) -> int:
        ends = self.kept_shingles.ends if self.kept_shingles is not None else ()
        return self.index.nbytes + 8 * len(ends)

    def close(self) -> None:
        if self.kept_shingles is not None:
            self.kept_shingles.close()

    def signatures(self, shingle_sets: Sequence[Sequence[str]]) -> np.ndarray:
        from rensa import RMinHash

        matrix = RMinHash.digest_matrix_from_token_sets(list(shingle_sets), self.num_perm, self.seed)
        return np.array(matrix.to_rows(), dtype=np.uint32).reshape(len(shingle_sets), self.num_perm)

    def check(self, texts: Sequence[str]) -> list[int | None]:
        if not texts:
            return []
        shingle_sets = [shingles(text) for text in texts]
        keys = self.band_keys(self.signatures(shingle_sets))
        found = self.index.lookup(keys)
        batch_owners: dict[int, list[int]] = {}  # band key -> rows kept earlier in this batch
        batch_hashes: dict[int, np.ndarray] = {}
        verdicts: list[int | None] = []
        for row, row_keys in enumerate(keys.tolist()):
            hashes = shingle_hashes(shingle_sets[row]) if self.verify else None
            earlier = sorted({int(number) for number in found[row] if number >= 0})
            owner = self._first_similar(hashes, earlier, self.kept_shingles.get if self.verify else None)
            if owner is None:
                in_batch = sorted({number for key in row_keys for number in batch_owners.get(key, ())})
                owner = self._first_similar(hashes, in_batch, batch_hashes.__getitem__)
            if owner is None:
                number = self.kept + len(batch_hashes)
                batch_hashes[number] = hashes
                for key in row_keys:
                    batch_owners.setdefault(key, []).append(number)
            verdicts.append(owner)
        self._keep(keys, verdicts, batch_hashes)
        return verdicts

    def _first_similar(self, hashes: np.ndarray | None, candidates: list[int], shingles_of) -> int | None:
        """The first candidate (the earliest kept), verified on exact similarity with `verify`."""
        if not self.verify:
            return candidates[0] if candidates else None
        return next((number for number in candidates if jaccard(hashes, shingles_of(number)) >= self.threshold), None)

    def _keep(self, keys: np.ndarray, verdicts: list[int | None], batch_hashes: dict[int, np.ndarray]) -> None:
        kept_rows = [row for row, verdict in enumerate(verdicts) if verdict is None]
        if not kept_rows:
            return
        numbers = np.arange(self.kept, self.kept + len(kept_rows), dtype=np.uint32)
        # A band key that an earlier kept row already holds (a candidate that did not verify)
        # is stored again; a lookup finds one of its holders.
        self.index.add(keys[kept_rows].ravel(), np.repeat(numbers, self.bands))
        if self.kept_shingles is not None:
            for number in numbers.tolist():
                self.kept_shingles.add(batch_hashes[number])
        self.kept += len(kept_rows)
