"""The demo's stages as plain functions, each the same call a user's own pipeline makes.

synth -> tokenizer -> tokenize -> mix are exactly `frugal data synth|tokenizer|tokenize|mix`
(the README's "your own data" section runs them by hand with a user's JSONL instead of
synth), training is `frugal train --config demo`, scoring is `frugal eval --tasks synthetic`
(`frugal_lm.evals.synthetic.score_synthetic`), export is `frugal export hf`. Nothing here
re-implements a stage: the demo is only the order, the budget and the display.

Design choices:
- The data settings (`DataSettings`) live here rather than in the recipe because they are
  arguments of the data commands, not of `frugal train`; the README shows the same values.
- The tokenizer has the smallest vocabulary byte-level BPE allows (256 bytes + the special
  tokens), i.e. one token per character: every synthetic task is character-level (digit
  arithmetic, letter reversal and counting), and merged tokens such as "12" or "ab" would
  hide the very characters the model must reason about. Measured in benchmarks/RESULTS.md.
- The trainer's startup banner (environment and the full resolved config, which is also in
  RUN_DIR/config.yaml) goes to RUN_DIR/train.log instead of the screen, so the demo shows
  one progress display per stage; everything else the trainer prints passes through.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from pydantic import BaseModel

from frugal_lm.config import RunConfig
from frugal_lm.data.mix import longest_example, mix
from frugal_lm.data.records import read_rows
from frugal_lm.data.synth import DEFAULT_FAMILIES, FAMILIES, write_synthetic
from frugal_lm.data.tokenize import tokenize_sources
from frugal_lm.data.tokenizer import DEFAULT_CONDITION_TOKENS, DEFAULT_SPECIAL_TOKENS, train_tokenizer
from frugal_lm.evals.results import TaskResult, write_results
from frugal_lm.evals.synthetic import majority_baselines, read_heldout
from frugal_lm.train.trainer import TrainResult, claim_run_dir, train

# 256 byte tokens + the special and condition tokens: no merges, one token per character.
CHARACTER_VOCAB_SIZE = 256 + len(DEFAULT_SPECIAL_TOKENS) + len(DEFAULT_CONDITION_TOKENS)
EVAL_BATCH_SIZE = 64
CONTEXT_MULTIPLE = 64
# Twice the rows for the two families still short of 100% after the six-family demo's 10
# minutes with even rows (RESULTS.md, "Session 10"); the others stay at 100% with fewer.
DEFAULT_WEIGHTS = {"expression": 2, "sorting": 2}


@dataclass(frozen=True)
class DataSettings:
    """Arguments of the data commands for the demo (`frugal data synth|tokenizer|mix`)."""

    families: tuple[str, ...] = DEFAULT_FAMILIES
    difficulty: dict[str, BaseModel] = field(default_factory=dict)
    """Knobs of the depth families (`synth_depth.parse_difficulty`); the others have none."""
    weights: dict[str, int] | None = None
    """Train rows per cycle of the families (`synth.parse_weights`); 1 for those not named.
    None: `DEFAULT_WEIGHTS` for the families among the tasks; {}: even rows."""
    answer_format: str = "cot"
    """`cot`: worked solutions for every family but reversal; `direct`: answers alone."""
    train_rows: int = 200000
    heldout_rows: int = 600
    vocab_size: int = CHARACTER_VOCAB_SIZE
    context: int | None = None
    """Rows of the mix in tokens; None: the longest tokenized example, rounded up to a multiple
    of `CONTEXT_MULTIPLE` (512 for the six families, whose worked expressions run to ~500
    tokens; ~128 for the depth families). A fixed 192 once dropped the longest third of the
    expressions from training while the held-out set still asked them."""
    mix_epochs: int = 1
    """Epochs of shuffled order written by the mix; training cycles through them as often as
    its step budget needs (`steps=` trains by steps, not epochs)."""
    seed: int = 0

    @property
    def train_weights(self) -> dict[str, int]:
        if self.weights is not None:
            return self.weights
        return {family: weight for family, weight in DEFAULT_WEIGHTS.items() if family in self.families}


@dataclass(frozen=True)
class DataPaths:
    train_jsonl: Path
    heldout_jsonl: Path
    tokenizer: Path
    tokenized: Path
    mix: Path


def data_paths(out: Path) -> DataPaths:
    return DataPaths(
        out / "data" / "train.jsonl", out / "data" / "heldout.jsonl", out / "tokenizer", out / "tokenized", out / "mix"
    )


def synthesize(paths: DataPaths, settings: DataSettings) -> str:
    write_synthetic(
        paths.train_jsonl.parent,
        list(settings.families),
        settings.train_rows,
        settings.heldout_rows,
        settings.seed,
        settings.answer_format,
        settings.difficulty,
        settings.train_weights,
    )
    worked = [f for f in settings.families if settings.answer_format == "cot" and FAMILIES[f](Random(0)).steps]
    answers = f"worked solutions (cot) for {', '.join(worked)}" if worked else "answers alone (direct)"
    weights = ", ".join(f"{family} x{weight}" for family, weight in settings.train_weights.items())
    return (
        f"{settings.train_rows:,} train + {settings.heldout_rows:,} held-out problems, "
        f"{len(settings.families)} families ({', '.join(settings.families)}); {answers}"
        + (f"; train rows weighted {weights}" if weights else "")
    )


def _texts(path: Path) -> Iterator[str]:
    for row in read_rows(path):
        if row.record is not None:
            yield row.record.instruction
            yield row.record.response


def build_tokenizer(paths: DataPaths, settings: DataSettings) -> str:
    tokenizer = train_tokenizer(_texts(paths.train_jsonl), settings.vocab_size)
    tokenizer.save(paths.tokenizer)
    return f"{tokenizer.vocab_size:,}-token byte-level BPE -> {paths.tokenizer}"


def tokenize(paths: DataPaths) -> str:
    results = tokenize_sources(paths.tokenizer, paths.tokenized, [paths.train_jsonl])
    return ", ".join(f"{r.rows:,} rows, {r.tokens:,} tokens" for r in results)


def build_mix(paths: DataPaths, settings: DataSettings) -> str:
    context = settings.context or -(-longest_example(paths.tokenized) // CONTEXT_MULTIPLE) * CONTEXT_MULTIPLE
    result = mix(paths.tokenized, paths.mix, None, settings.mix_epochs, context, settings.seed)
    tokens = sum(result.tokens_per_epoch) // len(result.tokens_per_epoch)
    return f"context {context}, {tokens:,} tokens per epoch -> {paths.mix}"


class _BannerToLog:
    """A stderr stand-in: the trainer's banner goes to a log file, the rest to the screen."""

    HIDDEN_PREFIXES = ("# frugal-lm on ", "plan: ", "plan vs actual: ")

    def __init__(self, screen, log):
        self.screen, self.log = screen, log

    def write(self, text: str) -> int:
        target = self.log if text.startswith(self.HIDDEN_PREFIXES) else self.screen
        return target.write(text)

    def flush(self) -> None:
        self.screen.flush()
        self.log.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding: whatever tqdm asks the screen
        return getattr(self.screen, name)


def train_quietly(config: RunConfig) -> TrainResult:
    """`frugal_lm.train.trainer.train` with its banner in RUN_DIR/train.log."""
    assert config.out is not None
    claim_run_dir(Path(config.out))  # before train.log goes in: the folder is a run's
    with open(Path(config.out) / "train.log", "a") as log, contextlib.redirect_stderr(_BannerToLog(sys.stderr, log)):
        return train(config)


def score_heldout(run_dir: Path, heldout_jsonl: Path, out: Path) -> TaskResult:
    """Greedy exact match on the held-out split, exactly as `frugal eval --tasks synthetic`;
    writes results.json, results.md and the per-sample JSONL under `out`."""
    from frugal_lm.evals.synthetic import score_synthetic
    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.loading import load_model

    engine = Engine(load_model(run_dir), max_batch_size=EVAL_BATCH_SIZE)
    result = score_synthetic(engine, heldout_jsonl, progress=True)
    write_results([result], out)
    return result


def heldout_baselines(paths: DataPaths) -> dict[str, float]:
    """Per family, the held-out score of always giving the most common training answer."""
    return majority_baselines(read_heldout(paths.train_jsonl), read_heldout(paths.heldout_jsonl))


def family_scores(result: TaskResult) -> dict[str, float]:
    prefix = "exact_match/"
    return {
        name.removeprefix(prefix): metric.value for name, metric in result.metrics.items() if name.startswith(prefix)
    }
