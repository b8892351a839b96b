"""`frugal eval` (benchmarks) and `frugal data decontaminate` (registered into the data group)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frugal_lm.cli.infer import add_device_argument, add_weights_argument
from frugal_lm.errors import FrugalError

TASK_HELP = "comma-separated: gsm8k, math, drop, mmlu, arc_challenge, arc_easy, hellaswag, winogrande, boolq, synthetic"
DATA_DIR_HELP = (
    "local directory with one folder per data set, files as published: gsm8k/, math/, drop/, mmlu/, "
    "arc/, hellaswag/, winogrande/, boolq/ (see `frugal_lm.evals.datasets`), and heldout.jsonl "
    "from `frugal data synth` for the synthetic task"
)


def _eval_command(args: argparse.Namespace) -> int:
    from frugal_lm.evals.results import markdown_table, write_results
    from frugal_lm.evals.runner import EvalRunner, EvalSettings, parse_conditions, parse_tasks
    from frugal_lm.infer.loading import load_model
    from frugal_lm.runtime import resolve_device

    tasks = parse_tasks(args.tasks)
    for name, value in (
        ("--limit", args.limit),
        ("--batch-size", args.batch_size),
        ("--max-new-tokens", args.max_new_tokens),
    ):
        if value is not None and value < 1:
            raise FrugalError(f"{name} must be >= 1, got {value}")
    if args.shots < 0:
        raise FrugalError(f"--shots must be >= 0, got {args.shots}")
    if not args.data_dir.is_dir():
        raise FrugalError(f"--data-dir {args.data_dir}: no such directory")
    settings = EvalSettings(
        tasks,
        args.data_dir,
        args.limit,
        args.shots,
        parse_conditions(args.condition, tasks),
        args.batch_size,
        args.max_new_tokens,
    )
    loaded = load_model(args.model, resolve_device(args.device), prefer_ema=not args.no_ema)
    results = EvalRunner(loaded, settings, progress=True).run()
    replaced = (args.out / "results.json").exists()
    paths = write_results(
        results,
        args.out,
        {
            "model": str(args.model),
            "weights": str(loaded.weights_path),
            "tasks": tasks,
            "data_dir": str(args.data_dir),
            "limit": args.limit,
            "shots": args.shots,
            "conditions": {k: list(v) for k, v in settings.conditions.items()},
            "max_new_tokens": args.max_new_tokens,
        },
    )
    print(markdown_table(results), end="")
    print(
        f"{'replaced' if replaced else 'wrote'} {paths['json']}, {paths['markdown']} and per-sample "
        f"samples_<task>.jsonl in {args.out}",
        file=sys.stderr,
    )
    return 0


def _decontaminate_command(args: argparse.Namespace) -> int:
    from frugal_lm.evals.decontaminate import build_index, check_source, report_markdown

    for source in args.sources:
        if not source.is_file():
            raise FrugalError(f"{source}: no such file")
    index, missing = build_index(args.benchmarks, args.ngram)
    reports = [check_source(source, index, args.write_clean, progress=True) for source in args.sources]
    print(report_markdown(reports, index, missing), end="")
    print(f"wrote {', '.join(str(r.source) + '.contamination.json' for r in reports)}", file=sys.stderr)
    return 0


def register_decontaminate(data: argparse._SubParsersAction) -> None:
    """`frugal data decontaminate`, added to the `data` group by `cli/data.py`."""
    parser = data.add_parser(
        "decontaminate",
        help="find training rows that overlap benchmark test sets (n-gram overlap)",
        description="Flag every training row (instruction + response) sharing an N-word n-gram with a benchmark "
        "test item; items shorter than N words must appear whole. Prints a report per source and "
        "benchmark and writes SOURCE.contamination.json beside each source (shown by `frugal data "
        "mix`); --write-clean writes copies without the flagged rows.",
    )
    parser.add_argument(
        "--benchmarks",
        type=Path,
        required=True,
        help="benchmark directory in the `frugal eval --data-dir` layout (gsm8k/, mmlu/, arc/, ..., "
        "and heldout.jsonl for the synthetic split)",
    )
    parser.add_argument("--ngram", type=int, default=13, help="n-gram length in words (default 13)")
    parser.add_argument(
        "--write-clean",
        type=Path,
        metavar="DIR",
        help="write DIR/<source name> with the rows that overlap no benchmark",
    )
    parser.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="training JSONL/Parquet files")
    parser.set_defaults(handler=_decontaminate_command)


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="score a model on benchmarks (GSM8K, MATH, DROP, MMLU, ARC, HellaSwag, ...)",
        description="Evaluate a model on local copies of public benchmarks (no network). Multiple-choice tasks "
        "score each option as the response under the PrefixLM mask (acc, acc_norm); GSM8K, MATH and "
        "DROP generate greedily and extract the answer. Writes OUT/results.json, OUT/results.md and "
        "OUT/samples_<task>.jsonl (prompt, output, extracted answer, gold, correct).",
    )
    evaluate.add_argument(
        "--model", type=Path, required=True, help="training run, checkpoint, exported model or `frugal demo` dir"
    )
    evaluate.add_argument("--tasks", required=True, help=TASK_HELP)
    evaluate.add_argument("--data-dir", type=Path, required=True, help=DATA_DIR_HELP)
    evaluate.add_argument("--limit", type=int, help="score only the first N items of each task")
    evaluate.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="[TASK=]TAGS",
        help="condition tags, comma-separated, for every task (`cot`) or one task "
        "(`gsm8k=cot`); repeatable. Default: direct (synthetic: each record's own tags)",
    )
    evaluate.add_argument(
        "--shots",
        type=int,
        default=0,
        help="few-shot examples from the train/dev split in front of each question (default 0)",
    )
    evaluate.add_argument("--out", type=Path, default=Path("eval-results"), help="output dir (default eval-results)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default 8)")
    evaluate.add_argument(
        "--max-new-tokens",
        type=int,
        help="generation budget (default per task: gsm8k 256, math 512, drop 64, synthetic 64)",
    )
    add_device_argument(evaluate)
    add_weights_argument(evaluate)
    evaluate.set_defaults(handler=_eval_command)
