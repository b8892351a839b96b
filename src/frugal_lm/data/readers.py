"""Read the instruction data people have, in any supported file type and row format, as records.

`read_examples(path, options)` streams a source (`files_in`: JSONL, JSON array, CSV, Parquet,
Arrow, compressed, folders) and maps each row by its format (`formats`, `conversations`) to
`RowResult`s: a `Record`, a bad row with its reason, or a skipped conversation turn (`skipped`
set, the reason starting with a word of `SKIP_CATEGORIES`). `where` is `file:LINE` or
`file:row N`, plus ` turn K` for a conversation's K-th assistant turn.

Design choices:
- The format is detected per file, from the first row whose keys name one (`detect_format`), or
  forced (`ReadOptions.format`, `--format`); `SourceReader.format` tells which, for the output of
  every command. A later row of another format is a bad row naming both, so a concatenation of
  two datasets is never half misread.
- `--map instruction=FIELD,response=FIELD[,condition=FIELD,category=FIELD]` reads any other flat
  columns; such a source's format is `mapped`.
- Every record goes through `records.validate_row`, so every format gets the same checks
  (empty, over the length cap, not Unicode, unknown condition tag), named by the source's field.
- `--condition TAGS` adds TAGS to each row's own tags (a row without tags gets TAGS instead of
  the default `direct`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frugal_lm.data.conversations import SKIP_CATEGORIES, Message, conversation_turns, parse_conversation
from frugal_lm.data.files_in import iter_rows
from frugal_lm.data.formats import (
    CONVERSATION_FORMATS,
    FLAT_FORMATS,
    FORMATS,
    MAPPED,
    MESSAGES,
    PROMPT_COMPLETION,
    RECORD_FIELDS,
    RECORDS,
    detect_format,
    flat_fields,
    mapped_format,
    unknown_shape,
)
from frugal_lm.data.records import DEFAULT_MAX_CHARS, KNOWN_CONDITIONS, RowResult, validate_row
from frugal_lm.errors import FrugalError

__all__ = [
    "FORMATS",
    "MAPPED",
    "SKIP_CATEGORIES",
    "ReadOptions",
    "SourceCounts",
    "SourceReader",
    "describe_source",
    "detect_format",
    "parse_field_map",
    "read_examples",
]

Turns = Literal["all", "first", "last"]


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source: the CLI's `--format`, `--map`, `--turns`, `--condition`."""

    format: str | None = None
    """One of FORMATS, or None to detect it per file."""
    field_map: dict[str, str] | None = None
    """Record field -> column (`--map`); implies the `mapped` format."""
    turns: Turns = "all"
    """Which assistant turns of a conversation become examples."""
    condition: str | None = None
    """Comma-separated tags added to every row of the source."""
    require_response: bool = True
    """False: a row with an instruction and no response is a Record whose response is ""."""

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in FORMATS:
            raise FrugalError(f"--format {self.format}: unknown format; known: {', '.join(FORMATS)}")
        if self.turns not in ("all", "first", "last"):
            raise FrugalError(f"--turns {self.turns}: must be all, first or last")
        if self.field_map is not None:
            if self.format not in (None, RECORDS):
                raise FrugalError(f"--map reads flat columns; it cannot be combined with --format {self.format}")
            required = ("instruction", "response") if self.require_response else ("instruction",)
            missing = [key for key in required if key not in self.field_map]
            if missing:
                raise FrugalError(f"--map: names no column for {', '.join(missing)} (e.g. {missing[0]}=FIELD)")

    def stamp(self) -> dict[str, Any]:
        """The options as plain data, for a tokenized source's meta.json (a change re-tokenizes)."""
        return dataclasses.asdict(self)


def parse_field_map(text: str) -> dict[str, str]:
    """`instruction=FIELD,response=FIELD[,condition=FIELD,category=FIELD]` -> dict, or a one-line error."""
    mapping: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        key, sep, column = (piece.strip() for piece in item.partition("="))
        if not sep or not key or not column:
            raise FrugalError(f"--map {text}: {item!r} is not KEY=FIELD (e.g. instruction=question)")
        if key not in RECORD_FIELDS:
            raise FrugalError(f"--map {text}: unknown key {key!r}; keys: {', '.join(RECORD_FIELDS)}")
        if key in mapping:
            raise FrugalError(f"--map {text}: {key!r} is mapped twice")
        mapping[key] = column
    return mapping


def condition_tags(text: str | None, known_conditions: tuple[str, ...]) -> tuple[str, ...]:
    tags = tuple(tag.strip() for tag in (text or "").split(",") if tag.strip())
    unknown = [tag for tag in tags if tag not in known_conditions]
    if unknown:
        raise FrugalError(f"--condition {text}: unknown tag {unknown[0]!r}; known: {', '.join(known_conditions)}")
    return tags


class SourceReader:
    """The examples of one source, and the format it was read as (`format`: forced, `mapped`, or
    detected from the first recognised row; None until then, or when no row was recognised)."""

    def __init__(
        self,
        path: Path | str,
        options: ReadOptions = ReadOptions(),
        known_conditions: tuple[str, ...] = KNOWN_CONDITIONS,
        max_chars: int = DEFAULT_MAX_CHARS,
    ):
        self.path, self.options = Path(path), options
        self.known_conditions, self.max_chars = known_conditions, max_chars
        self.extra_tags = condition_tags(options.condition, known_conditions)
        self.format: str | None = MAPPED if options.field_map is not None else options.format
        self.detected_at: str | None = None
        """Where the format was detected (None when forced)."""

    def __iter__(self) -> Iterator[RowResult]:
        for where, row, parse_error in iter_rows(self.path):
            if parse_error is not None:
                yield RowResult(where, None, parse_error)
                continue
            row_format = self._row_format(where, row) if isinstance(row, dict) else unknown_shape(row)
            if row_format not in FORMATS and row_format != MAPPED:
                yield RowResult(where, None, row_format, row)
            elif row_format in CONVERSATION_FORMATS:
                yield from self._conversation(where, row, row_format)
            elif row_format == PROMPT_COMPLETION and isinstance(row.get("prompt"), list):
                yield from self._conversation(where, row, row_format)
            else:
                yield self._flat(where, row, row_format)

    def _row_format(self, where: str, row: Any) -> str:
        """The format to read `row` as, or (not one of FORMATS) why it has none."""
        if self.options.format is not None or self.options.field_map is not None:
            return self.format  # type: ignore[return-value]  # forced
        detected = detect_format(row)
        if detected is None:
            return unknown_shape(row)
        if self.format is None:
            self.format, self.detected_at = detected, where
        elif detected != self.format:
            return (
                f"a {detected} row in a file of {self.format} rows (from {self.detected_at}): a file mixes formats; "
                f"split it, or force one with --format"
            )
        return detected

    def _flat(self, where: str, row: Any, row_format: str) -> RowResult:
        if row_format == MAPPED and isinstance(row, dict) and (missing := self._missing_mapped(row)) is not None:
            return RowResult(where, None, missing, row)
        if row_format == RECORDS or not isinstance(row, dict):
            fields, names = row, None
        else:
            spec = mapped_format(self.options.field_map or {}) if row_format == MAPPED else FLAT_FORMATS[row_format]
            mapped = flat_fields(spec, row)
            if isinstance(mapped, str):
                return RowResult(where, None, mapped, row)
            fields, names = mapped
        return self._result(where, fields, names, row, row_format)

    def _missing_mapped(self, row: dict) -> str | None:
        """Why a row lacks a column that --map requires, naming the fields it has, or None."""
        required = ("instruction", "response") if self.options.require_response else ("instruction",)
        for key in required:
            column = (self.options.field_map or {})[key]
            if column not in row:
                fields = ", ".join(repr(name) for name in list(row)[:12])
                return f"missing mapped column {column!r} (--map {key}={column}); the row has {fields or 'no fields'}"
        return None

    def _conversation(self, where: str, row: dict, row_format: str) -> Iterator[RowResult]:
        messages, first_target = self._messages(row, row_format)
        turns = (
            messages
            if isinstance(messages, str)
            else conversation_turns(messages, self.options.turns, first_target, not self.options.require_response)
        )
        if isinstance(turns, str):
            yield RowResult(where, None, turns, row)
            return
        for turn in turns:
            turn_where = f"{where} turn {turn.number}"
            if turn.fields is None:
                yield RowResult(turn_where, None, turn.reason, row, skipped=turn.skipped)
                continue
            fields = {**turn.fields, **{k: row[k] for k in ("condition", "category") if row.get(k) is not None}}
            yield self._result(turn_where, fields, {"response": "content"}, row, row_format)

    def _messages(self, row: dict, row_format: str) -> tuple[list[Message] | str, int]:
        """(the conversation's messages or why it has none, the index of the first one to learn)."""
        if row_format != PROMPT_COMPLETION:
            return parse_conversation(row, row_format), 0
        # TRL's conversational prompt/completion: the prompt's messages are context only.
        prompt, completion = row["prompt"], row.get("completion")
        if completion is None and not self.options.require_response:
            completion = []
        if not isinstance(completion, list):
            what = "missing" if completion is None else f"a {type(completion).__name__}"
            return f"field 'completion' must be a list of messages when 'prompt' is one, got {what}", 0
        return parse_conversation({"messages": [*prompt, *completion]}, MESSAGES), len(prompt)

    def _result(self, where: str, fields: Any, names: dict | None, row: Any, row_format: str) -> RowResult:
        if self.extra_tags and isinstance(fields, dict):
            fields = {**fields, "condition": _add_tags(fields.get("condition"), self.extra_tags)}
        verdict = validate_row(
            fields,
            self.known_conditions,
            self.max_chars,
            names=names,
            require_response=self.options.require_response,
            source_format=row_format,
        )
        if isinstance(verdict, str):
            return RowResult(where, None, verdict, row)
        return RowResult(where, verdict, None, row)


def _add_tags(condition: Any, extra: tuple[str, ...]) -> Any:
    if condition is not None and not isinstance(condition, str):
        return condition  # validate_row names the bad type
    own = [tag.strip() for tag in (condition or "").split(",") if tag.strip()]
    return ",".join(dict.fromkeys([*own, *extra]))


def read_examples(
    path: Path | str,
    options: ReadOptions = ReadOptions(),
    known_conditions: tuple[str, ...] = KNOWN_CONDITIONS,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Iterator[RowResult]:
    """Every example of a source with its verdict (see the module docstring)."""
    return iter(SourceReader(path, options, known_conditions, max_chars))


def describe_source(path: Path | str, options: ReadOptions = ReadOptions(), max_rows: int = 1000) -> str | None:
    """The format a source is read as (reading at most `max_rows` rows to detect it), or None."""
    reader = SourceReader(path, options)
    for count, _ in enumerate(reader, start=1):
        if reader.format is not None or count >= max_rows:
            break
    return reader.format


@dataclass
class SourceCounts:
    """Good, bad and skipped examples of a source, skipped ones by category."""

    good: int = 0
    bad: int = 0
    skipped: Counter = field(default_factory=Counter)

    def add(self, result: RowResult) -> None:
        if result.record is not None:
            self.good += 1
        elif result.skipped:
            self.skipped[skip_category(result)] += 1
        else:
            self.bad += 1

    def summary(self) -> str:
        text = f"{self.good:,} good rows, {self.bad:,} bad rows"
        if self.skipped:
            by_reason = ", ".join(f"{category} {count:,}" for category, count in sorted(self.skipped.items()))
            text += f", {sum(self.skipped.values()):,} turns skipped ({by_reason})"
        return text


def skip_category(result: RowResult) -> str | None:
    """The category word of a skipped turn's reason (one of SKIP_CATEGORIES), else None."""
    if not result.skipped or result.reason is None:
        return None
    return result.reason.split(":", 1)[0]
