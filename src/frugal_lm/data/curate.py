"""`frugal data curate`: read sources, drop what should not be trained on, and account for every row.

Each row read goes through the steps in order and ends in exactly one of two files:
    read -> bad rows / skipped turns -> quality filters -> decontamination -> exact duplicates -> near-duplicates
- `records.jsonl`: the kept rows, canonical: {"instruction", "response", "condition",
  "category"?, "source", "where", "contamination"?}; `where` is the row's place in its file
  (`file:line`, `file:row N`, ... `turn K`), `contamination` the benchmarks a flagged row
  overlaps (`--decontaminate flag`).
- `removed.jsonl`: {"where", "source", "step", "reason", "duplicate_of"?, "row"}: the step
  that removed it (`bad-row`, `skipped` for a conversation turn the reader cannot use, a
  filter's name, `contaminated`, `exact-duplicate`, `near-duplicate`), a one-line reason,
  for a near-duplicate the `where` of the kept row it duplicates, and the row as read (null
  when the line could not be parsed at all).
Plus report.json / report.md (curate_report.py) and lengths.png.

The first occurrence is kept: duplicates are checked against rows kept earlier, in the order
the sources are given. Streaming: rows are read one by one and deduplicated in batches; what
grows with the input is the exact-duplicate keys (16 bytes per row, dedup.py), the near-
duplicate band index (~192 bytes per kept row, near_dedup.py) and, to name what a
near-duplicate duplicates, the `where` of each kept row (its length + 8 bytes).

Layering: reading (`read`) and the benchmark check (`contamination`) are passed in, so this
module needs neither the readers' options nor the evals package.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel
from tqdm import tqdm

from frugal_lm.data.curate_report import (
    CurateReport,
    LengthHistogram,
    NearDedupStats,
    SourceCounts,
    plot_lengths,
    report_markdown,
    total_of,
)
from frugal_lm.data.dedup import DuplicateFilter, row_key
from frugal_lm.data.near_dedup import DEFAULT_NUM_PERM, DEFAULT_THRESHOLD, NearDuplicateFilter
from frugal_lm.data.quality_filters import QualityFilter
from frugal_lm.data.records import Record, RowResult
from frugal_lm.files import os_errors_as_user_errors, staged_output, write_text_atomically

COMMAND = "frugal data curate"
BATCH_ROWS = 2048

ReadSource = Callable[[Path], Iterator[RowResult]]
Contamination = Callable[[str], Iterable[str]]  # text -> names of the benchmarks it overlaps


class CurateSettings(BaseModel):
    exact_dedup: bool = True
    near_dedup: bool = True
    dedup_on: Literal["pair", "instruction"] = "pair"
    near_dedup_threshold: float = DEFAULT_THRESHOLD
    near_dedup_perms: int = DEFAULT_NUM_PERM
    near_dedup_verify: bool = False
    decontaminate: Literal["remove", "flag"] = "remove"


class WhereLog:
    """The `where` of each kept row, by number, in one growing buffer (no object per row)."""

    def __init__(self) -> None:
        self.text = bytearray()
        self.ends = array("Q")

    def append(self, where: str) -> None:
        self.text += where.encode("utf-8", "surrogatepass")
        self.ends.append(len(self.text))

    def __getitem__(self, number: int) -> str:
        start = self.ends[number - 1] if number else 0
        return self.text[start : self.ends[number]].decode("utf-8", "surrogatepass")


def _json_line(entry: dict) -> str:
    line = json.dumps(entry, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in a bad row: keep it, escaped
        line = json.dumps(entry, default=str)
    return line + "\n"


class _Pipeline:
    def __init__(
        self,
        settings: CurateSettings,
        filters: list[QualityFilter],
        contamination: Contamination | None,
        records: IO[str],
        removed: IO[str],
        scratch_dir: Path | None = None,
    ) -> None:
        self.settings, self.filters, self.contamination = settings, filters, contamination
        self.records, self.removed = records, removed
        self.exact = DuplicateFilter() if settings.exact_dedup else None
        self.near = None
        if settings.near_dedup:
            self.near = NearDuplicateFilter(
                settings.near_dedup_threshold,
                settings.near_dedup_perms,
                scratch_dir=scratch_dir,
                verify=settings.near_dedup_verify,
            )
        self.kept_wheres = WhereLog()
        self.skipped_any = False
        self.before, self.after = LengthHistogram(), LengthHistogram()

    def dedup_text(self, record: Record) -> str:
        if self.settings.dedup_on == "instruction":
            return record.instruction
        return f"{record.instruction}\n{record.response}"

    def remove(self, counts: SourceCounts, source: str, result: RowResult, step: str, reason: str, **extra) -> None:
        if step == "bad-row":
            counts.count_bad(reason)
        else:
            self.skipped_any |= step == "skipped"
            counts.count_removed(step)
        entry = {"where": result.where, "source": source, "step": step, "reason": reason, **extra, "row": result.raw}
        self.removed.write(_json_line(entry))

    def screen(self, counts: SourceCounts, source: str, result: RowResult) -> tuple[bool, list[str] | None]:
        """(whether the row goes on to deduplication, the benchmarks it is flagged for)."""
        if result.record is None:
            # A conversation turn the reader skips (tool calls, images) is not an error, but is accounted for.
            step = "skipped" if getattr(result, "skipped", False) else "bad-row"
            self.remove(counts, source, result, step, result.reason or "not a record")
            return False, None
        record = result.record
        self.before.add(len(f"{record.instruction} {record.response}".split()))
        for quality in self.filters:
            if (reason := quality.check(record)) is not None:
                self.remove(counts, source, result, quality.name, reason)
                return False, None
        if self.contamination is None:
            return True, None
        hits = sorted(set(self.contamination(f"{record.instruction}\n{record.response}")))
        if hits and self.settings.decontaminate == "remove":
            self.remove(counts, source, result, "contaminated", f"shares an n-gram with {', '.join(hits)}")
            return False, None
        return True, hits or None

    def run_source(self, source: Path, rows: Iterator[RowResult], progress: bool) -> SourceCounts:
        counts, name, batch = SourceCounts(), str(source), []
        for result in tqdm(rows, desc=source.name, unit=" rows", disable=not progress, leave=False):
            counts.read += 1
            goes_on, flagged = self.screen(counts, name, result)
            if goes_on:
                batch.append((result, flagged))
            if len(batch) >= BATCH_ROWS:
                self.dedup_and_keep(counts, name, batch)
                batch = []
        self.dedup_and_keep(counts, name, batch)
        counts.format = getattr(rows, "format", None)  # what a format-detecting reader read the source as
        return counts

    def dedup_and_keep(self, counts: SourceCounts, source: str, batch: list) -> None:
        if self.exact is not None and batch:
            fresh = self.exact.first_seen([self.exact_key(result.record) for result, _ in batch])
            for (result, _), first in zip(batch, fresh):
                if not first:
                    self.remove(counts, source, result, "exact-duplicate", "the same text as an earlier row")
            batch = [item for item, first in zip(batch, fresh) if first]
        verdicts = self.near.check([self.dedup_text(r.record) for r, _ in batch]) if self.near else [None] * len(batch)
        for (result, flagged), original in zip(batch, verdicts):
            if original is not None:
                where = self.kept_wheres[original]
                reason = f"a near-duplicate of {where}"
                self.remove(counts, source, result, "near-duplicate", reason, duplicate_of=where)
            else:
                self.keep(counts, source, result, flagged)

    def exact_key(self, record: Record) -> bytes:
        return row_key(record.instruction, "" if self.settings.dedup_on == "instruction" else record.response)

    def keep(self, counts: SourceCounts, source: str, result: RowResult, flagged: list[str] | None) -> None:
        record = result.record
        row = {"instruction": record.instruction, "response": record.response, "condition": ",".join(record.conditions)}
        if record.category is not None:
            row["category"] = record.category
        row |= {"source": source, "where": result.where}
        if flagged:
            row["contamination"] = flagged
            counts.flagged += 1
        self.records.write(_json_line(row))
        if self.near is not None:
            self.kept_wheres.append(result.where)
        self.after.add(len(f"{record.instruction} {record.response}".split()))
        counts.kept += 1

    def steps(self) -> list[str]:
        steps = ["skipped"] if self.skipped_any else []
        steps += [quality.name for quality in self.filters]
        steps += ["contaminated"] if self.contamination is not None and self.settings.decontaminate == "remove" else []
        steps += ["exact-duplicate"] if self.exact is not None else []
        return steps + (["near-duplicate"] if self.near is not None else [])


def curate(
    sources: list[Path],
    out: Path,
    read: ReadSource,
    settings: CurateSettings | None = None,
    filters: list[QualityFilter] = (),
    contamination: Contamination | None = None,
    benchmarks_missing: list[str] = (),
    progress: bool = True,
) -> CurateReport:
    """Curate `sources` into `out` (staged: replaced whole on success, untouched on failure)."""
    settings = settings or CurateSettings()
    with staged_output(out, COMMAND) as staging, os_errors_as_user_errors(out):
        with (
            open(staging / "records.jsonl", "w", encoding="utf-8") as records,
            open(staging / "removed.jsonl", "w", encoding="utf-8") as removed,
        ):
            pipeline = _Pipeline(settings, list(filters), contamination, records, removed, scratch_dir=staging)
            per_source = {}
            try:
                for source in sources:
                    counts = pipeline.run_source(Path(source), read(Path(source)), progress)
                    per_source[str(source)] = _merged(per_source.get(str(source)), counts)
            finally:
                if pipeline.near is not None:
                    pipeline.near.close()
        near = pipeline.near
        report = CurateReport(
            settings=settings.model_dump() | {"filters": [quality.name for quality in pipeline.filters]},
            steps=pipeline.steps(),
            sources=per_source,
            total=total_of(per_source),
            near_dedup=None
            if near is None
            else NearDedupStats(
                threshold=near.threshold,
                num_perm=near.num_perm,
                bands=near.bands,
                rows_per_band=near.rows_per_band,
                index_bytes=near.index_bytes,
                indexed_rows=near.kept,
            ),
            benchmarks_missing=list(benchmarks_missing),
        )
        write_text_atomically(staging / "report.json", report.model_dump_json(indent=1) + "\n")
        write_text_atomically(staging / "report.md", report_markdown(report))
        plot_lengths(staging / "lengths.png", pipeline.before, pipeline.after)
    return report


def _merged(earlier: SourceCounts | None, counts: SourceCounts) -> SourceCounts:
    """One source given twice is read twice (its second copy is all duplicates): one entry."""
    if earlier is None:
        return counts
    merged = total_of({"earlier": earlier, "again": counts})
    merged.format = counts.format
    return merged
