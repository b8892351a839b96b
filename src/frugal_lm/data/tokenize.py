"""`frugal data tokenize`: records -> per-source token arrays, incremental and streaming.

Each source file gets its own directory `OUT/<file stem>-<8 hex of its path>/` with
`tokens.npy` (uint16 when every id fits, else uint32), `inst_start`, `inst_len`,
`resp_start`, `resp_len` (int64) and `meta.json` (source path, size, mtime, tokenizer
fingerprint, row counts, rejected and duplicate counts).

- Streaming: rows are read and batch-encoded 4,096 at a time (the `tokenizers` batch
  encoder runs on every core); tokens go to a scratch file on disk, so memory holds one
  batch plus a 16-byte digest per unique row, whatever the input size.
- Errors: `on_error="fail"` stops at the first bad row, naming it, and writes nothing;
  `"skip"` writes each bad row with its reason to `rejected.jsonl` beside the outputs.
- Exact duplicates of (instruction, response) within a source are dropped and counted.
- Incremental: a source whose size, mtime and tokenizer are unchanged is skipped; outputs
  of sources no longer given are removed. Each output appears by an atomic rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from frugal_lm.data.records import read_rows
from frugal_lm.data.tokenizer import TextTokenizer, load_tokenizer
from frugal_lm.errors import FrugalError

BATCH_ROWS = 4096
INDEX_FIELDS = ("inst_start", "inst_len", "resp_start", "resp_len")


@dataclass
class SourceResult:
    source: Path
    output: Path
    skipped_unchanged: bool
    rows: int
    rejected: int
    duplicates: int
    tokens: int


def output_dir_for(out: Path, source: Path) -> Path:
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
    return out / f"{source.stem}-{digest}"


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_info.json"):
        if (tokenizer_dir / name).is_file():
            digest.update((tokenizer_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def smallest_token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


def _source_stamp(source: Path, fingerprint: str) -> dict:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "tokenizer": fingerprint}


def _tokenize_one(source: Path, final: Path, tokenizer: TextTokenizer, stamp: dict, on_error: str) -> SourceResult:
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        index = {field: [] for field in INDEX_FIELDS}
        seen: set[bytes] = set()
        rejected = duplicates = 0
        position = 0
        batch = []
        with open(scratch / "tokens.u32", "wb") as token_file, open(scratch / "rejected.jsonl", "w") as rejects:
            def flush():
                nonlocal position
                for instruction, response in tokenizer.encode_records(batch):
                    index["inst_start"].append(position)
                    index["inst_len"].append(len(instruction))
                    index["resp_start"].append(position + len(instruction))
                    index["resp_len"].append(len(response))
                    token_file.write(np.asarray(instruction + response, dtype=np.uint32).tobytes())
                    position += len(instruction) + len(response)
                batch.clear()

            for result in tqdm(read_rows(source), desc=f"tokenize {source.name}", unit="row", leave=False):
                if result.record is None:
                    if on_error == "fail":
                        raise FrugalError(f"{result.where}: {result.reason} (use --on-error skip to quarantine bad rows)")
                    rejected += 1
                    rejects.write(json.dumps({"where": result.where, "reason": result.reason,
                                              "row": result.raw}, default=str) + "\n")
                    continue
                key = hashlib.blake2b(f"{len(result.record.instruction)}:{result.record.instruction}"
                                      f"{result.record.response}".encode(), digest_size=16).digest()
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                batch.append(result.record)
                if len(batch) >= BATCH_ROWS:
                    flush()
            flush()
        dtype = smallest_token_dtype(tokenizer.vocab_size)
        raw = np.memmap(scratch / "tokens.u32", dtype=np.uint32, mode="r") if position else np.zeros(0, np.uint32)
        tokens = np.lib.format.open_memmap(scratch / "tokens.npy", mode="w+", dtype=dtype, shape=(position,))
        for start in range(0, position, 1 << 24):
            tokens[start:start + (1 << 24)] = raw[start:start + (1 << 24)]
        tokens.flush()
        del tokens, raw
        (scratch / "tokens.u32").unlink()
        for field, values in index.items():
            np.save(scratch / f"{field}.npy", np.asarray(values, dtype=np.int64))
        if not rejected:
            (scratch / "rejected.jsonl").unlink()
        rows = len(index["inst_len"])
        meta = {**stamp, "rows": rows, "rejected": rejected, "duplicates": duplicates, "tokens": position,
                "token_dtype": dtype.name, "vocab_size": tokenizer.vocab_size}
        (scratch / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
        return SourceResult(source, final, False, rows, rejected, duplicates, position)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tokenize_sources(tokenizer_dir: Path, out: Path, sources: list[Path], on_error: str = "fail") -> list[SourceResult]:
    if on_error not in ("fail", "skip"):
        raise FrugalError(f"--on-error must be fail or skip, got {on_error!r}")
    tokenizer = load_tokenizer(tokenizer_dir)
    fingerprint = tokenizer_fingerprint(Path(tokenizer_dir))
    out.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not source.is_file():
            raise FrugalError(f"{source}: no such file")
    wanted = {output_dir_for(out, source): source for source in sources}
    for existing in out.iterdir():
        if existing.is_dir() and (existing / "meta.json").is_file() and existing not in wanted:
            shutil.rmtree(existing)  # its source is no longer part of the set
    # The tokenizer travels with its tokens: mix and the trainer carry it forward.
    shutil.copytree(tokenizer_dir, out / "tokenizer", dirs_exist_ok=True,
                    ignore=lambda _, names: [n for n in names if n not in ("tokenizer.json", "tokenizer_info.json")])
    results = []
    for final, source in wanted.items():
        stamp = _source_stamp(source, fingerprint)
        meta_path = final / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            if all(meta.get(key) == value for key, value in stamp.items()):
                results.append(SourceResult(source, final, True, meta["rows"], meta["rejected"],
                                            meta["duplicates"], meta["tokens"]))
                continue
        results.append(_tokenize_one(source, final, tokenizer, stamp, on_error))
    return results
