"""Counts, tokens and dollars of a `frugal data generate` run: `report.json` and the progress bar.

Design choices:
- Unit counts come from the output files (earlier runs in OUT included), so they are right after a
  kill: every unit is kept, rejected, failed, or pending (not finished yet), and they add up to
  `units` (rows read x --samples).
- Tokens and dollars are every reply the endpoint billed, retried ones included; `--price-in` and
  `--price-out` are dollars per million prompt and completion tokens.
- Retries by cause are added to those of the earlier report in OUT; report.json is rewritten
  every few seconds while the run goes, so a kill loses at most the last few seconds' retries.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from frugal_lm.data.teacher.client import Usage
from frugal_lm.data.teacher.store import REPORT, DoneState, UnitKey
from frugal_lm.files import write_text_atomically


class GenerateReport(BaseModel):
    units: int
    """Units of work in the inputs: rows read x --samples."""
    kept: int
    records: int
    """Records in records.jsonl (several per kept unit with --parse)."""
    rejected: int
    failed: int
    pending: int
    """Units with no outcome yet (a stop at --max-dollars, or a kill): --resume asks them."""
    asked: int
    """Units sent to the teacher (kept, failed, and rejected after a reply)."""
    bad_input_rows: int
    """Input rows that are not examples (see `frugal data validate`): never asked."""
    retries: dict[str, int]
    failures: dict[str, int]
    """Failed units by the cause of their last attempt."""
    tokens_in: int
    tokens_out: int
    dollars: float
    price_in: float
    price_out: float
    stopped: str | None
    """"max-dollars" when the run stopped at its budget, else None."""
    torn_lines_trimmed: int


def dollars(usage: Usage, price_in: float, price_out: float) -> float:
    return (usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 1e6


@dataclass
class Tally:
    """The run's state: what earlier runs finished (`done`) and what this one adds."""

    done: DoneState
    price_in: float = 0.0
    price_out: float = 0.0
    units: int = 0
    bad_input_rows: int = 0
    records: int = 0
    retries: Counter = field(default_factory=Counter)
    billed: Usage = field(default_factory=Usage)
    stopped: str | None = None

    def __post_init__(self) -> None:
        self.billed = self.done.billed
        self.records = self.done.records

    @property
    def dollars(self) -> float:
        return dollars(self.billed, self.price_in, self.price_out)

    def outcome(self, kind: str, key: UnitKey, records: int = 0, cause: str | None = None, asked: bool = True):
        """Count a unit's outcome ("kept", "rejected" or "failed"), replacing an earlier one of its key."""
        self.done.finish(kind, key, cause, asked)
        self.records += records

    def postfix(self) -> str:
        return (
            f"${self.dollars:,.4f}, {self.billed.prompt_tokens:,} in / {self.billed.completion_tokens:,} out, "
            f"kept {len(self.done.kept):,} rejected {len(self.done.rejected):,} failed {len(self.done.failed):,}"
        )

    def report(self, earlier_retries: dict[str, int]) -> GenerateReport:
        finished = len(self.done.kept) + len(self.done.rejected) + len(self.done.failed)
        return GenerateReport(
            units=self.units,
            kept=len(self.done.kept),
            records=self.records,
            rejected=len(self.done.rejected),
            failed=len(self.done.failed),
            pending=self.units - finished,
            asked=finished - len(self.done.not_asked),
            bad_input_rows=self.bad_input_rows,
            retries=dict(sorted((Counter(earlier_retries) + self.retries).items())),
            failures=dict(sorted(Counter(self.done.failed.values()).items())),
            tokens_in=self.billed.prompt_tokens,
            tokens_out=self.billed.completion_tokens,
            dollars=round(self.dollars, 6),
            price_in=self.price_in,
            price_out=self.price_out,
            stopped=self.stopped,
            torn_lines_trimmed=self.done.torn_lines,
        )


def earlier_retries(out: Path) -> dict[str, int]:
    """The retries an earlier run in OUT reported (none if it wrote no report)."""
    try:
        retries = json.loads((out / REPORT).read_text(encoding="utf-8")).get("retries", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(cause): int(count) for cause, count in retries.items() if isinstance(count, int)}


def write_report(out: Path, report: GenerateReport) -> None:
    write_text_atomically(out / REPORT, report.model_dump_json(indent=1) + "\n")
