"""The row formats instruction data comes in, how each is recognised and how it maps to a record.

| format            | fields                                         | record                                   |
|-------------------|------------------------------------------------|------------------------------------------|
| messages          | messages: [{role, content}]                    | one per assistant turn (conversations)   |
| sharegpt          | conversations: [{from, value}]                 | one per assistant turn (conversations)   |
| alpaca            | instruction, input, output                     | instruction + "\\n\\n" + input -> output  |
| dolly             | instruction, context, response, category       | instruction + "\\n\\n" + context -> response |
| prompt-completion | prompt, completion                             | prompt -> completion                     |
| question-answer   | question, answer                               | question -> answer                       |
| records           | instruction, response, condition, category     | as is (frugal-lm's own format)           |

Design choices:
- Detection looks at one row's keys (`detect_format`); the reader fixes a file's format at its
  first recognised row and reports a row of another format as a mixed file.
- An empty `input`/`context` adds nothing (no dangling blank lines): an Alpaca row without input
  is the same record as a records row.
- Every format but `records` (whose `condition` field is authoritative, default `direct`) reads
  a response whose last line is `#### ANSWER` (GSM8K's worked solutions, the synthetic tasks'
  `cot` layout) as condition `cot`, unless the row names its own `condition`.
- `category` passes through from any format that has one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MESSAGES, SHAREGPT, ALPACA, DOLLY = "messages", "sharegpt", "alpaca", "dolly"
PROMPT_COMPLETION, QUESTION_ANSWER, RECORDS = "prompt-completion", "question-answer", "records"
MAPPED = "mapped"
"""The format of a source read with `--map` (records under other column names)."""

FORMAT_FIELDS = {
    MESSAGES: ("messages",),
    SHAREGPT: ("conversations",),
    ALPACA: ("instruction", "input", "output"),
    DOLLY: ("instruction", "context", "response", "category"),
    PROMPT_COMPLETION: ("prompt", "completion"),
    QUESTION_ANSWER: ("question", "answer"),
    RECORDS: ("instruction", "response", "condition", "category"),
}
FORMATS = tuple(FORMAT_FIELDS)
CONVERSATION_FORMATS = (MESSAGES, SHAREGPT)
RECORD_FIELDS = ("instruction", "response", "condition", "category")
JOIN = "\n\n"
"""How Alpaca's `input` and Dolly's `context` join the instruction: instruction, blank line, text."""

_FINAL_ANSWER = re.compile(r"(?:^|\n)####[ \t]*\S[^\n]*\s*$")


@dataclass(frozen=True)
class FlatFormat:
    """A one-example-per-row format: which column holds each record field, and the column
    (if any) that joins the instruction after a blank line."""

    columns: dict[str, str] = field(default_factory=dict)
    joined: str | None = None

    def column(self, record_field: str) -> str:
        return self.columns.get(record_field, record_field)


FLAT_FORMATS = {
    ALPACA: FlatFormat({"response": "output"}, joined="input"),
    DOLLY: FlatFormat(joined="context"),
    PROMPT_COMPLETION: FlatFormat({"instruction": "prompt", "response": "completion"}),
    QUESTION_ANSWER: FlatFormat({"instruction": "question", "response": "answer"}),
}


def detect_format(row: Any) -> str | None:
    """The format a row's keys say it is, or None. Prompt-only rows (no response field) are
    recognised too: `frugal data generate` reads them."""
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return MESSAGES
    if "conversations" in row:
        return SHAREGPT
    if "instruction" in row:
        if "output" in row or ("input" in row and "response" not in row):
            return ALPACA
        return DOLLY if "context" in row else RECORDS
    if "prompt" in row:
        return PROMPT_COMPLETION
    if "question" in row:
        return QUESTION_ANSWER
    return None


def unknown_shape(row: Any) -> str:
    """Why a row fits no format: the fields it has and the formats it could be."""
    if not isinstance(row, dict):
        return f"expected an object with instruction and response, got {type(row).__name__}"
    keys = list(row)
    near = [name for name, fields in FORMAT_FIELDS.items() if set(fields) & set(keys)]
    candidates = near or list(FORMATS)
    described = "; ".join(f"{name} ({', '.join(FORMAT_FIELDS[name])})" for name in candidates)
    fields = ", ".join(repr(key) for key in keys[:12]) + (", ..." if len(keys) > 12 else "")
    return (
        f"unknown row shape with fields {fields or '(none)'}; it could be {described}: "
        f"use --format NAME, or --map instruction=FIELD,response=FIELD"
    )


def ends_with_final_answer(response: Any) -> bool:
    """A worked solution ending in a `#### ANSWER` line (GSM8K's layout, condition `cot`)."""
    return isinstance(response, str) and _FINAL_ANSWER.search(response) is not None


def flat_fields(spec: FlatFormat, row: dict) -> tuple[dict, dict[str, str]] | str:
    """(the record fields of a flat-format row, the column each came from) or a reason. Values
    are not checked here beyond what the join needs; `records.validate_row` checks them."""
    fields = {name: row[spec.column(name)] for name in RECORD_FIELDS if spec.column(name) in row}
    names = {name: spec.column(name) for name in RECORD_FIELDS}
    if spec.joined is not None and row.get(spec.joined) is not None:
        extra = row[spec.joined]
        if not isinstance(extra, str):
            return f"field {spec.joined!r} must be a string, got {type(extra).__name__}"
        instruction = fields.get("instruction")
        if extra.strip() and isinstance(instruction, str):
            fields["instruction"] = instruction + JOIN + extra
    if fields.get("condition") is None and ends_with_final_answer(fields.get("response")):
        fields["condition"] = "cot"
    return fields, names


def mapped_format(field_map: dict[str, str]) -> FlatFormat:
    return FlatFormat(dict(field_map))
