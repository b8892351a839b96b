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


DIFFICULTY_HELP = (
    "knobs of the depth families (others keep their defaults): modexpr.ops (most operations, "
    "default 8), modexpr.min_ops (1), modexpr.shape (random or chain), modexpr.modulus (a prime "
    "<= 36, default 7); chain.hops (4), chain.min_hops (1), chain.distractors (other chains, 2)"
)
WEIGHTS_HELP = (
    "train rows drawn per cycle of the families, e.g. sorting=3 (1 for a family not named); the "
    "held-out split stays even"
)


def add_reader_arguments(parser: argparse.ArgumentParser) -> None:
    """`--format`, `--map`, `--turns`, `--condition`: how a data command reads its sources
    (`data.readers.ReadOptions`); `reader_options(args)` turns them into the options."""
    from frugal_lm.data.formats import FORMATS

    group = parser.add_argument_group("reading sources")
    group.add_argument(
        "--format",
        choices=FORMATS,
        help="the row format of every source (default: detected per file from its fields and printed)",
    )
    group.add_argument(
        "--map",
        metavar="instruction=FIELD,response=FIELD[,condition=FIELD,category=FIELD]",
        help="read other flat columns as the record's fields",
    )
    group.add_argument(
        "--turns",
        choices=["all", "first", "last"],
        default="all",
        help="which assistant turns of a conversation become examples (default all)",
    )
    group.add_argument(
        "--condition", metavar="TAGS", help="comma-separated condition tags added to every row (e.g. cot or noisy)"
    )


def reader_options(args: argparse.Namespace, require_response: bool = True):
    """The `ReadOptions` of `add_reader_arguments`' flags; a bad value is a one-line error."""
    from frugal_lm.data.readers import ReadOptions, parse_field_map

    return ReadOptions(
        format=args.format,
        field_map=parse_field_map(args.map) if args.map is not None else None,
        turns=args.turns,
        condition=args.condition,
        require_response=require_response,
    )


def _data_synth_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.synth import parse_families, parse_weights, write_synthetic
    from frugal_lm.data.synth_depth import parse_difficulty

    if args.rows < 1 or args.heldout_rows < 1:
        raise FrugalError("--rows and --heldout-rows must be >= 1")
    families, difficulty = parse_families(args.tasks), parse_difficulty(args.difficulty)
    weights = parse_weights(args.weights, families)
    paths = write_synthetic(
        args.out, families, args.rows, args.heldout_rows, args.seed, args.answer_format, difficulty, weights
    )
    print(
        f"wrote {args.rows:,} train rows to {paths['train']} and {args.heldout_rows:,} held-out rows to "
        f"{paths['heldout']}"
    )
    return 0


def _data_validate_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.readers import SourceCounts, SourceReader

    options = reader_options(args)
    total = SourceCounts()
    for path in args.files:
        reader, counts = SourceReader(path, options), SourceCounts()
        for result in reader:
            counts.add(result)
            total.add(result)
            if result.record is None and not result.skipped:
                print(f"{result.where}: {result.reason}")
        print(f"{path}: format {reader.format or 'unknown'}, {counts.summary()}", file=sys.stderr)
    if len(args.files) > 1:
        print(f"all files: {total.summary()}", file=sys.stderr)
    return 1 if total.bad else 0


def _data_tokenizer_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.readers import SourceCounts, SourceReader
    from frugal_lm.data.tokenizer import COMMAND, save_tokenizer_dir, train_tokenizer
    from frugal_lm.files import check_output_dir

    options = reader_options(args)
    check_output_dir(args.out, COMMAND)  # before training, not after: refuse a foreign --out at once
    counts = SourceCounts()
    formats = []

    def texts():
        for source in args.sources:
            reader = SourceReader(source, options)
            for result in reader:
                counts.add(result)
                if result.record is not None:
                    yield result.record.instruction
                    yield result.record.response
            formats.append(f"{source} ({reader.format or 'format unknown'})")

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
    skipped = sum(counts.skipped.values())
    print(
        f"trained a {tokenizer.vocab_size:,}-token byte-level BPE into {args.out}{saturated} from "
        + ", ".join(formats)
        + (f"; {counts.bad:,} bad rows ignored (see `frugal data validate`)" if counts.bad else "")
        + (f"; {skipped:,} conversation turns skipped" if skipped else "")
    )
    return 0


def _data_tokenize_command(args: argparse.Namespace) -> int:
    from frugal_lm.data.tokenize import tokenize_sources

    for result in tokenize_sources(args.tokenizer, args.out, args.sources, args.on_error, reader_options(args)):
        state = "unchanged" if result.skipped_unchanged else "tokenized"
        skipped = sum(result.skipped.values())
        print(
            f"{result.source}: {state}, format {result.source_format or 'unknown'}, {result.rows:,} rows, "
            f"{result.tokens:,} tokens, {result.rejected:,} rejected, {result.duplicates:,} duplicates"
            + (f", {skipped:,} turns skipped ({_by_category(result.skipped)})" if skipped else "")
            + f" -> {result.output}"
        )
    return 0


def _by_category(counts: dict[str, int]) -> str:
    return ", ".join(f"{category} {count:,}" for category, count in sorted(counts.items()))


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
        help="comma-separated families (default: the demo's six): addition, multiplication, "
        "sorting, reversal, expression, counting; and the depth families modexpr, chain",
    )
    synth.add_argument(
        "--difficulty",
        metavar="FAMILY.KNOB=VALUE,...",
        help=DIFFICULTY_HELP,
    )
    synth.add_argument("--weights", metavar="FAMILY=N,...", help=WEIGHTS_HELP)
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
        help="check data files in any supported format; exit 1 if any row is bad",
        description="Print FILE:LINE: reason for every bad row (not JSON, unknown row shape, a file "
        "mixing formats, missing or empty field, non-string, unknown condition tag, over the length "
        "cap), and per file on stderr the format it was read as and its counts.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    add_reader_arguments(validate)
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
    add_reader_arguments(tokenizer)
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
    add_reader_arguments(tokenize)
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
    from frugal_lm.cli.data_generate import register_generate
    from frugal_lm.cli.evals import register_decontaminate  # its handler lives with the evals commands

    register_curate(data, OUT_HELP)
    register_generate(data)

    register_decontaminate(data)
