"""Throughput of `frugal data tokenize` against the raw `tokenizers` batch encoder.

One run, on the same records:
1. writes a JSONL of realistic records (see `write_records`) and trains a byte-level BPE on
   it with `frugal_lm.data.tokenizer.train_tokenizer` (default 32,768 tokens), untimed;
2. the reference: the records' instruction and response texts, parsed beforehand (untimed),
   encoded by `Tokenizer.encode_batch` in one call with the same tokenizer: the pure
   encoding cost, on every core the Rust library uses;
3. ours: `frugal_lm.data.tokenize.tokenize_sources` on the JSONL file, from a cold output
   directory: reading, JSON parsing, validation, deduplication, encoding, the special-token
   layout, index arrays and writing `tokens.npy`.
It prints tokens per second of each (best of `--repeats`, alternating, to ride out other
jobs on shared cores), the CPU seconds each used (all threads; steadier than wall time
when other jobs share the cores) and the ratios ours / reference; `encode_batch_fast`
(no character offsets, what tokenize itself calls) is shown as a second reference.

Records (`write_records`, deterministic by seed): a share of the built-in synthetic tasks
(short instruction, short answer) and the rest prose-like pairs: passages of English from
the docstrings of the Python standard library on this machine (300-3,000 characters each),
instruction "Rewrite ... in your own words" + passage, response another passage. Every
record is distinct, so both sides encode exactly the same texts.

The same generator writes the large inputs for the peak-memory measurement:

    python benchmarks/tokenize_throughput.py [--rows 20000] [--prose-share 0.5] [--vocab 32768]
    python benchmarks/tokenize_throughput.py --write-only /tmp/big.jsonl --megabytes 1000
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import resource
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from frugal_lm.data.synth import DEFAULT_FAMILIES, FAMILIES
from frugal_lm.data.tokenize import tokenize_sources
from frugal_lm.data.tokenizer import load_tokenizer, train_tokenizer


def stdlib_passages(min_chars: int = 300, max_chars: int = 3000) -> list[str]:
    """English passages: standard-library docstrings, consecutive paragraphs joined up to a
    length drawn log-uniformly from [min_chars, max_chars]."""
    paragraphs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc:
                    paragraphs += [" ".join(p.split()) for p in doc.split("\n\n") if len(p.split()) >= 6]
    rng = random.Random(0)
    passages, current, target = [], "", min_chars
    for paragraph in paragraphs:
        current = f"{current}\n\n{paragraph}" if current else paragraph
        if len(current) >= target:
            passages.append(current[:max_chars])
            current, target = "", int(min_chars * (max_chars / min_chars) ** rng.random())
    return passages


def records(seed: int, prose_share: float, passages: list[str]) -> Iterator[dict]:
    """An endless stream of records; not deduplicated (synthetic tasks repeat now and then)."""
    rng = random.Random(seed)
    families = sorted(DEFAULT_FAMILIES)  # the workload of earlier measurements
    conditions = ["direct", "cot", "direct,noisy", "synth"]
    while True:
        if rng.random() < prose_share:
            first, second = rng.sample(passages, 2)
            yield {
                "instruction": f"Rewrite the following documentation in your own words.\n\n{first}",
                "response": second,
                "condition": rng.choice(conditions),
                "category": "prose",
            }
        else:
            family = rng.choice(families)
            solution = FAMILIES[family](rng)
            yield {
                "instruction": solution.instruction,
                "response": solution.answer,
                "condition": "synth",
                "category": family,
            }


def write_records(
    path: Path,
    seed: int,
    prose_share: float,
    rows: int | None = None,
    megabytes: float | None = None,
    distinct: bool = False,
) -> tuple[int, int]:
    """(rows, bytes) written; stops at `rows` or `megabytes`, whichever comes first."""
    passages = stdlib_passages()
    limit = int(megabytes * 1e6) if megabytes else None
    seen: set[tuple[str, str]] = set()
    written = size = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records(seed, prose_share, passages):
            if (rows is not None and written >= rows) or (limit is not None and size >= limit):
                break
            if distinct:
                key = (record["instruction"], record["response"])
                if key in seen:
                    continue
                seen.add(key)
            line = json.dumps(record, ensure_ascii=False) + "\n"
            handle.write(line)
            written += 1
            size += len(line.encode())
    return written, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--prose-share", type=float, default=0.5)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="keep records and tokenizer here (default: a temp dir)")
    parser.add_argument("--write-only", type=Path, metavar="JSONL", help="only write records to this file")
    parser.add_argument("--megabytes", type=float, help="with --write-only: size of the file")
    args = parser.parse_args()

    if args.write_only:
        rows, size = write_records(
            args.write_only,
            args.seed,
            args.prose_share,
            rows=None if args.megabytes else args.rows,
            megabytes=args.megabytes,
        )
        print(f"wrote {rows:,} records, {size / 1e6:,.1f} MB to {args.write_only}")
        return

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tokenize-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "records.jsonl"
    rows, size = write_records(source, args.seed, args.prose_share, rows=args.rows, distinct=True)
    texts = [
        text
        for line in source.read_text(encoding="utf-8").splitlines()
        for record in (json.loads(line),)
        for text in (record["instruction"], record["response"])
    ]
    if not (work / "tok" / "tokenizer.json").is_file():
        start = time.perf_counter()
        train_tokenizer(iter(texts), args.vocab).save(work / "tok")
        print(f"trained a {args.vocab:,}-token BPE in {time.perf_counter() - start:.1f} s (not timed below)")
    tokenizer = load_tokenizer(work / "tok").tokenizer
    load_before = os.getloadavg()[0]

    def timed(run) -> tuple[float, float]:
        """(wall seconds, CPU seconds of every thread of this process) of `run()`."""
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        run()
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime

    sides = {"Tokenizer.encode_batch (reference)": [], "Tokenizer.encode_batch_fast": [], "frugal data tokenize": []}
    results = []
    for repeat in range(args.repeats):
        sides["Tokenizer.encode_batch (reference)"].append(
            timed(lambda: tokenizer.encode_batch(texts, add_special_tokens=False))
        )
        sides["Tokenizer.encode_batch_fast"].append(
            timed(lambda: tokenizer.encode_batch_fast(texts, add_special_tokens=False))
        )
        sides["frugal data tokenize"].append(
            timed(lambda out=work / f"out-{repeat}": results.append(tokenize_sources(work / "tok", out, [source])[0]))
        )
    result = results[-1]
    assert result.rows == rows and result.duplicates == 0 and result.rejected == 0
    text_tokens = sum(len(e) for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores (load average before: {load_before:.1f}); "
        f"records: {rows:,} ({size / 1e6:.1f} MB, {args.prose_share:.0%} prose), {text_tokens:,} text tokens "
        f"({result.tokens:,} with the special tokens)"
    )
    best = {name: (min(w for w, _ in runs), min(c for _, c in runs)) for name, runs in sides.items()}
    for name, (wall, cpu) in best.items():
        print(
            f"{name:36s} {wall:6.2f} s wall, {text_tokens / wall / 1e6:5.2f} M tokens/s, {cpu:6.2f} CPU s "
            f"(walls: {', '.join(f'{w:.2f}' for w, _ in sides[name])})"
        )
    reference, fast, ours = best.values()
    print(
        f"ratio ours / encode_batch:      {reference[0] / ours[0]:.2f}x wall, {reference[1] / ours[1]:.2f}x CPU "
        f"(goal >= 0.9x)"
    )
    print(f"ratio ours / encode_batch_fast: {fast[0] / ours[0]:.2f}x wall, {fast[1] / ours[1]:.2f}x CPU")


if __name__ == "__main__":
    main()
