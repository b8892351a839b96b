"""What a demo run reports: one record per trained net, the summary table and summary.json.

Design choices:
- `NetReport` is a plain dataclass of numbers a person (or `benchmarks/demo_quality.py`)
  reads back from DIR/summary.json; the table on screen is rendered from the same record,
  so the two cannot disagree.
- Exact match is the evaluator's micro mean over held-out problems (`frugal eval --tasks
  synthetic` reproduces it); the synthetic generator cycles through the families, so every
  family has the same number of problems and the micro mean equals the mean of the families.
- Each family's score is printed beside its majority-answer baseline (always giving the
  family's most common training answer), so a score is read against what guessing gets.
- summary.json is written atomically: a half-written summary must never pass for a
  finished run (it is what marks a demo directory as finished).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frugal_lm.files import write_text_atomically


@dataclass
class Sample:
    family: str
    prompt: str
    answer: str
    gold: str
    correct: bool


@dataclass
class NetReport:
    net: str
    label: str
    """The net and, with `--compare`, what it is compared on (same tokens or same time)."""
    run_dir: str
    parameters: int
    steps: int
    tokens_seen: int
    train_seconds: float
    seconds_per_step_measured: float | None
    exact_match: float
    family_exact_match: dict[str, float]
    heldout_problems: int
    depth_exact_match: dict[str, float] = field(default_factory=dict)
    """Depth families only: exact match per number of sequential steps, keyed `family@steps`."""
    samples: list[Sample] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_seen / max(self.train_seconds, 1e-9)


@dataclass
class DemoSummary:
    out: str
    minutes_budget: float
    wall_seconds: float
    stage_seconds: dict[str, float]
    reports: list[NetReport]
    export_dir: str | None
    export_note: str
    next_steps: list[str]
    family_baseline: dict[str, float] = field(default_factory=dict)
    """Held-out exact match of always answering a family's most common training answer."""

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for report, record in zip(self.reports, document["reports"]):
            record["tokens_per_second"] = report.tokens_per_second
        return document


def write_summary(summary: DemoSummary, path: Path) -> None:
    write_text_atomically(path, json.dumps(summary.to_json(), indent=1) + "\n")


def read_summary(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def render_table(summary: DemoSummary) -> str:
    """The final table: one column per trained net, then the majority-answer baseline."""
    reports = summary.reports
    families = list(reports[0].family_exact_match)
    baseline = summary.family_baseline
    rows: list[tuple[str, list[str]]] = [
        ("net", [r.label for r in reports] + ["baseline"]),
        ("parameters", [f"{r.parameters:,}" for r in reports] + [""]),
        ("training steps", [f"{r.steps:,}" for r in reports] + [""]),
        ("tokens seen", [f"{r.tokens_seen:,}" for r in reports] + [""]),
        ("training time", [_minutes(r.train_seconds) for r in reports] + [""]),
        ("tokens / s", [f"{r.tokens_per_second:,.0f}" for r in reports] + [""]),
    ]
    rows += [
        (
            f"exact match: {family}",
            [f"{r.family_exact_match.get(family, float('nan')):.1%}" for r in reports]
            + [f"{baseline[family]:.1%}" if family in baseline else "-"],
        )
        for family in families
    ]
    rows += [
        (
            f"  {key.replace('@', ', ')} steps",
            [f"{r.depth_exact_match.get(key, float('nan')):.1%}" for r in reports] + [""],
        )
        for key in reports[0].depth_exact_match
    ]
    mean_baseline = sum(baseline.values()) / len(baseline) if baseline else None
    rows.append(
        (
            f"exact match: MEAN ({reports[0].heldout_problems} held-out)",
            [f"{r.exact_match:.1%}" for r in reports] + ["-" if mean_baseline is None else f"{mean_baseline:.1%}"],
        )
    )
    label_width = max(len(label) for label, _ in rows)
    value_width = max(max(len(v) for v in values) for _, values in rows)
    lines = [f"  {label:<{label_width}}  " + "  ".join(f"{v:>{value_width}}" for v in values) for label, values in rows]
    rule = "  " + "-" * (label_width + 2 + (value_width + 2) * (len(reports) + 1))
    lines.insert(1, rule)
    lines.insert(len(lines) - 1, rule)
    lines.append("  (baseline: always giving the family's most common training answer)")
    return "\n".join(lines)


def render_samples(samples: list[Sample]) -> str:
    lines = []
    for sample in samples:
        mark = "yes" if sample.correct else "NO "
        lines.append(f"  [{mark}] {sample.prompt}\n        model: {sample.answer!r}   gold: {sample.gold!r}")
    return "\n".join(lines)


def render_footer(summary: DemoSummary) -> str:
    lines = [
        f"  total wall time {_minutes(summary.wall_seconds)} (budget {summary.minutes_budget:g} min); "
        f"run directory {summary.out}",
        f"  exported model: {summary.export_dir}" if summary.export_dir else f"  export: {summary.export_note}",
        "",
        "next:",
    ]
    lines += [f"  {step}" for step in summary.next_steps]
    return "\n".join(lines)
