"""`frugal data ...`: synth, validate, tokenizer, tokenize, mix (curate: cli/data_curate.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from frugal_lm.errors import FrugalError

OUT_HELP = (
    "new or empty directory, or this command's earlier output there (which is replaced); "
    "a directory holding anything else is refused"
)


def _data_synth_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.synth import parse_families, write_synthetic

    if args.rows < 1 or args.heldout_rows < 1:
        raise FrugalError("--rows and --heldout-rows must be >= 1")
    paths = write_synthetic(
        args.out, parse_families(args.tasks), args.rows, args.heldout_rows, args.seed, args.answer_format
    )
    print(
        f"wrote {args.rows:,} train rows to {paths['train']} and {args.heldout_rows:,} held-out rows to "
        f"{paths['heldout']}"
    )
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
    from frugal_lm.data.tokenizer import COMMAND, save_tokenizer_dir, train_tokenizer
    from frugal_lm.files import check_output_dir

    check_output_dir(args.out, COMMAND)  # before training, not after: refuse a foreign --out at once
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
    save_tokenizer_dir(tokenizer, args.out)
    # BPE stops early when every word of the data is already one token: say so, or a
    # smaller vocabulary than asked for looks like a bug.
    saturated = (
        f" (asked for {args.vocab_size:,}: every word in the data is already a single token, so "
        f"nothing is left to merge; more data gives a larger vocabulary)"
        if tokenizer.vocab_size < args.vocab_size
        else ""
    )
    print(
        f"trained a {tokenizer.vocab_size:,}-token byte-level BPE into {args.out}{saturated}"
        + (f"; {skipped:,} bad rows ignored (see `frugal data validate`)" if skipped else "")
    )
    return 0


def _data_tokenize_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.tokenize import tokenize_sources

    for result in tokenize_sources(args.tokenizer, args.out, args.sources, args.on_error):
        state = "unchanged" if result.skipped_unchanged else "tokenized"
        print(
            f"{result.source}: {state}, {result.rows:,} rows, {result.tokens:,} tokens, "
            f"{result.rejected:,} rejected, {result.duplicates:,} duplicates -> {result.output}"
        )
    return 0


def _data_mix_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.mix import mix

    result = mix(args.tokenized, args.out, args.mix, args.epochs, args.context, args.seed)
    print((args.out / "report.md").read_text())
    print(f"wrote {result.epochs} epoch(s) to {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="prepare training data").add_subparsers(
        dest="data_command", metavar="STEP", required=True
    )
    synth = data.add_parser(
        "synth",
        help="generate the built-in synthetic reasoning tasks",
        description="Write OUT/train.jsonl and OUT/heldout.jsonl; the held-out split never "
        "shares an instruction with any train split, whatever the seed.",
    )
    synth.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    synth.add_argument(
        "--tasks",
        help="comma-separated families (default all): addition, multiplication, "
        "sorting, reversal, expression, counting",
    )
    synth.add_argument("--rows", type=int, default=10000, help="train rows (default 10000)")
    synth.add_argument("--heldout-rows", type=int, default=600, help="held-out rows (default 600)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--answer-format",
        choices=["cot", "direct"],
        default="cot",
        help="cot (default): addition, multiplication, expression and counting responses are worked "
        "solutions ending in '#### ANSWER' (condition cot); direct: the final answer alone",
    )
    synth.set_defaults(handler=_data_synth_command)

    validate = data.add_parser(
        "validate",
        help="check JSONL/Parquet records; exit 1 if any row is bad",
        description="Print FILE:LINE: reason for every bad row (not JSON, missing or empty "
        "field, non-string, unknown condition tag, over the length cap).",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(handler=_data_validate_command)

    tokenizer = data.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer with the special tokens",
        description="Train a byte-level BPE (HuggingFace tokenizers) on the records of "
        "SOURCE files; writes OUT/tokenizer.json and tokenizer_info.json.",
    )
    tokenizer.add_argument("--vocab-size", type=int, required=True)
    tokenizer.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    tokenizer.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    tokenizer.set_defaults(handler=_data_tokenizer_command)

    tokenize = data.add_parser(
        "tokenize",
        help="tokenize record files into per-source token arrays",
        description="Incremental: unchanged sources are skipped, outputs of sources no "
        "longer given are removed. Exact duplicate rows are dropped and counted. "
        "Streams any input size in bounded memory and encodes on every core. "
        "Exit code 1 when --on-error fail stops at a bad row.",
    )
    tokenize.add_argument("--tokenizer", type=Path, required=True, help="directory with tokenizer.json")
    tokenize.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new or empty directory, or an earlier `frugal data tokenize` output there (brought "
        "up to date); a directory holding anything else is refused",
    )
    tokenize.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="fail: stop at the first bad row, write nothing; skip: quarantine bad rows in "
        "rejected.jsonl with their reason",
    )
    tokenize.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    tokenize.set_defaults(handler=_data_tokenize_command)

    mix = data.add_parser(
        "mix",
        help="combine tokenized sources into a training set with per-epoch order",
        description="Rules (YAML list, first prefix match on the source file name wins): "
        "prefix, max_per_file, repeat, long_context: truncate|drop, min_response_len. "
        "report.md and metadata.json give each source's contamination status from "
        "the SOURCE.contamination.json that `frugal data decontaminate` writes: "
        "counts per benchmark, 'not checked', or 'stale' when the file changed since.",
    )
    mix.add_argument("--tokenized", type=Path, required=True)
    mix.add_argument("--out", type=Path, required=True, help=OUT_HELP)
    mix.add_argument("--mix", type=Path, help="rules YAML")
    mix.add_argument("--epochs", type=int, default=1)
    mix.add_argument("--context", type=int, default=2048, help="max tokens per example (default 2048)")
    mix.add_argument("--seed", type=int, default=0)
    mix.set_defaults(handler=_data_mix_command)

    from frugal_lm.cli.data_curate import register_curate
    from frugal_lm.cli.evals import register_decontaminate  # its handler lives with the evals commands

    register_curate(data, OUT_HELP)

    register_decontaminate(data)
