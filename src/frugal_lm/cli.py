"""The `frugal` command: parse, call the package, print. No logic of its own.

Every user mistake surfaces as a `FrugalError` and is printed as one line on stderr with a
non-zero exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from frugal_lm import __version__
from frugal_lm.errors import FrugalError


def _config_command(args: argparse.Namespace) -> int:
    from frugal_lm.config import resolve_run_config
    from frugal_lm.model import count_parameters

    config = resolve_run_config(args.config, args.overrides)
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# parameters: {count_parameters(config.model):,}")
    return 0


def _train_command(args: argparse.Namespace) -> int:
    from frugal_lm.config import resolve_run_config
    from frugal_lm.train.trainer import train

    result = train(resolve_run_config(args.config, args.overrides))
    print(f"trained {result.steps} steps on {result.tokens:,} tokens; last loss {result.last_loss:.4f}; "
          f"checkpoint {result.checkpoint}")
    return 0


def _report_command(args: argparse.Namespace) -> int:
    from frugal_lm.train.report import write_report

    report = write_report(args.run_dir)
    print(report.summary_path.read_text())
    print(f"plots: {', '.join(str(p) for p in report.plot_paths)}")
    return 0


def _data_synth_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.synth import parse_families, write_synthetic

    if args.rows < 1 or args.heldout_rows < 1:
        raise FrugalError("--rows and --heldout-rows must be >= 1")
    paths = write_synthetic(args.out, parse_families(args.tasks), args.rows, args.heldout_rows, args.seed)
    print(f"wrote {args.rows:,} train rows to {paths['train']} and {args.heldout_rows:,} held-out rows to "
          f"{paths['heldout']}")
    return 0


def _data_validate_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.records import validate_files

    good, problems = validate_files(args.files)
    for line in problems:
        print(line)
    print(f"{good:,} good rows, {len(problems):,} bad rows", file=sys.stderr)
    return 1 if problems else 0


def _data_tokenizer_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.records import read_rows
    from frugal_lm.data.tokenizer import train_tokenizer

    skipped = 0

    def texts():
        nonlocal skipped
        for source in args.sources:
            for result in read_rows(source):
                if result.record is None:
                    skipped += 1
                    continue
                yield result.record.instruction
                yield result.record.response

    tokenizer = train_tokenizer(texts(), args.vocab_size)
    tokenizer.save(args.out)
    print(f"trained a {tokenizer.vocab_size:,}-token byte-level BPE into {args.out}"
          + (f"; {skipped:,} bad rows ignored (see `frugal data validate`)" if skipped else ""))
    return 0


def _data_tokenize_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.tokenize import tokenize_sources

    for result in tokenize_sources(args.tokenizer, args.out, args.sources, args.on_error):
        state = "unchanged" if result.skipped_unchanged else "tokenized"
        print(f"{result.source}: {state}, {result.rows:,} rows, {result.tokens:,} tokens, "
              f"{result.rejected:,} rejected, {result.duplicates:,} duplicates -> {result.output}")
    return 0


def _data_mix_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.mix import mix

    result = mix(args.tokenized, args.out, args.mix, args.epochs, args.context, args.seed)
    print((args.out / "report.md").read_text())
    print(f"wrote {result.epochs} epoch(s) to {args.out}")
    return 0


def _demo_command(args: argparse.Namespace) -> int:
    print("frugal demo: not yet available in this version (the end-to-end demo lands with the "
          "data, training and inference stages). Try `frugal config preset=tiny` meanwhile.")
    return 0


def _plan_command(args: argparse.Namespace) -> int:
    from frugal_lm.plan.report import run_plan

    return run_plan(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frugal", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"frugal-lm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="train a small reasoning model on synthetic tasks (CPU ok)",
                               description="Run the whole pipeline on the embedded synthetic tasks.")
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    demo.add_argument("--minutes", type=float, default=10.0, help="time budget in minutes (default 10)")
    demo.set_defaults(handler=_demo_command)

    train = commands.add_parser(
        "train", help="train a model on a mixed training set (also under torchrun)",
        description="Train with the HRM-Text recipe. Keys: data=DIR out=RUN_DIR preset=tiny|B|L|XL|XXL "
                    "net=hrm|transformer|universal epochs=E | steps=N batch_tokens=T lr= seed= "
                    "checkpoint_every=N resume=true init_from=DIR device=cpu|cuda, and nested model.* keys. "
                    "Run `frugal config ...` to see every key with its resolved value.")
    train.add_argument("--config", help="recipe YAML file, or a packaged recipe: pretrain, sft")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. data=mix out=runs/a steps=100")
    train.set_defaults(handler=_train_command)

    data = commands.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_command", metavar="STEP", required=True)
    synth = data.add_parser("synth", help="generate the built-in synthetic reasoning tasks",
                            description="Write OUT/train.jsonl and OUT/heldout.jsonl; the held-out split never "
                                        "shares an instruction with any train split, whatever the seed.")
    synth.add_argument("--out", type=Path, required=True)
    synth.add_argument("--tasks", help="comma-separated families (default all): addition, multiplication, "
                                       "sorting, reversal, expression, counting")
    synth.add_argument("--rows", type=int, default=10000, help="train rows (default 10000)")
    synth.add_argument("--heldout-rows", type=int, default=600, help="held-out rows (default 600)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_data_synth_command)

    validate = data.add_parser("validate", help="check JSONL/Parquet records; exit 1 if any row is bad",
                               description="Print FILE:LINE: reason for every bad row (not JSON, missing or empty "
                                           "field, non-string, unknown condition tag, over the length cap).")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(handler=_data_validate_command)

    tokenizer = data.add_parser("tokenizer", help="train a byte-level BPE tokenizer with the special tokens",
                                description="Train a byte-level BPE (HuggingFace tokenizers) on the records of "
                                            "SOURCE files; writes OUT/tokenizer.json and tokenizer_info.json.")
    tokenizer.add_argument("--vocab-size", type=int, required=True)
    tokenizer.add_argument("--out", type=Path, required=True)
    tokenizer.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    tokenizer.set_defaults(handler=_data_tokenizer_command)

    tokenize = data.add_parser("tokenize", help="tokenize record files into per-source token arrays",
                               description="Incremental: unchanged sources are skipped, outputs of sources no "
                                           "longer given are removed. Exact duplicate rows are dropped and counted.")
    tokenize.add_argument("--tokenizer", type=Path, required=True, help="directory with tokenizer.json")
    tokenize.add_argument("--out", type=Path, required=True)
    tokenize.add_argument("--on-error", choices=["fail", "skip"], default="fail",
                          help="fail: stop at the first bad row, write nothing; skip: quarantine bad rows in "
                               "rejected.jsonl with their reason")
    tokenize.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    tokenize.set_defaults(handler=_data_tokenize_command)

    mix = data.add_parser("mix", help="combine tokenized sources into a training set with per-epoch order",
                          description="Rules (YAML list, first prefix match on the source file name wins): "
                                      "prefix, max_per_file, repeat, long_context: truncate|drop, min_response_len.")
    mix.add_argument("--tokenized", type=Path, required=True)
    mix.add_argument("--out", type=Path, required=True)
    mix.add_argument("--mix", type=Path, help="rules YAML")
    mix.add_argument("--epochs", type=int, default=1)
    mix.add_argument("--context", type=int, default=2048, help="max tokens per example (default 2048)")
    mix.add_argument("--seed", type=int, default=0)
    mix.set_defaults(handler=_data_mix_command)

    report = commands.add_parser("report", help="plots and a summary of a training run",
                                 description="Write RUN_DIR/report/{loss,accuracy,exact,lr,throughput}.png "
                                             "and summary.md from RUN_DIR/metrics.jsonl.")
    report.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    report.set_defaults(handler=_report_command)

    config = commands.add_parser(
        "config", help="print the resolved run configuration and parameter count",
        description="Resolve presets, a recipe file and key=value overrides exactly as `frugal train` "
                    "would, and print the result as YAML.")
    config.add_argument("--config", help="recipe YAML file, or a packaged recipe: pretrain, sft")
    config.add_argument("overrides", nargs="*", metavar="key=value",
                        help="e.g. preset=XL net=hrm lr=3e-4 model.vocab_size=65536")
    config.set_defaults(handler=_config_command)

    from frugal_lm.plan.report import ASSUMPTIONS, add_plan_arguments

    plan = commands.add_parser(
        "plan", help="FLOPs, time, dollars and memory of a training run (or what a budget buys)",
        description="Estimate a pretraining run: parameters, FLOPs, device-hours, wall time, dollars and "
                    "memory per device, against a dense 6ND Transformer; or, with --budget-usd and --hours, "
                    "what each preset can train for that money and time.",
        epilog=ASSUMPTIONS, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_plan_arguments(plan)
    plan.set_defaults(handler=_plan_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FrugalError as error:
        print(f"frugal {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"frugal {args.command}: interrupted", file=sys.stderr)
        return 130
