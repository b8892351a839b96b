"""The demo's training runs ("arms"): which nets, for how long, each trained and scored.

One net: one run for the budget's training seconds (or `--steps`). `--compare` trains, on the
same mixed set:

    hrm                                the recipe's HRM, for T seconds
    transformer, same tokens           its parameters (k blocks, one pass), the HRM's steps
    transformer, same time             the same Transformer, for T seconds
    transformer xN blocks, same time   N = the blocks the HRM applies per forward pass (its
                                       forward FLOPs, N/k times the parameters), T seconds;
                                       only when the HRM recurses (N > k)

Design choices:
- A claim that recurrence learns more per unit of compute must hold at equal time, not only
  at equal tokens: the same-tokens run says what recursion does per example, the same-time
  runs what it does per second, and the deep run whether the same FLOPs spent on more
  parameters would do better still (the literature's comparison: looped Transformers, Ouro).
- Equal time is the trainer's own clock: every timed run gets `time_limit_s` and fits its
  step count to it as it runs (`budget.py`), so the cosine ends on time whatever each net's
  step costs. The same-time runs get the HRM's measured loop time, not the budget's figure,
  because the HRM's run may end a few seconds off its target.
- The budget is shared so that every run, and its evaluation, ends within `--minutes`: the
  HRM's seconds T are chosen such that runs of `shares` times T fit (the same-tokens run takes
  about T times the Transformer's step time over the HRM's, measured by short probes).
- Held-out scores per difficulty (`depth_exact_match`) are read back from each problem's
  instruction (`synth_depth.sequential_steps`): accuracy against the number of sequential
  steps is what the depth families are for.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from frugal_lm.config import RunConfig, resolve_run_config
from frugal_lm.data.metadata import read_mix_metadata
from frugal_lm.data.synth_depth import sequential_steps
from frugal_lm.demo.budget import measure_seconds_per_step, steps_for_budget
from frugal_lm.demo.stages import DataPaths, family_scores, score_heldout, train_quietly
from frugal_lm.demo.summary import NetReport, Sample
from frugal_lm.evals.results import TaskResult
from frugal_lm.model import count_parameters

MIN_RESERVE_SECONDS = 20.0
RESERVE_FRACTION = 0.06
"""Share of the budget kept for evaluation, samples and export after each run."""


@dataclass(frozen=True)
class Arm:
    """One training run of the demo: which net, for how long, under what label."""

    net: str
    label: str
    steps: int
    """With a time limit, only the first guess: the trainer fits the count to the clock."""
    time_limit_s: float | None
    run_dir: str
    eval_dir: str
    seconds_per_step: float | None
    overrides: tuple[str, ...] = ()
    """Recipe overrides of this run alone (the deep Transformer's block count)."""


@dataclass(frozen=True)
class ArmsPlan:
    """What the arms share: the demo's recipe, overrides, seed and budget."""

    recipe: str
    overrides: tuple[str, ...]
    seed: int
    minutes: float
    steps: int | None
    started: float
    """`time.perf_counter()` when the demo began: the budget counts from there."""

    def config(self, arm_net: str, data: Path, run_dir: Path, steps: int | None, extra=(), time_limit_s=None):
        overrides = [f"data={data}", f"out={run_dir}", f"net={arm_net}", f"seed={self.seed}", *self.overrides, *extra]
        config = resolve_run_config(self.recipe, overrides)
        if steps is None:
            return config
        warmup = min(config.warmup_steps, max(1, steps // 10))
        return config.model_copy(
            update={"steps": steps, "epochs": None, "warmup_steps": warmup, "time_limit_s": time_limit_s}
        )


def train_arms(plan: ArmsPlan, net: str, compare: bool, paths: DataPaths, out: Path, display) -> list[NetReport]:
    """Train and score each run; see the module docstring for which."""
    scratch = out / "step_time_probe"

    def probe(arm_net: str, extra: tuple[str, ...] = ()) -> float:
        return measure_seconds_per_step(plan.config(arm_net, paths.mix, scratch, 1, extra), scratch)

    def train(arm: Arm) -> NetReport:
        config = plan.config(arm.net, paths.mix, out / arm.run_dir, arm.steps, arm.overrides, arm.time_limit_s)
        return train_and_score(config, paths, out / arm.eval_dir, display, arm)

    def first(arm_net: str, label: str, run_dir: str, eval_dir: str, shares: list[float], measured: float) -> Arm:
        if plan.steps is not None:
            return Arm(arm_net, label, plan.steps, None, run_dir, eval_dir, measured)
        seconds = training_seconds(plan, shares)
        guess = steps_for_budget(measured, seconds).steps
        print(
            f"      budget: {seconds:.0f} s of training, about {guess:,} steps at {measured:.2f} s/step "
            f"(measured; the schedule is fitted to the clock as it runs)",
            flush=True,
        )
        return Arm(arm_net, label, guess, seconds, run_dir, eval_dir, measured)

    if not compare:
        display.total = 7
        measured = probe(net) if plan.steps is None else None
        return [train(first(net, net, "run", "eval", [1.0], measured))]
    hrm_model = plan.config("hrm", paths.mix, scratch, None).model
    deep_blocks = hrm_model.layers_per_stack * hrm_model.stack_passes  # the blocks one forward pass applies
    deep = (f"model.n_layers={deep_blocks}",)
    has_deep = deep_blocks > hrm_model.n_layers
    hrm_step, transformer_step = probe("hrm"), probe("transformer")
    deep_step = probe("transformer", deep) if has_deep else None
    ratio = transformer_step / hrm_step
    display.total = 12 if has_deep else 10
    hrm = train(first("hrm", "hrm", "run_hrm", "eval_hrm", [1.0, ratio, 1.0] + [1.0] * has_deep, hrm_step))
    same_tokens = Arm(
        "transformer",
        "transformer, same tokens",
        hrm.steps,
        None,
        "run_transformer",
        "eval_transformer",
        transformer_step,
    )
    # A probe cannot resolve step times a few percent apart (two probed within 5% ran 9% apart),
    # so the same-time runs are always trained, for the HRM's measured loop time.
    hrm_seconds = _loop_seconds(out / "run_hrm")
    same_time = Arm(
        "transformer",
        "transformer, same time",
        max(1, round(hrm.steps / ratio)),
        hrm_seconds,
        "run_transformer_same_time",
        "eval_transformer_same_time",
        transformer_step,
    )
    reports = [hrm, train(same_tokens), train(same_time)]
    if has_deep:
        deep_arm = Arm(
            "transformer",
            f"transformer x{deep_blocks} blocks, same time",
            max(1, round(hrm.steps * hrm_step / deep_step)),
            hrm_seconds,
            "run_transformer_deep",
            "eval_transformer_deep",
            deep_step,
            deep,
        )
        reports.append(train(deep_arm))
    return reports


def training_seconds(plan: ArmsPlan, shares: list[float]) -> float:
    """Training seconds of the first run such that runs taking `shares` times as long, plus a
    reserve for evaluation after each, end within the budget."""
    reserve = max(MIN_RESERVE_SECONDS, RESERVE_FRACTION * plan.minutes * 60) * len(shares)
    return max(1.0, (plan.minutes * 60 - (time.perf_counter() - plan.started) - reserve) / sum(shares))


def _loop_seconds(run_dir: Path) -> float:
    """How long a finished run's training loop took (its last metrics line)."""
    last = (run_dir / "metrics.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["elapsed_s"])


def train_and_score(config: RunConfig, paths: DataPaths, eval_dir: Path, display, arm: Arm) -> NetReport:
    outcome = {}

    def train_stage() -> str:
        started = time.perf_counter()
        result = train_quietly(config)
        outcome["train"], outcome["seconds"] = result, time.perf_counter() - started
        return f"{result.steps:,} steps, {result.tokens:,} tokens, final loss {result.last_loss:.3f} -> {config.out}"

    def eval_stage() -> str:
        outcome["scores"] = result = score_heldout(Path(config.out), paths.heldout_jsonl, eval_dir)
        families = family_scores(result)
        return (
            f"mean exact match {result.value:.1%} on {len(result.samples)} held-out problems ("
            + ", ".join(f"{name} {value:.0%}" for name, value in families.items())
            + f") -> {eval_dir}"
        )

    display.run(f"train {arm.label}", train_stage)
    display.run(f"held-out eval {arm.label}", eval_stage)
    scores, train_result = outcome["scores"], outcome["train"]
    vocab_size = read_mix_metadata(Path(config.data)).vocab_size
    return NetReport(
        net=config.model.net,
        label=arm.label,
        run_dir=str(config.out),
        parameters=count_parameters(config.model.model_copy(update={"vocab_size": vocab_size})),
        steps=train_result.steps,
        tokens_seen=train_result.tokens,
        train_seconds=round(outcome["seconds"], 2),
        seconds_per_step_measured=arm.seconds_per_step,
        exact_match=scores.value,
        family_exact_match=family_scores(scores),
        depth_exact_match=depth_scores(scores),
        heldout_problems=len(scores.samples),
        samples=_first_per_family(scores),
    )


def depth_scores(result: TaskResult) -> dict[str, float]:
    """Exact match per depth family and number of sequential steps, keyed `family@steps`."""
    hits: dict[tuple[str, int], list[bool]] = defaultdict(list)
    for record in result.samples:
        family = record.extra.get("family", "?")
        steps = sequential_steps(family, record.prompt)
        if steps is not None:
            hits[family, steps].append(bool(record.correct))
    return {f"{family}@{steps}": sum(v) / len(v) for (family, steps), v in sorted(hits.items())}


def _first_per_family(scores: TaskResult) -> list[Sample]:
    first: dict[str, Sample] = {}
    for record in scores.samples:
        family = record.extra.get("family", "?")
        if family not in first:
            first[family] = Sample(family, record.prompt, record.extracted, record.gold, bool(record.correct))
    return list(first.values())
