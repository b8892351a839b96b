"""`frugal demo`: the whole pipeline on the embedded synthetic tasks, within a time budget.

    synth -> tokenizer -> tokenize -> mix -> train -> held-out eval -> samples -> HF export

Layout of the demo directory DIR (every stage's output is where the matching command
would put it, so a user can pick up from any stage by hand):

    DIR/data/{train,heldout}.jsonl   DIR/tokenizer/   DIR/tokenized/   DIR/mix/
    DIR/run/  (with --compare: run_hrm/, run_transformer/ and run_transformer_same_time/)
    DIR/eval/ (eval_<run>/ likewise)   DIR/hf/
    DIR/demo.json (what was asked; marks the directory as a demo)   DIR/summary.json

Design choices:
- Budget: the data stages run first and are timed; the rest of `minutes` minus a reserve
  for evaluation and export goes to training (`time_limit_s`): the trainer fits its step
  count to the clock as it runs, from a first guess measured by a probe (`budget.py`), so
  the cosine schedule ends on its last step and on time. `steps` pins the count instead
  (reproducible across machines; the tests use it).
- `--compare` trains HRM and a Transformer with the same parameter count (a Transformer
  with the HRM's `n_layers` blocks has exactly its parameters) on the same mixed set: once
  for the same steps, hence the same tokens in the same order, and once for the HRM's wall
  time. A claim that the HRM learns more per unit of compute must hold at equal time, not
  only at equal tokens.
- `--seed` draws the problems, the mix order and the initialisation, so anyone can check a
  score is not one lucky draw.
- Never overwrite silently: DIR must be empty or absent; a previous demo run there (marked by
  `.frugal_output.json`, or by demo.json before the marker existed) is replaced only with
  `overwrite=True`, and a directory that is not a demo run never is.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from frugal_lm.config import RunConfig, resolve_run_config
from frugal_lm.data.metadata import read_mix_metadata
from frugal_lm.demo.budget import measure_seconds_per_step, steps_for_budget
from frugal_lm.demo.stages import (
    DataPaths,
    DataSettings,
    build_mix,
    build_tokenizer,
    data_paths,
    family_scores,
    heldout_baselines,
    score_heldout,
    synthesize,
    tokenize,
    train_quietly,
)
from frugal_lm.demo.summary import (
    DemoSummary,
    NetReport,
    Sample,
    read_summary,
    render_footer,
    render_samples,
    render_table,
    write_summary,
)
from frugal_lm.errors import FrugalError
from frugal_lm.files import read_output_marker, record_output
from frugal_lm.model import count_parameters

RECIPE = "demo"
COMMAND = "frugal demo"
MARKER = "demo.json"
DEMO_ENTRIES = (
    "demo.json",
    "summary.json",
    "data",
    "tokenizer",
    "tokenized",
    "mix",
    "step_time_probe",
    "run",
    "eval",
    "run_hrm",
    "eval_hrm",
    "run_transformer",
    "eval_transformer",
    "run_transformer_same_time",
    "eval_transformer_same_time",
    "hf",
)
"""Everything a demo run may write in DIR (its marker lists them from the start)."""
MIN_RESERVE_SECONDS = 20.0
RESERVE_FRACTION = 0.06
"""Share of the budget kept for evaluation, samples and export after training."""


@dataclass(frozen=True)
class DemoOptions:
    out: Path = Path("runs/demo")
    minutes: float = 10.0
    net: str = "hrm"
    compare: bool = False
    steps: int | None = None
    """Train exactly this many steps instead of deriving them from `minutes`."""
    overwrite: bool = False
    data: DataSettings = field(default_factory=DataSettings)
    overrides: tuple[str, ...] = ()
    """Extra `key=value` recipe overrides (a smaller model for tests, another lr, ...)."""


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty DIR unless it is a demo run and `overwrite` says to replace it;
    then mark DIR as the demo's output (`files.OUTPUT_MARKER`, as every command that writes
    a directory does), so other commands name it when refusing it."""
    if out.exists() and not out.is_dir():
        raise FrugalError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not _is_demo_run(out):
            raise FrugalError(f"--out {out}: directory is not empty and holds no demo run; choose another --out")
        finished = read_summary(out / "summary.json")
        what = (
            f"a finished demo run (mean held-out exact match {finished['reports'][0]['exact_match']:.1%})"
            if finished
            else "an unfinished demo run"
        )
        if not overwrite:
            raise FrugalError(
                f"--out {out}: already holds {what}; pass --overwrite to replace it, or --out NEW_DIR for a second one"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record_output(out, COMMAND, DEMO_ENTRIES)


def _is_demo_run(out: Path) -> bool:
    """Marked by `frugal demo`, or (runs from before the marker) holding a demo.json and no other marker."""
    marker = read_output_marker(out)
    return marker["command"] == COMMAND if marker else (out / MARKER).is_file()


class StageDisplay:
    """Numbered stage headers and one result line each, with the stage's wall time."""

    def __init__(self, total: int):
        self.total, self.index = total, 0
        self.seconds: dict[str, float] = {}

    def run(self, name: str, action: Callable[[], str]) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {name} ...", flush=True)
        started = time.perf_counter()
        detail = action()
        self.seconds[name] = round(time.perf_counter() - started, 2)
        print(f"      {detail} ({self.seconds[name]:.1f} s)", flush=True)


def _run_config(
    options: DemoOptions, net: str, data: Path, run_dir: Path, steps: int | None, time_limit_s: float | None = None
) -> RunConfig:
    overrides = [f"data={data}", f"out={run_dir}", f"net={net}", f"seed={options.data.seed}", *options.overrides]
    config = resolve_run_config(RECIPE, overrides)
    if steps is not None:
        warmup = min(config.warmup_steps, max(1, steps // 10))
        config = config.model_copy(
            update={"steps": steps, "epochs": None, "warmup_steps": warmup, "time_limit_s": time_limit_s}
        )
    return config


def _train_and_score(
    config: RunConfig, heldout: Path, eval_dir: Path, display: StageDisplay, measured: float | None, label: str
) -> NetReport:
    net = config.model.net
    outcome = {}

    def train_stage() -> str:
        started = time.perf_counter()
        result = train_quietly(config)
        outcome["train"], outcome["seconds"] = result, time.perf_counter() - started
        return f"{result.steps:,} steps, {result.tokens:,} tokens, final loss {result.last_loss:.3f} -> {config.out}"

    def eval_stage() -> str:
        outcome["scores"] = result = score_heldout(Path(config.out), heldout, eval_dir)
        families = family_scores(result)
        return (
            f"mean exact match {result.value:.1%} on {len(result.samples)} held-out problems ("
            + ", ".join(f"{name} {value:.0%}" for name, value in families.items())
            + f") -> {eval_dir}"
        )

    display.run(f"train {label}", train_stage)
    display.run(f"held-out eval {label}", eval_stage)
    scores = outcome["scores"]
    first_per_family: dict[str, Sample] = {}
    for record in scores.samples:
        family = record.extra.get("family", "?")
        if family not in first_per_family:
            first_per_family[family] = Sample(
                family, record.prompt, record.extracted, record.gold, bool(record.correct)
            )
    train_result = outcome["train"]
    return NetReport(
        net=net,
        label=label,
        run_dir=str(config.out),
        parameters=count_parameters(config.model.model_copy(update={"vocab_size": _mixed_vocab_size(config.data)})),
        steps=train_result.steps,
        tokens_seen=train_result.tokens,
        train_seconds=round(outcome["seconds"], 2),
        seconds_per_step_measured=measured,
        exact_match=scores.value,
        family_exact_match=family_scores(scores),
        heldout_problems=len(scores.samples),
        samples=list(first_per_family.values()),
    )


def _mixed_vocab_size(mix_dir: Path | None) -> int:
    return read_mix_metadata(Path(mix_dir)).vocab_size


def _export(run_dir: Path, out: Path, net: str) -> tuple[str | None, str]:
    from frugal_lm.interop import export_hf

    if net != "hrm":
        return None, f"skipped: the transformers `hrm_text` format holds HRM models, not net={net}"
    try:
        result = export_hf(run_dir, out)
    except FrugalError as error:
        return None, f"skipped: {error}"
    return str(result.out), f"{result.weights_source.name} -> {result.out}"


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


def _train_arms(options: DemoOptions, paths: DataPaths, started: float, display: StageDisplay) -> list[NetReport]:
    """Train and score each run. One net: for the budget's training seconds (or `--steps`).
    `--compare`: the HRM, then the Transformer for the HRM's steps (same tokens) and for the
    HRM's training time (same time); the budget is shared so that all runs end within
    `minutes`."""
    out, scratch = options.out, options.out / "step_time_probe"

    def probe(net: str) -> float:
        return measure_seconds_per_step(_run_config(options, net, paths.mix, scratch, 1), scratch)

    def train(arm: Arm) -> NetReport:
        config = _run_config(options, arm.net, paths.mix, out / arm.run_dir, arm.steps, arm.time_limit_s)
        return _train_and_score(
            config, paths.heldout_jsonl, out / arm.eval_dir, display, arm.seconds_per_step, arm.label
        )

    def first(net: str, label: str, run_dir: str, eval_dir: str, shares: list[float], measured: float) -> Arm:
        if options.steps is not None:
            return Arm(net, label, options.steps, None, run_dir, eval_dir, measured)
        seconds = _training_seconds(options, started, shares)
        guess = steps_for_budget(measured, seconds).steps
        print(
            f"      budget: {seconds:.0f} s of training, about {guess:,} steps at {measured:.2f} s/step "
            f"(measured; the schedule is fitted to the clock as it runs)",
            flush=True,
        )
        return Arm(net, label, guess, seconds, run_dir, eval_dir, measured)

    if not options.compare:
        display.total = 7
        measured = probe(options.net) if options.steps is None else None
        return [train(first(options.net, options.net, "run", "eval", [1.0], measured))]
    hrm_step, transformer_step = probe("hrm"), probe("transformer")
    ratio = transformer_step / hrm_step
    display.total = 10
    hrm = train(first("hrm", "hrm", "run_hrm", "eval_hrm", [1.0, ratio, 1.0], hrm_step))
    same_tokens = train(
        Arm(
            "transformer",
            "transformer, same tokens",
            hrm.steps,
            None,
            "run_transformer",
            "eval_transformer",
            transformer_step,
        )
    )
    # A probe cannot resolve step times a few percent apart (two probed within 5% ran 9% apart),
    # so the same-time run is always trained, for the HRM's measured loop time.
    same_time = train(
        Arm(
            "transformer",
            "transformer, same time",
            max(1, round(hrm.steps / ratio)),
            _loop_seconds(out / "run_hrm"),
            "run_transformer_same_time",
            "eval_transformer_same_time",
            transformer_step,
        )
    )
    return [hrm, same_tokens, same_time]


def _training_seconds(options: DemoOptions, started: float, shares: list[float]) -> float:
    """Training seconds of the first run such that runs taking `shares` times as long, plus a
    reserve for evaluation after each, end within the budget."""
    reserve = max(MIN_RESERVE_SECONDS, RESERVE_FRACTION * options.minutes * 60) * len(shares)
    return max(1.0, (options.minutes * 60 - (time.perf_counter() - started) - reserve) / sum(shares))


def _loop_seconds(run_dir: Path) -> float:
    """How long a finished run's training loop took (its last metrics line)."""
    last = (run_dir / "metrics.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["elapsed_s"])


def run_demo(options: DemoOptions) -> DemoSummary:
    if options.minutes <= 0:
        raise FrugalError(f"--minutes must be > 0, got {options.minutes:g}")
    if options.steps is not None and options.steps < 1:
        raise FrugalError(f"--steps must be >= 1, got {options.steps}")
    nets = ["hrm", "transformer"] if options.compare else [options.net]
    _run_config(options, nets[0], Path("mix"), Path("run"), None)  # reject bad overrides before any work
    started = time.perf_counter()
    out = options.out
    prepare_out_dir(out, options.overwrite)
    (out / MARKER).write_text(
        json.dumps(
            {
                **asdict(options),
                "out": str(out),
                "data": asdict(options.data),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=1,
            default=str,
        )
    )
    paths = data_paths(out)
    display = StageDisplay(total=7)
    display.run("synthetic tasks", lambda: synthesize(paths, options.data))
    display.run("tokenizer", lambda: build_tokenizer(paths, options.data))
    display.run("tokenize", lambda: tokenize(paths))
    display.run("mix", lambda: build_mix(paths, options.data))

    reports = _train_arms(options, paths, started, display)
    run_dirs = {report.net: Path(report.run_dir) for report in reversed(reports)}

    export_dir, export_note = None, "not run with --compare"
    if not options.compare:
        exported = {}

        def export_stage() -> str:
            exported["dir"], exported["note"] = _export(run_dirs[nets[0]], out / "hf", nets[0])
            return exported["note"]

        display.run("export to transformers (hrm_text)", export_stage)
        export_dir, export_note = exported["dir"], exported["note"]

    model_dir = run_dirs[nets[0]]
    next_steps = [
        f"frugal generate --model {model_dir} --prompt 'What is 12 + 30?'",
        f"frugal chat --model {model_dir}",
        f"frugal eval --model {model_dir} --tasks synthetic --data-dir {paths.heldout_jsonl.parent} "
        f"--out {out / 'eval-again'}   (reproduces the score above)",
        f"frugal report {model_dir}",
        f"frugal demo --minutes {options.minutes * 3:g} --out {out}-long   (more steps, higher scores)",
        'your own data: the README\'s "Your own data" section runs these stages by hand',
    ]
    if export_dir:
        next_steps.insert(
            3,
            f'python -c "import transformers as t; m = t.AutoModelForCausalLM.from_pretrained('
            f"'{export_dir}')\"   (needs: pip install 'frugal-lm[hf]')",
        )
    summary = DemoSummary(
        out=str(out),
        minutes_budget=options.minutes,
        wall_seconds=round(time.perf_counter() - started, 2),
        stage_seconds=display.seconds,
        reports=reports,
        export_dir=export_dir,
        export_note=export_note,
        next_steps=next_steps,
        family_baseline=heldout_baselines(paths),
    )
    write_summary(summary, out / "summary.json")
    print("\nsample generations (held-out problems, greedy):")
    print(render_samples(reports[0].samples))
    print("\nsummary:")
    print(render_table(summary))
    print(render_footer(summary))
    return summary
