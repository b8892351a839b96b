"""`frugal demo`: the whole pipeline on the embedded synthetic tasks, within a time budget.

    synth -> tokenizer -> tokenize -> mix -> train -> held-out eval -> samples -> HF export

Layout of the demo directory DIR (every stage's output is where the matching command
would put it, so a user can pick up from any stage by hand):

    DIR/data/{train,heldout}.jsonl   DIR/tokenizer/   DIR/tokenized/   DIR/mix/
    DIR/run/  (with --compare: run_hrm/, run_transformer/, run_transformer_same_time/ and,
               when the HRM recurses, run_transformer_deep/)
    DIR/eval/ (eval_<run>/ likewise)   DIR/hf/
    DIR/demo.json (what was asked; marks the directory as a demo)   DIR/summary.json

Design choices:
- Budget: the data stages run first and are timed; the rest of `minutes` minus a reserve
  for evaluation and export goes to training (`time_limit_s`): the trainer fits its step
  count to the clock as it runs, from a first guess measured by a probe (`budget.py`), so
  the cosine schedule ends on its last step and on time. `steps` pins the count instead
  (reproducible across machines; the tests use it).
- Which runs train, for how long, and how they are scored: `arms.py` (`--compare` trains the
  HRM and Transformers of its parameters and of its forward depth, at equal tokens and at
  equal time).
- The recipe follows the tasks: `demo` for the six families (worked solutions, an HRM of two
  passes), `demo-depth` when every task is a depth family (direct answers, an HRM that
  recurses); `frugal train --config demo-depth` is the same recipe by hand.
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

from frugal_lm.data.synth_depth import KNOBS
from frugal_lm.demo.arms import ArmsPlan, train_arms
from frugal_lm.demo.stages import (
    DataSettings,
    build_mix,
    build_tokenizer,
    data_paths,
    heldout_baselines,
    synthesize,
    tokenize,
)
from frugal_lm.demo.summary import (
    DemoSummary,
    read_summary,
    render_footer,
    render_samples,
    render_table,
    write_summary,
)
from frugal_lm.errors import FrugalError
from frugal_lm.files import read_output_marker, record_output

RECIPE = "demo"
DEPTH_RECIPE = "demo-depth"
"""The recipe when every task is a depth family (`synth_depth`): an HRM that recurses."""
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
    "run_transformer_deep",
    "eval_transformer_deep",
    "hf",
)
"""Everything a demo run may write in DIR (its marker lists them from the start)."""


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

    @property
    def recipe(self) -> str:
        return DEPTH_RECIPE if all(family in KNOBS for family in self.data.families) else RECIPE


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


def _export(run_dir: Path, out: Path, net: str) -> tuple[str | None, str]:
    from frugal_lm.interop import export_hf

    if net != "hrm":
        return None, f"skipped: the transformers `hrm_text` format holds HRM models, not net={net}"
    try:
        result = export_hf(run_dir, out)
    except FrugalError as error:
        return None, f"skipped: {error}"
    return str(result.out), f"{result.weights_source.name} -> {result.out}"


def _knob_values(data: DataSettings) -> dict[str, dict]:
    return {family: knobs.model_dump() for family, knobs in data.difficulty.items()}


def run_demo(options: DemoOptions) -> DemoSummary:
    if options.minutes <= 0:
        raise FrugalError(f"--minutes must be > 0, got {options.minutes:g}")
    if options.steps is not None and options.steps < 1:
        raise FrugalError(f"--steps must be >= 1, got {options.steps}")
    nets = ["hrm", "transformer"] if options.compare else [options.net]
    started = time.perf_counter()
    plan = ArmsPlan(options.recipe, options.overrides, options.data.seed, options.minutes, options.steps, started)
    plan.config(nets[0], Path("mix"), Path("run"), None)  # reject bad overrides before any work
    out = options.out
    prepare_out_dir(out, options.overwrite)
    (out / MARKER).write_text(
        json.dumps(
            {
                **asdict(options),
                "out": str(out),
                "data": {
                    **asdict(options.data),
                    "difficulty": _knob_values(options.data),
                    "weights": options.data.train_weights,
                },
                "recipe": options.recipe,
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

    print(f"      recipe: {options.recipe} (frugal train --config {options.recipe})", flush=True)
    reports = train_arms(plan, options.net, options.compare, paths, out, display)
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
