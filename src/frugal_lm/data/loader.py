"""Packed PrefixLM batches from a mixed training set, resumable at any step.

A mixed set (written by `frugal data mix`, see ARCHITECTURE.md) is `tokens.npy` (memory-mapped),
`epoch_K/{inst_start,inst_len,resp_start,resp_len}.npy` with each epoch's shuffled order,
and `metadata.json` (`metadata.MixMetadata`). Every rank plans the same epoch with `plan_epoch` and takes its own
rows, so ranks agree without talking. The loader hands back its position with every
batch (as nanochat does), so a checkpoint can never be out of step with the data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from frugal_lm.data.batch import Example, PackedBatch, pack_rows
from frugal_lm.data.metadata import read_mix_metadata
from frugal_lm.data.packing import EpochPlan, plan_epoch
from frugal_lm.data.tokenize import INDEX_FIELDS
from frugal_lm.errors import FrugalError


@dataclass(frozen=True)
class LoaderState:
    """The next batch to produce: step `step` of epoch `epoch` (0-based)."""

    epoch: int = 0
    step: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class MixedDataset:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.info = read_mix_metadata(self.directory)
        self.tokens = self._load(self.directory / "tokens.npy", mmap=True)
        self.epoch_dirs = sorted(
            (p for p in self.directory.glob("epoch_*") if p.is_dir()), key=lambda p: int(p.name.removeprefix("epoch_"))
        )
        if not self.epoch_dirs:
            raise FrugalError(f"{self.directory}: no epoch_K directories; rebuild with `frugal data mix`")
        # Epoch e reads epoch_(e mod n): a run past the mix's epochs repeats them, so e mod n is the key.
        self._epochs: dict[int, dict[str, np.ndarray]] = {}

    @staticmethod
    def _load(path: Path, mmap: bool = False) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise FrugalError(f"{path}: missing from the mixed training set; rebuild with `frugal data mix`") from None
        except ValueError as error:
            raise FrugalError(f"{path}: unreadable ({error})") from None

    @property
    def n_epochs(self) -> int:
        return len(self.epoch_dirs)

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def max_seq_len(self) -> int:
        """The context every example fits (the mix's --context)."""
        return self.info.max_seq_len

    def epoch(self, epoch: int) -> dict[str, np.ndarray]:
        if epoch % self.n_epochs not in self._epochs:
            self._epochs[epoch % self.n_epochs] = self._read_epoch(self.epoch_dirs[epoch % self.n_epochs])
        return self._epochs[epoch % self.n_epochs]

    def _read_epoch(self, folder: Path) -> dict[str, np.ndarray]:
        arrays = {field: self._load(folder / f"{field}.npy").astype(np.int64) for field in INDEX_FIELDS}
        sizes = {field: len(array) for field, array in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise FrugalError(f"{folder}: index arrays disagree in length {sizes}")
        if len(arrays["inst_len"]) and (arrays["inst_len"].min() < 1 or arrays["resp_len"].min() < 1):
            raise FrugalError(f"{folder}: an example has an empty instruction or response")
        ends = np.concatenate([arrays["inst_start"] + arrays["inst_len"], arrays["resp_start"] + arrays["resp_len"]])
        if len(ends) and ends.max() > len(self.tokens):
            raise FrugalError(f"{folder}: indices point past the end of tokens.npy")
        return arrays

    def lengths(self, epoch: int) -> np.ndarray:
        """Packed length of each example: instruction + response - 1 (ARCHITECTURE.md)."""
        arrays = self.epoch(epoch)
        return arrays["inst_len"] + arrays["resp_len"] - 1

    def example(self, epoch: int, index: int) -> Example:
        arrays = self.epoch(epoch)
        inst, resp = arrays["inst_start"][index], arrays["resp_start"][index]
        return Example(
            self.tokens[inst : inst + arrays["inst_len"][index]], self.tokens[resp : resp + arrays["resp_len"][index]]
        )


class PackedLoader:
    """Rank `rank`'s share of each step: `rows_per_rank` rows of `row_len` tokens."""

    def __init__(
        self,
        dataset: MixedDataset,
        row_len: int,
        rows_per_rank: int,
        rank: int = 0,
        world_size: int = 1,
        instruction_loss: bool = False,
        pad_id: int = 0,
    ):
        self.dataset, self.row_len, self.rows_per_rank = dataset, row_len, rows_per_rank
        self.rank, self.world_size = rank, world_size
        self.instruction_loss, self.pad_id = instruction_loss, pad_id
        self._plans: dict[int, EpochPlan] = {}

    def plan(self, epoch: int) -> EpochPlan:
        key = epoch % self.dataset.n_epochs  # the same arrays, so the same plan
        if key not in self._plans:
            try:
                self._plans[key] = plan_epoch(
                    self.dataset.lengths(epoch), self.rows_per_rank * self.world_size, self.row_len
                )
            except ValueError as error:
                raise FrugalError(f"{self.dataset.directory}: {error}") from None
        return self._plans[key]

    def steps_in(self, epoch: int) -> int:
        return self.plan(epoch).n_steps

    def batch(self, state: LoaderState) -> PackedBatch:
        rows = self.plan(state.epoch).rows(state.step)
        mine = rows[self.rank * self.rows_per_rank : (self.rank + 1) * self.rows_per_rank]
        examples = [[self.dataset.example(state.epoch, index) for index in row] for row in mine]
        return pack_rows(examples, self.row_len, self.instruction_loss, self.pad_id)

    def batches(self, start: LoaderState, epochs: int) -> Iterator[tuple[PackedBatch, LoaderState]]:
        """Batches from `start` to the end of epoch `epochs - 1`, each with the state after it."""
        state = start
        while state.epoch < epochs:
            if state.step >= self.steps_in(state.epoch):
                state = LoaderState(state.epoch + 1, 0)
                continue
            batch = self.batch(state)
            state = LoaderState(state.epoch, state.step + 1)
            yield batch, state
