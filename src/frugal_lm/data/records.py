"""Instruction -> response records from JSONL or Parquet, streamed and validated row by row.

A record is `{"instruction": str, "response": str, "condition": str}`; `condition` is a
comma-separated list of known tags and defaults to `direct`. Extra fields (such as a
`category`) pass through. Every bad row gets a reason tied to its place in the file
(`file:line` for JSONL, `file:row N` for Parquet, 1-based), so nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugal_lm.errors import FrugalError
from frugal_lm.files import os_errors_as_user_errors

KNOWN_CONDITIONS = ("direct", "cot", "noisy", "synth")
DEFAULT_MAX_CHARS = 1_000_000


class BadRowError(FrugalError):
    """A bad row stopped the work (`--on-error fail`): exit code 1, as `frugal data
    validate` uses for bad rows, so scripts tell bad data (1) from bad usage (2)."""

    exit_code = 1


@dataclass(frozen=True)
class Record:
    instruction: str
    response: str
    conditions: tuple[str, ...]
    category: str | None = None


@dataclass(frozen=True)
class RowResult:
    """One row: a record, or the reason it was rejected; `where` is `file:line`."""

    where: str
    record: Record | None
    reason: str | None
    raw: Any = None


def validate_row(
    row: Any, known_conditions: tuple[str, ...] = KNOWN_CONDITIONS, max_chars: int = DEFAULT_MAX_CHARS
) -> Record | str:
    """The record, or a one-line reason it is bad."""
    if not isinstance(row, dict):
        return f"expected an object with instruction and response, got {type(row).__name__}"
    for field in ("instruction", "response"):
        if field not in row or row[field] is None:
            return f"missing field {field!r}"
        if not isinstance(row[field], str):
            return f"field {field!r} must be a string, got {type(row[field]).__name__}"
        if not row[field].strip():
            return f"field {field!r} is empty"
        if len(row[field]) > max_chars:
            return f"field {field!r} has {len(row[field]):,} characters, over the cap of {max_chars:,}"
        if (problem := _not_unicode(row[field])) is not None:
            return f"field {field!r} {problem}"
    condition = row.get("condition", "direct")
    if condition is None:
        condition = "direct"
    if not isinstance(condition, str):
        return f"field 'condition' must be a string of comma-separated tags, got {type(condition).__name__}"
    tags = tuple(tag.strip() for tag in condition.split(",") if tag.strip()) or ("direct",)
    unknown = [tag for tag in tags if tag not in known_conditions]
    if unknown:
        return f"unknown condition tag {unknown[0]!r}; known: {', '.join(known_conditions)}"
    category = row.get("category")
    if isinstance(category, str) and (problem := _not_unicode(category)) is not None:
        return f"field 'category' {problem}"
    return Record(row["instruction"], row["response"], tags, category if isinstance(category, str) else None)


def _not_unicode(text: str) -> str | None:
    """Why `text` is not valid Unicode, or None. JSON's `\\udfff` escape decodes to a lone
    surrogate, which no UTF-8 encoder (the tokenizer's included) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"holds a lone surrogate {text[error.start]!r} at character {error.start + 1} (not valid Unicode)"
    return None


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any, str | None]]:
    # Bytes, decoded line by line: a text-mode reader decodes whole chunks, so a bad byte
    # would be reported on an earlier line and end the file; here it costs only its own row.
    with os_errors_as_user_errors(path), open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                # utf-8-sig on line 1: editors on Windows start a file with a byte-order mark.
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield f"{path}:{number}", None, f"not valid UTF-8 (byte {error.start + 1})"
                continue
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line), None
            except json.JSONDecodeError as error:
                yield f"{path}:{number}", None, f"not valid JSON ({error.msg} at column {error.colno})"


def _parquet_rows(path: Path, batch_rows: int = 8192) -> Iterator[tuple[str, Any, str | None]]:
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise FrugalError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = parquet.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise FrugalError(f"{path}: not a readable Parquet file ({error})") from None
    number = 0
    for batch in table.iter_batches(batch_size=batch_rows):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:row {number}", row, None


def read_rows(
    path: Path | str, known_conditions: tuple[str, ...] = KNOWN_CONDITIONS, max_chars: int = DEFAULT_MAX_CHARS
) -> Iterator[RowResult]:
    """Stream every row of a `.jsonl` or `.parquet` file with its verdict."""
    path = Path(path)
    if not path.is_file():
        raise FrugalError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise FrugalError(f"{path}: unsupported file type {suffix or '(none)'}; use .jsonl or .parquet")
    for where, row, parse_error in rows:
        if parse_error is not None:
            yield RowResult(where, None, parse_error)
            continue
        verdict = validate_row(row, known_conditions, max_chars)
        if isinstance(verdict, str):
            yield RowResult(where, None, verdict, row)
        else:
            yield RowResult(where, verdict, None, row)


def validate_files(paths: list[Path]) -> tuple[int, list[str]]:
    """(good rows, `where: reason` lines for bad rows) over all files."""
    good, problems = 0, []
    for path in paths:
        for result in read_rows(path):
            if result.reason is None:
                good += 1
            else:
                problems.append(f"{result.where}: {result.reason}")
    return good, problems
