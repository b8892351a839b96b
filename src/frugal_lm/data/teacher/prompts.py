"""What a row asks the teacher, and how a reply becomes records.

Design choices:
- Without `--template` the prompt is the row's instruction. A template is a text file in
  Python's `string.Template` syntax: `$field` or `${field}` is replaced by that field of the row
  (any top-level field of the source row, plus `instruction`, `response` and `category` as read),
  `$$` is a literal dollar. Nothing is evaluated, and braces stay literal, so a template can show
  the JSON it asks for. A field missing from a row stops the run with one line naming the
  template, the field and the row (before anything is asked: `generate` checks every row first).
- `--system TEXT` or `--system @FILE`: the system message of every request.
- `--parse` turns one reply into records:
  - `text` (default): one record, instruction = the row's instruction, response = the reply.
  - `qa-pairs`: "Q: ... A: ..." (or "Question:"/"Answer:", numbered or not) blocks, one record each.
  - `json`: a JSON object or list of objects (the whole reply or its fenced block), each with an
    instruction (`instruction`, `question` or `prompt`) and a response (`response`, `answer` or
    `output`); one record each.
  - `lines`: each non-empty line (list markers such as "1." or "-" removed) is a new prompt: a
    record with an empty response, for a second `frugal data generate` to answer (self-instruct).
  A reply that yields no record is rejected with the reason.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any

from frugal_lm.data.records import RowResult
from frugal_lm.data.teacher.verify import json_payload
from frugal_lm.errors import FrugalError

PARSERS = ("text", "lines", "json", "qa-pairs")
INSTRUCTION_KEYS, RESPONSE_KEYS = ("instruction", "question", "prompt"), ("response", "answer", "output")
_LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s+")
_QA_LABEL = re.compile(r"^\s*(?:\d+[.)]\s*)?\**\s*(Q|Question|A|Answer)\s*\d*\s*\**\s*[:.]\**\s*", re.IGNORECASE)


class PromptTemplate:
    """A `--template` file: `render(row_fields(result), where)` is the prompt."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise FrugalError(f"--template {path}: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise FrugalError(f"--template {path}: not UTF-8 text") from None
        self.template = string.Template(text)
        if not self.template.is_valid():
            raise FrugalError(
                f"--template {path}: a '$' that starts no $field or ${{field}} (write $$ for a literal dollar)"
            )
        self.fields = tuple(self.template.get_identifiers())
        if not self.fields:
            raise FrugalError(f"--template {path}: uses no $field of the rows (e.g. $instruction)")

    def missing_field(self, fields: dict[str, str]) -> str | None:
        return next((name for name in self.fields if name not in fields), None)

    def render(self, fields: dict[str, str], where: str) -> str:
        if (missing := self.missing_field(fields)) is not None:
            have = ", ".join(sorted(fields)[:12])
            raise FrugalError(f"--template {self.path}: field {missing!r} is not in row {where} (it has: {have})")
        return self.template.substitute(fields)


def row_fields(result: RowResult) -> dict[str, str]:
    """A row's fields for a template: its source fields (non-text values as JSON), then the record's."""
    fields: dict[str, str] = {}
    if isinstance(result.raw, dict):
        for key, value in result.raw.items():
            if isinstance(key, str) and value is not None:
                fields[key] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    record = result.record
    if record is not None:
        fields.update(instruction=record.instruction, response=record.response)
        if record.category is not None:
            fields["category"] = record.category
    return fields


def read_system(value: str | None) -> str | None:
    """`--system TEXT`, or `--system @FILE` read from FILE."""
    if value is None or not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except OSError as error:
        raise FrugalError(f"--system {value}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise FrugalError(f"--system {value}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def messages(system: str | None, prompt: str) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def parse_reply(text: str, parser: str) -> list[tuple[str | None, str]] | str:
    """[(instruction or None for the row's own, response)], or why the reply gives no record."""
    if parser == "text":
        return [(None, text)] if text.strip() else "the reply is empty"
    if parser == "lines":
        prompts = [_LIST_MARKER.sub("", line).strip() for line in text.splitlines()]
        return [(prompt, "") for prompt in prompts if prompt] or "--parse lines: the reply has no non-empty line"
    if parser == "qa-pairs":
        return _qa_pairs(text)
    if parser == "json":
        return _json_pairs(text)
    raise ValueError(f"unknown parser {parser!r}")


def _qa_pairs(text: str) -> list[tuple[str | None, str]] | str:
    pairs: list[list[str]] = []
    current: str | None = None  # "q" or "a": where a continuation line goes
    for line in text.splitlines():
        label = _QA_LABEL.match(line)
        if label is not None:
            current = label.group(1)[0].lower()
            if current == "q":
                pairs.append([line[label.end() :], ""])
            elif pairs and not pairs[-1][1]:
                pairs[-1][1] = line[label.end() :]
            else:
                current = None  # an answer without its question: ignored
        elif current is not None and pairs:
            index = 0 if current == "q" else 1
            pairs[-1][index] += "\n" + line
    complete = [(question.strip(), answer.strip()) for question, answer in pairs if question.strip() and answer.strip()]
    return complete or "--parse qa-pairs: no 'Q: ... A: ...' pair in the reply"


def _json_pairs(text: str) -> list[tuple[str | None, str]] | str:
    try:
        payload = json_payload(text)
    except ValueError as error:
        return f"--parse json: {error}"
    items = payload if isinstance(payload, list) else [payload]
    pairs = []
    for number, item in enumerate(items, start=1):
        instruction = _first_text(item, INSTRUCTION_KEYS)
        response = _first_text(item, RESPONSE_KEYS)
        if instruction is None or response is None:
            return (
                f"--parse json: item {number} is not an object with a text "
                f"{'/'.join(INSTRUCTION_KEYS)} and {'/'.join(RESPONSE_KEYS)}"
            )
        pairs.append((instruction, response))
    return pairs or "--parse json: an empty list"


def _first_text(item: Any, keys: tuple[str, ...]) -> str | None:
    if not isinstance(item, dict):
        return None
    for key in keys:
        if isinstance(item.get(key), str) and item[key].strip():
            return item[key]
    return None
