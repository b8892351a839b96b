"""`frugal data tokenize`: data sources -> per-source token arrays, incremental and streaming.

Sources are read by `readers.read_examples` (any supported file type and row format, a folder
of shards); the format each was read as, and conversation turns skipped by category, are
recorded in meta.json.

Each source file gets its own directory `OUT/<file stem>-<8 hex of its path>/` with
`tokens.npy` (uint16 when every id fits, else uint32), `inst_start`, `inst_len`,
`resp_start`, `resp_len` (int64) and `meta.json` (`metadata.SourceMeta`: source path, size,
mtime, tokenizer fingerprint, row counts, rejected and duplicate counts, each output's size
and sha256).

- Streaming, bounded memory: rows are read and encoded in batches of at most `BATCH_ROWS`
  rows and `BATCH_CHARS` characters; tokens and index entries go to scratch files on disk
  and become `.npy` files by chunked copies (`frugal_lm.data.arrays`, plain reads and
  writes rather than memory maps), so memory holds a few batches plus 16 bytes per unique
  row for deduplication (`frugal_lm.data.dedup`), whatever the input size.
- Both cores: a reader thread parses, validates and deduplicates the next batches while the
  main thread encodes the current one with the `tokenizers` batch encoder, which releases
  the GIL and spreads a batch over every core (unless the user set
  TOKENIZERS_PARALLELISM=false). The encoder is `encode_batch_fast` (no character offsets,
  which tokenize never uses); the special-token layout is built per batch with list
  extends and one numpy conversion, not per-row arrays.
- Errors: `on_error="fail"` stops at the first bad row, naming it, and writes nothing;
  `"skip"` writes each bad row with its reason to `rejected.jsonl` beside the outputs.
- Exact duplicates of (instruction, response) within a source are dropped and counted;
  the first occurrence is kept.
- Incremental: a source whose size, mtime, tokenizer and reader options are unchanged, and whose outputs
  still have the sizes and SHA-256 recorded in meta.json, is skipped (a truncated or
  damaged output is rebuilt, never trusted); outputs of sources no longer given are removed.
- OUT is marked as this command's (`frugal_lm.files`): a non-empty OUT it did not write is
  refused, and it removes only the entries its marker lists. Each output is built in
  `OUT/.scratch/` and appears by an atomic rename; a run killed half-way leaves its scratch
  there, and the next run clears it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Generic, TypeVar

import numpy as np
from tqdm import tqdm

from frugal_lm.data.arrays import raw_to_npy
from frugal_lm.data.dedup import DuplicateFilter, row_key
from frugal_lm.data.files_in import COMPRESSIONS, source_stamp
from frugal_lm.data.metadata import FileRecord, SourceMeta, read_source_meta, write_source_meta
from frugal_lm.data.readers import ReadOptions, SourceReader, skip_category
from frugal_lm.data.records import BadRowError, Record
from frugal_lm.data.tokenizer import TextTokenizer, load_tokenizer
from frugal_lm.errors import FrugalError
from frugal_lm.files import check_output_dir, os_errors_as_user_errors, record_output, write_atomically

BATCH_ROWS = 4096
# Encoded text costs ~110 bytes per token until it is laid out (tokenizers' Encoding
# objects), so batches are capped by characters too: ~1M tokens, ~110 MB, however long the rows.
BATCH_CHARS = 4_000_000
INDEX_FIELDS = ("inst_start", "inst_len", "resp_start", "resp_len")
COMMAND = "frugal data tokenize"
SCRATCH = ".scratch"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_info.json")

Item = TypeVar("Item")


@dataclass
class SourceResult:
    source: Path
    output: Path
    skipped_unchanged: bool
    rows: int
    rejected: int
    duplicates: int
    tokens: int
    source_format: str | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    """Conversation turns skipped, by category (`conversations.SKIP_CATEGORIES`)."""


def output_dir_for(out: Path, source: Path) -> Path:
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    name = source.name.removesuffix(source.suffix) if source.suffix.lower() in COMPRESSIONS else source.name
    return out / f"{Path(name).stem}-{digest}"


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_info.json"):
        if (tokenizer_dir / name).is_file():
            digest.update((tokenizer_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def smallest_token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _source_stamp(source: Path, fingerprint: str, options: ReadOptions) -> dict:
    size, mtime_ns = source_stamp(source)  # a folder: all its shards
    return {
        "source": str(source.resolve()),
        "size": size,
        "mtime_ns": mtime_ns,
        "tokenizer": fingerprint,
        "reader": options.stamp(),
    }


class _Background(Generic[Item]):
    """Iterate `items` on a thread, up to `depth` items ahead of the consumer. An exception
    in the producer re-raises in the consumer; leaving the `with` block stops the producer."""

    _DONE = object()

    def __init__(self, items: Iterator[Item], depth: int = 2):
        self.items, self.queue, self.stop = items, queue.Queue(maxsize=depth), threading.Event()
        self.thread = threading.Thread(target=self._produce, daemon=True)

    def _put(self, entry) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self.items:
                if not self._put((item, None)):
                    return
            self._put((self._DONE, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put((None, error))
        finally:
            self.items.close()

    def __enter__(self) -> Iterator[Item]:
        self.thread.start()
        return self._consume()

    def _consume(self) -> Iterator[Item]:
        while True:
            item, error = self.queue.get()
            if error is not None:
                raise error
            if item is self._DONE:
                return
            yield item

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@dataclass
class _ReadCounts:
    read: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)
    source_format: str | None = None


def _unique_batches(
    source: Path, on_error: str, rejects: IO[str], counts: _ReadCounts, options: ReadOptions
) -> Iterator[list[Record]]:
    """Batches of valid, first-seen records; bad rows raise (fail) or go to `rejects` (skip)."""
    seen = DuplicateFilter()
    batch: list[Record] = []
    keys: list[bytes] = []
    batch_chars = 0

    def unique() -> list[Record]:
        nonlocal batch_chars
        batch_chars = 0
        fresh = seen.first_seen(keys)
        counts.duplicates += int(len(fresh) - fresh.sum())
        kept = [record for record, is_fresh in zip(batch, fresh.tolist()) if is_fresh]
        batch.clear()
        keys.clear()
        return kept

    reader = SourceReader(source, options)
    for result in reader:
        counts.read += 1
        counts.source_format = reader.format
        record = result.record
        if result.skipped:  # a conversation turn that cannot be rendered as served: counted, not an error
            counts.skipped[skip_category(result)] += 1
            continue
        if record is None:
            if on_error == "fail":
                raise BadRowError(f"{result.where}: {result.reason} (use --on-error skip to quarantine bad rows)")
            counts.rejected += 1
            rejects.write(
                json.dumps({"where": result.where, "reason": result.reason, "row": result.raw}, default=str) + "\n"
            )
            continue
        batch.append(record)
        keys.append(row_key(record.instruction, record.response))
        batch_chars += len(record.instruction) + len(record.response)
        if len(batch) >= BATCH_ROWS or batch_chars >= BATCH_CHARS:
            yield unique()
    if batch:
        yield unique()


def encode_layout(tokenizer: TextTokenizer, records: list[Record]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens_N uint32 of all records laid out back to back, inst_len, resp_len) with the
    layout of `TextTokenizer.encode_records` (instruction = BOQ + conditions + text + EOQ,
    response = text + EOA), built flat for speed."""
    encoder = getattr(tokenizer.tokenizer, "encode_batch_fast", tokenizer.tokenizer.encode_batch)
    encoded = encoder([r.instruction for r in records] + [r.response for r in records], add_special_tokens=False)
    boq, eoq, eoa = (tokenizer.special_ids[role] for role in ("boq", "eoq", "eoa"))
    count = len(records)
    inst_len, resp_len = np.empty(count, np.int64), np.empty(count, np.int64)
    condition_ids: dict[tuple[str, ...], list[int]] = {}
    flat: list[int] = []
    for row, record in enumerate(records):
        conditions = condition_ids.get(record.conditions)
        if conditions is None:
            conditions = condition_ids[record.conditions] = [tokenizer.condition_ids[t] for t in record.conditions]
        instruction, response = encoded[row].ids, encoded[count + row].ids
        flat.append(boq)
        flat += conditions
        flat += instruction
        flat.append(eoq)
        flat += response
        flat.append(eoa)
        inst_len[row] = len(conditions) + len(instruction) + 2
        resp_len[row] = len(response) + 1
    return np.array(flat, dtype=np.uint32), inst_len, resp_len


def _file_record(path: Path) -> FileRecord:
    with open(path, "rb") as handle:
        return FileRecord(size=path.stat().st_size, sha256=hashlib.file_digest(handle, "sha256").hexdigest())


def output_damage(folder: Path, meta: SourceMeta, checksums: bool = True) -> str | None:
    """Why a source's output cannot be trusted (a file missing, of another size or, with
    `checksums`, other content than meta.json records), or None when it is intact."""
    if not meta.files:
        return "meta.json records no file sizes (written by an older frugal-lm)"
    for name, recorded in meta.files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != recorded.size:
            return f"{name} has {path.stat().st_size:,} bytes, meta.json records {recorded.size}"
        if checksums and _file_record(path).sha256 != recorded.sha256:
            return f"{name} has other content than meta.json records"
    return None


def _tokenize_one(
    source: Path, final: Path, tokenizer: TextTokenizer, stamp: dict, on_error: str, options: ReadOptions
) -> SourceResult:
    scratch = final.parent / SCRATCH / final.name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        counts = _ReadCounts()
        rows = position = 0
        files = {name: open(scratch / f"{name}.raw", "wb") for name in ("tokens", *INDEX_FIELDS)}
        try:
            with (
                open(scratch / "rejected.jsonl", "w") as rejects,
                _Background(_unique_batches(source, on_error, rejects, counts, options)) as batches,
                tqdm(desc=f"tokenize {source.name}", unit="row", leave=False) as progress,
            ):
                for batch in batches:
                    progress.update(counts.read - progress.n)
                    if not batch:  # every row of it was a duplicate
                        continue
                    tokens, inst_len, resp_len = encode_layout(tokenizer, batch)
                    inst_start = position + np.concatenate([[0], np.cumsum(inst_len + resp_len)[:-1]])
                    for name, values in (
                        ("tokens", tokens),
                        ("inst_start", inst_start),
                        ("inst_len", inst_len),
                        ("resp_start", inst_start + inst_len),
                        ("resp_len", resp_len),
                    ):
                        files[name].write(memoryview(np.ascontiguousarray(values)))
                    position += len(tokens)
                    rows += len(batch)
        finally:
            for handle in files.values():
                handle.close()
        dtype = smallest_token_dtype(tokenizer.vocab_size)
        raw_to_npy(scratch / "tokens.raw", scratch / "tokens.npy", np.dtype(np.uint32), dtype)
        for name in INDEX_FIELDS:
            raw_to_npy(scratch / f"{name}.raw", scratch / f"{name}.npy", np.dtype(np.int64), np.dtype(np.int64))
        for name in ("tokens", *INDEX_FIELDS):
            (scratch / f"{name}.raw").unlink()
        if not counts.rejected:
            (scratch / "rejected.jsonl").unlink()
        outputs = sorted(path.name for path in scratch.iterdir())
        write_source_meta(
            scratch,
            SourceMeta(
                **stamp,
                rows=rows,
                rejected=counts.rejected,
                duplicates=counts.duplicates,
                skipped=dict(counts.skipped),
                source_format=counts.source_format,
                tokens=position,
                token_dtype=dtype.name,
                vocab_size=tokenizer.vocab_size,
                files={name: _file_record(scratch / name) for name in outputs},
            ),
        )
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
        return SourceResult(
            source,
            final,
            False,
            rows,
            counts.rejected,
            counts.duplicates,
            position,
            counts.source_format,
            dict(counts.skipped),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unchanged(final: Path, stamp: dict) -> SourceMeta | None:
    """The meta.json of `final` when it was made from this very source and tokenizer and
    its files are intact (sizes and checksums), else None: the source is tokenized again."""
    try:
        meta = read_source_meta(final)
    except FrugalError:
        return None
    if any(getattr(meta, key) != value for key, value in stamp.items()):
        return None
    return meta if output_damage(final, meta) is None else None


def _copy_tokenizer(tokenizer_dir: Path, destination: Path) -> None:
    """The tokenizer travels with its tokens: mix and the trainer carry it forward. Nothing to
    copy when it is already this copy (`--tokenizer OUT/tokenizer`)."""
    destination.mkdir(exist_ok=True)
    if destination.resolve() == Path(tokenizer_dir).resolve():
        return
    for name in TOKENIZER_FILES:
        source = Path(tokenizer_dir) / name
        if source.is_file():
            write_atomically(destination / name, lambda temporary, source=source: shutil.copyfile(source, temporary))
        else:
            (destination / name).unlink(missing_ok=True)  # an earlier tokenizer's, which no longer applies


def tokenize_sources(
    tokenizer_dir: Path,
    out: Path,
    sources: list[Path],
    on_error: str = "fail",
    options: ReadOptions = ReadOptions(),
) -> list[SourceResult]:
    if on_error not in ("fail", "skip"):
        raise FrugalError(f"--on-error must be fail or skip, got {on_error!r}")
    out = Path(out)
    tokenizer = load_tokenizer(tokenizer_dir)
    fingerprint = tokenizer_fingerprint(Path(tokenizer_dir))
    for source in sources:
        source_stamp(source)  # a one-line error for a missing source or an unsupported file type
    written = check_output_dir(out, COMMAND, whole=False)  # refuses an OUT it did not write
    wanted = {output_dir_for(out, source): source for source in sources}
    ours = {SCRATCH, "tokenizer", *(final.name for final in wanted)}
    for name in sorted(ours - written):
        if (out / name).exists():
            raise FrugalError(
                f"--out {out}: holds {name!r}, which `{COMMAND}` did not write; move it away (nothing was changed)"
            )
    with os_errors_as_user_errors(out):
        out.mkdir(parents=True, exist_ok=True)
        record_output(out, COMMAND, written | ours)  # before writing: the marker lists all it may find
        shutil.rmtree(out / SCRATCH, ignore_errors=True)  # left by a run that was killed
        for name in sorted(written - ours):
            shutil.rmtree(out / name, ignore_errors=True)  # its source is no longer part of the set
        record_output(out, COMMAND, ours)
        _copy_tokenizer(Path(tokenizer_dir), out / "tokenizer")
        results = []
        try:
            for final, source in wanted.items():
                stamp = _source_stamp(source, fingerprint, options)
                meta = _unchanged(final, stamp)
                if meta is not None:
                    results.append(
                        SourceResult(
                            source,
                            final,
                            True,
                            meta.rows,
                            meta.rejected,
                            meta.duplicates,
                            meta.tokens,
                            meta.source_format,
                            dict(meta.skipped),
                        )
                    )
                    continue
                results.append(_tokenize_one(source, final, tokenizer, stamp, on_error, options))
        finally:
            shutil.rmtree(out / SCRATCH, ignore_errors=True)
    return results
