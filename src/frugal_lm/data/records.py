"""Instruction -> response records, streamed and validated row by row.

A record is `{"instruction": str, "response": str, "condition": str}`; `condition` is a
comma-separated list of known tags and defaults to `direct`. Extra fields (such as a
`category`) pass through. Every bad row gets a reason tied to its place in the file
(`file:line` for JSONL, `file:row N` for Parquet, 1-based), so nothing is dropped silently.

`read_rows` reads files of records as they are; `readers.read_examples` reads the other row
formats people have (chats, Alpaca, ...) into the same `Record`s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal_lm.data.files_in import iter_rows
from frugal_lm.errors import FrugalError

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
    source_format: str | None = field(default=None, compare=False)
    """The row format it was read from (`formats.FORMATS`, or `mapped`); None when made in code."""


@dataclass(frozen=True)
class RowResult:
    """One row: a record, or the reason it was rejected; `where` is `file:line`. A skipped
    conversation turn (`readers`) has `skipped` set and is not an error: its reason starts with
    a word of `conversations.SKIP_CATEGORIES`."""

    where: str
    record: Record | None
    reason: str | None
    raw: Any = None
    skipped: bool = False


def validate_row(
    row: Any,
    known_conditions: tuple[str, ...] = KNOWN_CONDITIONS,
    max_chars: int = DEFAULT_MAX_CHARS,
    *,
    names: dict[str, str] | None = None,
    require_response: bool = True,
    source_format: str | None = None,
) -> Record | str:
    """The record, or a one-line reason it is bad. `names` gives the source's name of a field
    for the reasons (Alpaca's `output` for `response`); without `require_response`, a missing
    or empty response is the empty string (a prompt-only row)."""
    if not isinstance(row, dict):
        return f"expected an object with instruction and response, got {type(row).__name__}"
    if not require_response and (row.get("response") is None or row.get("response") == ""):
        row = {**row, "response": ""}
        texts: tuple[str, ...] = ("instruction",)
    else:
        texts = ("instruction", "response")
    for text_field in texts:
        if (problem := _text_problem(row.get(text_field), max_chars)) is not None:
            name = (names or {}).get(text_field, text_field)
            return f"missing field {name!r}" if problem == "missing" else f"field {name!r} {problem}"
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
    return Record(
        row["instruction"], row["response"], tags, category if isinstance(category, str) else None, source_format
    )


def _text_problem(value: Any, max_chars: int) -> str | None:
    """Why a text field's value is unusable ("missing", or the rest of a sentence), or None."""
    if value is None:
        return "missing"
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value.strip():
        return "is empty"
    if len(value) > max_chars:
        return f"has {len(value):,} characters, over the cap of {max_chars:,}"
    return _not_unicode(value)


def _not_unicode(text: str) -> str | None:
    """Why `text` is not valid Unicode, or None. JSON's `\\udfff` escape decodes to a lone
    surrogate, which no UTF-8 encoder (the tokenizer's included) accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"holds a lone surrogate {text[error.start]!r} at character {error.start + 1} (not valid Unicode)"
    return None


def read_rows(
    path: Path | str, known_conditions: tuple[str, ...] = KNOWN_CONDITIONS, max_chars: int = DEFAULT_MAX_CHARS
) -> Iterator[RowResult]:
    """Stream every row of a records source (any type `files_in` reads) with its verdict."""
    for where, row, parse_error in iter_rows(Path(path)):
        if parse_error is not None:
            yield RowResult(where, None, parse_error)
            continue
        verdict = validate_row(row, known_conditions, max_chars, source_format="records")
        if isinstance(verdict, str):
            yield RowResult(where, None, verdict, row)
        else:
            yield RowResult(where, verdict, None, row)
