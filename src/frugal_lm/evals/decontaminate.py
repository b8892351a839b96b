"""Training-set decontamination: n-gram overlap between training sources and benchmark test sets.

Method (the GPT-3 / lm-eval-harness style check): text is lower-cased and split into words
(`\\w+`, so punctuation and spacing never hide an overlap); a training row (instruction +
response) is contaminated by a benchmark when it shares one n-gram (default 13 words) with
any of that benchmark's test items (question or context together with its options or gold
answer). An item shorter than n words is matched by its whole word sequence, so short
questions are not unsearchable; a near miss (one word changed in every window) does not
match.

Outputs:
- a report per source and benchmark (`report_markdown`);
- for every SOURCE a sidecar `<SOURCE>.contamination.json` (written atomically) that
  `frugal data mix` shows in its report: {"source", "source_size", "source_mtime", "ngram",
  "benchmarks": {name: {"test_items", "contaminated_rows"}}, "contaminated_rows", "rows"}.
  Size and mtime let a reader tell whether the sidecar still describes the file;
- with `--write-clean DIR`, DIR/<source file name> holds the rows that overlap no
  benchmark, in the source's own format and with every original field.

Rows that are not valid records (see `frugal data validate`) cannot be checked; they are
counted as `bad_rows` in the report and sidecar and left out of clean copies, never passed
off as clean.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from frugal_lm.data.records import read_rows
from frugal_lm.errors import FrugalError
from frugal_lm.evals.datasets import SPECS, ChoiceItem, find_files, load_items
from frugal_lm.files import write_atomically

DEFAULT_NGRAM = 13
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def item_text(item) -> str:
    if isinstance(item, ChoiceItem):
        return "\n".join([item.context, *item.options])
    return f"{item.question}\n{item.demonstration}"


@dataclass
class BenchmarkIndex:
    """N-grams of every benchmark, by length: `grams[length][gram]` = benchmark names."""

    ngram: int
    test_items: dict[str, int] = field(default_factory=dict)
    grams: dict[int, dict[tuple[str, ...], set[str]]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, benchmark: str, text: str) -> None:
        tokens = words(text)
        if not tokens:
            return
        length = min(self.ngram, len(tokens))
        table = self.grams[length]
        for start in range(len(tokens) - length + 1):
            table.setdefault(tuple(tokens[start : start + length]), set()).add(benchmark)

    def hits(self, text: str) -> set[str]:
        """Benchmarks sharing at least one gram with `text`."""
        tokens, found = words(text), set()
        for length, table in self.grams.items():
            for start in range(len(tokens) - length + 1):
                names = table.get(tuple(tokens[start : start + length]))
                if names:
                    found |= names
        return found


def build_index(benchmarks_dir: Path, ngram: int = DEFAULT_NGRAM) -> tuple[BenchmarkIndex, list[str]]:
    """The index over every benchmark found in `benchmarks_dir` (the `frugal eval --data-dir`
    layout), and the names of those not found. The synthetic held-out split counts too when
    DIR/heldout.jsonl exists."""
    if ngram < 1:
        raise FrugalError(f"--ngram must be >= 1, got {ngram}")
    if not benchmarks_dir.is_dir():
        raise FrugalError(f"--benchmarks {benchmarks_dir}: no such directory")
    index, missing = BenchmarkIndex(ngram), []
    for task in SPECS:
        try:
            find_files(task, benchmarks_dir)
        except FrugalError:
            missing.append(task)
            continue
        items = load_items(task, benchmarks_dir)
        index.test_items[task] = len(items)
        for item in items:
            index.add(task, item_text(item))
    heldout = benchmarks_dir / "heldout.jsonl"
    if heldout.is_file():
        rows = [row.record for row in read_rows(heldout) if row.record is not None]
        index.test_items["synthetic"] = len(rows)
        for record in rows:
            index.add("synthetic", f"{record.instruction}\n{record.response}")
    else:
        missing.append("synthetic")
    if not index.test_items:
        raise FrugalError(
            f"--benchmarks {benchmarks_dir}: no benchmark test set found (expected the `frugal eval "
            f"--data-dir` layout: gsm8k/, mmlu/, arc/, ... or heldout.jsonl)"
        )
    return index, missing


@dataclass
class SourceReport:
    source: Path
    rows: int
    bad_rows: int
    contaminated_rows: int
    per_benchmark: dict[str, int]
    clean_path: Path | None = None


def sidecar_path(source: Path) -> Path:
    return source.with_name(source.name + ".contamination.json")


def check_source(
    source: Path, index: BenchmarkIndex, clean_dir: Path | None = None, progress: bool = False
) -> SourceReport:
    """Count contaminated rows of one source, write its sidecar and optionally a clean copy."""
    source = Path(source)
    stat = source.stat() if source.is_file() else None
    clean_path = None if clean_dir is None else Path(clean_dir) / source.name
    if clean_path is not None and clean_path.resolve() == source.resolve():
        raise FrugalError(f"--write-clean {clean_dir}: the clean copy of {source} would overwrite the source")
    rows = bad = contaminated = 0
    per_benchmark = dict.fromkeys(index.test_items, 0)
    kept = []
    for row in tqdm(read_rows(source), desc=source.name, unit="row", disable=not progress):
        rows += 1
        if row.record is None:
            bad += 1
            continue
        found = index.hits(f"{row.record.instruction}\n{row.record.response}")
        for name in found:
            per_benchmark[name] += 1
        if found:
            contaminated += 1
        elif clean_path is not None:
            kept.append(row.raw)
    if clean_path is not None:
        write_atomically(clean_path, lambda temp: _write_rows(temp, kept, source.suffix.lower()))
    sidecar = {
        "source": str(source),
        "source_size": stat.st_size,
        "source_mtime": stat.st_mtime,
        "ngram": index.ngram,
        "benchmarks": {
            name: {"test_items": index.test_items[name], "contaminated_rows": per_benchmark[name]}
            for name in index.test_items
        },
        "contaminated_rows": contaminated,
        "rows": rows,
        "bad_rows": bad,
    }
    write_atomically(sidecar_path(source), lambda temp: temp.write_text(json.dumps(sidecar, indent=1) + "\n"))
    return SourceReport(source, rows, bad, contaminated, per_benchmark, clean_path)


def _write_rows(path: Path, rows: list[dict], suffix: str) -> None:
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def report_markdown(reports: list[SourceReport], index: BenchmarkIndex, missing: list[str]) -> str:
    names = list(index.test_items)
    lines = [
        f"{index.ngram}-gram overlap with {', '.join(f'{n} ({index.test_items[n]:,} items)' for n in names)}",
        "",
        "| source | rows | contaminated | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for report in reports:
        share = report.contaminated_rows / report.rows if report.rows else 0.0
        cells = " | ".join(f"{report.per_benchmark[name]:,}" for name in names)
        lines.append(f"| {report.source} | {report.rows:,} | {report.contaminated_rows:,} ({share:.2%}) | {cells} |")
    notes = [
        f"{r.source}: {r.bad_rows:,} invalid rows not checked (see `frugal data validate`)"
        for r in reports
        if r.bad_rows
    ]
    notes += [
        f"{r.source}: clean copy with {r.rows - r.bad_rows - r.contaminated_rows:,} rows at {r.clean_path}"
        for r in reports
        if r.clean_path is not None
    ]
    if missing:
        notes.append(f"not found in the benchmarks directory, not checked: {', '.join(missing)}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"
