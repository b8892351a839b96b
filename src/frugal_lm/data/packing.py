"""Multipack: assign an epoch's examples to fixed-capacity rows, step by step.

Each optimizer step fills `bins_per_step = world_size * rows_per_rank` rows of `row_len`
tokens. Examples are taken in the epoch's (already shuffled) order: for each step we find,
by binary search, the longest run of upcoming examples that LPT can place (longest first,
each into the currently least-loaded row, which must have room), falling back to
first-fit decreasing when LPT cannot but a tighter packing can. LPT keeps the rows evenly
loaded, so ranks get equal work. The gaps left are then filled best-fit from the next
`lookahead` examples, which moves a few short examples slightly forward; everything else
keeps the epoch's order, and the plan is a pure function of (lengths, sizes).

The whole epoch is planned up front (numba, milliseconds for a million examples), so the
loader's resume state is just (epoch, step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@numba.njit(cache=True)
def _lpt_assign(lengths: np.ndarray, n_bins: int, capacity: int, bins_out: np.ndarray) -> bool:
    """Place `lengths` into `n_bins` bins by LPT; write each item's bin; False if one does not fit."""
    loads = np.zeros(n_bins, dtype=np.int64)
    order = np.argsort(-lengths, kind="mergesort")
    for item in order:
        target = np.argmin(loads)
        if loads[target] + lengths[item] > capacity:
            return False
        loads[target] += lengths[item]
        bins_out[item] = target
    return True


@numba.njit(cache=True)
def _first_fit_assign(lengths: np.ndarray, n_bins: int, capacity: int, bins_out: np.ndarray) -> bool:
    """First-fit decreasing: tighter than LPT when rows are nearly full."""
    loads = np.zeros(n_bins, dtype=np.int64)
    order = np.argsort(-lengths, kind="mergesort")
    for item in order:
        placed = False
        for target in range(n_bins):
            if loads[target] + lengths[item] <= capacity:
                loads[target] += lengths[item]
                bins_out[item] = target
                placed = True
                break
        if not placed:
            return False
    return True


@numba.njit(cache=True)
def _assign(lengths: np.ndarray, n_bins: int, capacity: int, bins_out: np.ndarray) -> bool:
    return _lpt_assign(lengths, n_bins, capacity, bins_out) or _first_fit_assign(lengths, n_bins, capacity, bins_out)


@numba.njit(cache=True)
def _plan_epoch(  # noqa: C901 (one compiled kernel: split, its helpers would cost calls in the hot loop)
    lengths: np.ndarray, n_bins: int, capacity: int, lookahead: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = lengths.shape[0]
    order = np.empty(n, dtype=np.int64)  # examples in step order
    bin_of_slot = np.empty(n, dtype=np.int32)  # row of order[k]
    step_starts = [0]
    taken = np.zeros(n, dtype=np.bool_)
    candidates = np.empty(n, dtype=np.int64)
    scratch = np.empty(n, dtype=np.int32)
    cursor, filled = 0, 0
    while filled < n:
        # The next untaken examples in epoch order, up to all bins' worth of tokens.
        count, total, probe = 0, 0, cursor
        while probe < n and (taken[probe] or total + lengths[probe] <= n_bins * capacity):
            if not taken[probe]:
                candidates[count] = probe
                total += lengths[probe]
                count += 1
            probe += 1
        # Longest prefix of them that packs (one always fits: lengths <= capacity).
        low, high = 1, count
        while low < high:
            middle = (low + high + 1) // 2
            if _assign(lengths[candidates[:middle]], n_bins, capacity, scratch[:middle]):
                low = middle
            else:
                high = middle - 1
        chosen = candidates[:low]
        _assign(lengths[chosen], n_bins, capacity, scratch[:low])
        loads = np.zeros(n_bins, dtype=np.int64)
        for k in range(low):
            order[filled + k] = chosen[k]
            bin_of_slot[filled + k] = scratch[k]
            loads[scratch[k]] += lengths[chosen[k]]
            taken[chosen[k]] = True
        filled += low
        # Fill the gaps with the next few examples that fit (best fit), slightly out of order.
        probe, seen = cursor, 0
        while probe < n and seen < lookahead:
            if not taken[probe]:
                seen += 1
                best, best_room = -1, capacity + 1
                for target in range(n_bins):
                    room = capacity - loads[target] - lengths[probe]
                    if 0 <= room < best_room:
                        best, best_room = target, room
                if best >= 0:
                    loads[best] += lengths[probe]
                    order[filled] = probe
                    bin_of_slot[filled] = best
                    taken[probe] = True
                    filled += 1
            probe += 1
        while cursor < n and taken[cursor]:
            cursor += 1
        step_starts.append(filled)
    return order, bin_of_slot, np.array(step_starts, dtype=np.int64)


@dataclass
class EpochPlan:
    """Where each example of an epoch goes: step k holds examples
    `order[step_starts[k]:step_starts[k+1]]`, example `order[j]` in row `row_of_slot[j]`."""

    order: np.ndarray
    row_of_slot: np.ndarray
    step_starts: np.ndarray
    lengths: np.ndarray
    bins_per_step: int
    row_len: int

    @property
    def n_steps(self) -> int:
        return len(self.step_starts) - 1

    @property
    def slot_use(self) -> float:
        """Fraction of all row slots holding real tokens (the packing efficiency)."""
        return float(self.lengths.sum()) / max(1, self.n_steps * self.bins_per_step * self.row_len)

    def rows(self, step: int) -> list[list[int]]:
        """Example indices (positions in the epoch) of each row of `step`."""
        start, end = self.step_starts[step], self.step_starts[step + 1]
        rows: list[list[int]] = [[] for _ in range(self.bins_per_step)]
        for example, row in zip(self.order[start:end].tolist(), self.row_of_slot[start:end].tolist()):
            rows[row].append(example)
        return rows


def plan_epoch(lengths: np.ndarray, bins_per_step: int, row_len: int, lookahead: int = 256) -> EpochPlan:
    """Plan one epoch; `lookahead` examples past each step may move forward to fill gaps."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if lengths.size and lengths.max() > row_len:
        raise ValueError(
            f"example {int(lengths.argmax())} has {int(lengths.max())} tokens, more than a row "
            f"({row_len}); truncate or drop long examples when mixing"
        )
    if lengths.size and lengths.min() < 1:
        raise ValueError("every example needs at least one token")
    order, row_of_slot, step_starts = _plan_epoch(lengths, bins_per_step, row_len, lookahead)
    return EpochPlan(order, row_of_slot, step_starts, lengths, bins_per_step, row_len)
