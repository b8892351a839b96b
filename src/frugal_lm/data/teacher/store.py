"""The output directory of `frugal data generate`: append-only files, what is done, and `run.json`.

Layout of OUT:
- `run.json`: the run's parameters (`RunSpec`), written at the start; `--resume` refuses a run
  whose parameters differ, naming the key.
- `records.jsonl`: kept records, `{"instruction", "response", "condition", "category"?, "teacher",
  "usage", "params", "source", "where", "sample", "item", "items", "billed"?}`. A reply parsed
  into several records (`--parse`) writes them together; `item`/`items` number them.
- `rejected.jsonl`: replies that failed `--verify` or `--parse` (or rows with no known answer),
  `{"source", "where", "sample", "reason", "response"?, "billed"?}`.
- `failed.jsonl`: requests that failed after their retries, `{"source", "where", "sample",
  "cause", "reason", "retries", "billed"?}`.
- `report.json`: counts, retries, tokens and dollars (`report.py`).

A unit of work is (source file, where, sample index). It ends as exactly one write of whole lines
(one `os.write` on an append-only descriptor: no buffer that a kill could leave half-flushed).
A run killed inside that write leaves a torn tail: `scan` trims it (and counts the lines) before
anything is appended, so the next line starts clean. `billed` (the tokens of every reply the unit
got, retries included) is on the first line of a unit, so the run's spend adds up across resumes.

Without `--resume`, OUT must be new or empty (an earlier run's output is never replaced: it cost
money); `.frugal_output.json` marks OUT as this command's (files.py's rules).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from frugal_lm.data.teacher.client import Usage
from frugal_lm.errors import FrugalError
from frugal_lm.files import check_output_dir, record_output, write_text_atomically

COMMAND = "frugal data generate"
RUN, RECORDS, REJECTED, FAILED, REPORT = "run.json", "records.jsonl", "rejected.jsonl", "failed.jsonl", "report.json"
OUTCOME_FILES = (RECORDS, REJECTED, FAILED)
UnitKey = tuple[str, str, int]


class RunSpec(BaseModel):
    """What a run asks; every key must match for `--resume` to continue it."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model: str
    inputs: list[str]
    read_options: dict[str, Any]
    system_sha256: str | None
    template_sha256: str | None
    parse: str
    temperature: float
    top_p: float
    max_tokens: int
    samples: int
    verify: str | None
    keep_truncated: bool


class RunFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    spec: RunSpec
    base_url: str


@dataclass
class DoneState:
    """What earlier runs in OUT finished: unit keys by outcome, their spend, torn lines trimmed."""

    kept: set[UnitKey] = field(default_factory=set)
    rejected: set[UnitKey] = field(default_factory=set)
    failed: dict[UnitKey, str] = field(default_factory=dict)
    """Failed units -> the cause of their last attempt."""
    not_asked: set[UnitKey] = field(default_factory=set)
    """Rejected units never sent (no known answer to verify against)."""
    records: int = 0
    billed: Usage = field(default_factory=Usage)
    torn_lines: int = 0

    def finished(self, retry_failed: bool) -> set[UnitKey]:
        return self.kept | self.rejected | (set() if retry_failed else set(self.failed))

    def finish(self, kind: str, key: UnitKey, cause: str | None = None, asked: bool = True) -> None:
        """Record a unit's outcome ("kept", "rejected" or "failed"), replacing an earlier one."""
        self.kept.discard(key)
        self.rejected.discard(key)
        self.failed.pop(key, None)
        self.not_asked.discard(key)
        if kind == "failed":
            self.failed[key] = cause or "unknown"
        else:
            (self.kept if kind == "kept" else self.rejected).add(key)
            if not asked:
                self.not_asked.add(key)


def unit_key(line: dict[str, Any]) -> UnitKey:
    return (line["source"], line["where"], int(line["sample"]))


def check_output(out: Path, spec: RunSpec, resume: bool) -> bool:
    """Check OUT (new, empty, or with --resume this run's own) before anything is written; True when
    there is an earlier run to resume."""
    entries = check_output_dir(out, COMMAND, whole=not resume)
    if entries and not any((out / name).exists() for name in (RUN, *OUTCOME_FILES)):
        return False  # a run killed before its first write: nothing there to keep or compare
    if entries and not resume:
        raise FrugalError(
            f"--out {out}: holds an earlier `{COMMAND}` run; add --resume to continue it, "
            f"or choose another --out (nothing was changed)"
        )
    if entries:
        _check_same_run(out, spec)
    return bool(entries)


def start_output(out: Path, spec: RunSpec, base_url: str, resuming: bool) -> None:
    """Mark OUT as this command's and, for a new run, write run.json."""
    out.mkdir(parents=True, exist_ok=True)
    record_output(out, COMMAND, [RUN, *OUTCOME_FILES, REPORT])
    if not resuming:
        write_text_atomically(out / RUN, RunFile(spec=spec, base_url=base_url).model_dump_json(indent=1) + "\n")


def _check_same_run(out: Path, spec: RunSpec) -> None:
    path = out / RUN
    try:
        recorded = RunFile.model_validate_json(path.read_text(encoding="utf-8")).spec
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not a run.json of this version"
        raise FrugalError(f"--resume: {path}: {reason}; choose another --out") from None
    for key in RunSpec.model_fields:
        if getattr(recorded, key) != getattr(spec, key):
            raise FrugalError(
                f"--resume: {key} differs from the run in {out} ({getattr(recorded, key)!r} in {RUN}, "
                f"{getattr(spec, key)!r} now); resume with the same parameters, or choose another --out"
            )


def scan(out: Path) -> DoneState:
    """Trim each outcome file's torn tail, then collect the finished units and their spend."""
    state = DoneState()
    for name in OUTCOME_FILES:
        path = out / name
        if not path.exists():
            continue
        lines, (end, torn) = _read_units(path)
        if torn:
            os.truncate(path, end)  # the unit a kill tore: it is asked again
            state.torn_lines += torn
        kind = {RECORDS: "kept", REJECTED: "rejected", FAILED: "failed"}[name]
        for line in lines:
            key = unit_key(line)
            # kept beats rejected beats failed (a failed unit asked again with --retry-failed)
            if key not in state.kept and (kind != "failed" or key not in state.rejected):
                state.finish(kind, key, line.get("cause"), line.get("asked", True) is not False)
            billed = line.get("billed")
            if isinstance(billed, dict):
                state.billed += Usage(billed.get("prompt_tokens", 0), billed.get("completion_tokens", 0))
        if name == RECORDS:
            state.records = len(lines)
    return state


def _read_units(path: Path) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """(lines of complete units, (byte offset where they end, lines after it)). A unit is complete
    when all its `items` lines are there, each a whole JSON line ending in a newline."""
    data = path.read_bytes()
    lines: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    offset = end = 0
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        offset += len(raw)
        line = _parse_line(raw)
        if line is None:
            if offset < len(data):
                raise FrugalError(f"{path}:{number}: not a line `{COMMAND}` wrote; was the file edited?")
            break  # the torn last line
        pending.append(line)
        if len(pending) == int(line.get("items", 1)):
            lines += pending
            pending, end = [], offset
    torn = data[end:].count(b"\n") + (0 if data.endswith(b"\n") or end == len(data) else 1)
    return lines, (end, torn)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        line = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(line, dict) or not {"source", "where", "sample"} <= line.keys():
        return None
    return line


class OutputWriter:
    """Appends whole units to the outcome files: one `os.write` of complete lines each."""

    def __init__(self, out: Path):
        self.descriptors = {
            name: os.open(out / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for name in OUTCOME_FILES
        }

    def write(self, name: str, lines: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.descriptors[name], view) :]

    def close(self) -> None:
        for descriptor in self.descriptors.values():
            os.close(descriptor)
