"""What `frugal data curate` did, per source and step: the typed report (report.json), its
Markdown (report.md) and the plot of pair lengths before and after (lengths.png).

Counts add up per source: read = bad_rows + every step's removals + kept; `flagged` rows
(possible benchmark contamination, `--decontaminate flag`) are kept and counted among kept.
Lengths are counted into fixed log-spaced bins as rows stream by, so the plot costs the
same memory for a thousand rows or a billion.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from frugal_lm.files import write_atomically

LENGTH_BINS = np.unique(np.geomspace(1, 1_000_000, 61).round()).astype(np.int64)


class SourceCounts(BaseModel):
    format: str | None = None
    """The row format the source was read as, when the reader detects one."""
    read: int = 0
    bad_rows: int = 0
    bad_reasons: dict[str, int] = Field(default_factory=dict)
    removed: dict[str, int] = Field(default_factory=dict)
    flagged: int = 0
    kept: int = 0

    def count_bad(self, reason: str) -> None:
        self.bad_rows += 1
        kind = reason.split(" (")[0]  # "not valid JSON (... at column 3)" -> one kind per cause
        self.bad_reasons[kind] = self.bad_reasons.get(kind, 0) + 1

    def count_removed(self, step: str) -> None:
        self.removed[step] = self.removed.get(step, 0) + 1

    def adds_up(self) -> bool:
        return self.read == self.bad_rows + sum(self.removed.values()) + self.kept


class NearDedupStats(BaseModel):
    threshold: float
    num_perm: int
    bands: int
    rows_per_band: int
    index_bytes: int
    indexed_rows: int


class CurateReport(BaseModel):
    settings: dict
    steps: list[str]
    sources: dict[str, SourceCounts]
    total: SourceCounts
    near_dedup: NearDedupStats | None = None
    benchmarks_missing: list[str] = Field(default_factory=list)


class LengthHistogram:
    """Counts of pair lengths (words) in LENGTH_BINS."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(LENGTH_BINS) + 1, dtype=np.int64)

    def add(self, words: int) -> None:
        self.counts[np.searchsorted(LENGTH_BINS, words, side="right")] += 1


def total_of(sources: dict[str, SourceCounts]) -> SourceCounts:
    total = SourceCounts()
    for counts in sources.values():
        total.read += counts.read
        total.bad_rows += counts.bad_rows
        total.flagged += counts.flagged
        total.kept += counts.kept
        total.bad_reasons = dict(Counter(total.bad_reasons) + Counter(counts.bad_reasons))
        total.removed = dict(Counter(total.removed) + Counter(counts.removed))
    return total


def report_markdown(report: CurateReport) -> str:
    steps = report.steps
    lines = [
        "# frugal data curate",
        "",
        "| source | read | bad rows | " + " | ".join(steps) + " | kept | flagged |",
        "|---|---:|---:|" + "---:|" * len(steps) + "---:|---:|",
    ]
    for name, counts in [*report.sources.items(), ("**total**", report.total)]:
        name = f"{name} ({counts.format})" if counts.format else name
        cells = " | ".join(f"{counts.removed.get(step, 0):,}" for step in steps)
        lines.append(
            f"| {name} | {counts.read:,} | {counts.bad_rows:,} | {cells} | {counts.kept:,} | {counts.flagged:,} |"
        )
    if report.total.bad_reasons:
        lines += ["", "Bad rows (unreadable or not a record), by reason:", ""]
        lines += [f"- {reason}: {count:,}" for reason, count in sorted(report.total.bad_reasons.items())]
    if report.near_dedup is not None:
        near = report.near_dedup
        lines += [
            "",
            f"Near-duplicates: MinHash LSH, Jaccard threshold {near.threshold} on word 5-grams, {near.num_perm} "
            f"permutations, {near.bands} bands of {near.rows_per_band}; index {near.index_bytes:,} bytes for "
            f"{near.indexed_rows:,} kept rows.",
        ]
    if report.benchmarks_missing:
        lines += ["", f"Benchmarks not found, not checked: {', '.join(report.benchmarks_missing)}"]
    lines += ["", "Every row read is in records.jsonl (kept) or removed.jsonl (with its step and reason).", ""]
    return "\n".join(lines)


def plot_lengths(path: Path, before: LengthHistogram, after: LengthHistogram) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.concatenate([[0.5], LENGTH_BINS, [LENGTH_BINS[-1] * 2]])
    figure, axes = plt.subplots(figsize=(7, 4))
    for histogram, label in ((before, "read (valid rows)"), (after, "kept")):
        axes.stairs(histogram.counts, edges, label=f"{label}: {histogram.counts.sum():,}")
    axes.set_xscale("log")
    axes.set_xlabel("instruction + response length (words)")
    axes.set_ylabel("rows")
    axes.legend()
    figure.tight_layout()
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    plt.close(figure)
