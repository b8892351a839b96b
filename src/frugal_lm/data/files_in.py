"""The file types a data source may be: rows as plain dicts, each with its place in the file.

`iter_rows(path)` yields `(where, row, parse_error)` for every row of a source, streamed:

- JSON Lines (`.jsonl`, `.ndjson`, `.json`): `file:LINE`, read as bytes and decoded line by
  line, so a bad byte or a broken line costs only its own row;
- a JSON array (any of those suffixes, when the file starts with `[`, as Alpaca publishes it):
  `file:row N`, streamed element by element with ijson, so memory holds one row whatever the file
  size; a syntax error ends the file with a one-line error (nothing after it can be trusted to be
  a row boundary);
- CSV / TSV (`.csv`, `.tsv`, with a header row; every value is text): `file:LINE` of the row's
  first line;
- Parquet (`.parquet`) and Arrow IPC (`.arrow`, `.feather`, stream or file format):
  `file:row N`, read in record batches with pyarrow;
- text files compressed whole: `.gz` (gzip) and `.zst` (Zstandard) after any of the text
  suffixes (`data.jsonl.zst`); Parquet and Arrow compress their own columns;
- a folder: a `datasets` `save_to_disk` folder (read through its `state.json`, straight from
  its Arrow files with pyarrow: the `datasets` library is not needed), or a folder of shards
  (every supported file directly inside it, in name order, each with its own `where`). A
  `DatasetDict` folder or shards of several splits (`train-*`, `test-*`) are refused, naming
  the splits, so a test split never slips into training.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from frugal_lm.errors import FrugalError
from frugal_lm.files import os_errors_as_user_errors

Row = tuple[str, Any, str | None]
"""(where, row, parse_error): `row` is None when `parse_error` says why the row is unreadable."""

TEXT_TYPES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")
TABLE_TYPES = (".parquet", ".arrow", ".feather")
COMPRESSIONS = (".gz", ".zst")
BATCH_ROWS = 8192
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "eval")
_SPLIT_PREFIX = re.compile(r"^([a-z]+)[-_.]")


def file_type(path: Path) -> tuple[str, str | None]:
    """(data suffix, compression suffix or None) of a file; a one-line error for others."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    kind = suffixes[-1] if suffixes else ""
    if kind in TEXT_TYPES or (kind in TABLE_TYPES and compression is None):
        return kind, compression
    if kind in TABLE_TYPES:
        raise FrugalError(f"{path}: a compressed {kind} file is not supported ({kind} compresses its own columns)")
    supported = ", ".join((*TEXT_TYPES, *TABLE_TYPES))
    raise FrugalError(
        f"{path}: unsupported file type {kind or '(none)'}; use {supported} (text types optionally .gz or .zst), "
        f"or a folder of them"
    )


def source_files(path: Path) -> list[Path]:
    """The data files a source is made of: itself, or a folder's shards in reading order."""
    path = Path(path)
    if path.is_file():
        file_type(path)
        return [path]
    if not path.is_dir():
        raise FrugalError(f"{path}: no such file or folder")
    if (path / "dataset_dict.json").is_file():
        splits = sorted(child.name for child in path.iterdir() if (child / "state.json").is_file())
        example = "train" if "train" in splits or not splits else splits[0]
        raise FrugalError(
            f"{path}: a DatasetDict with splits {', '.join(splits) or '(none)'}; give one split's folder, "
            f"e.g. {path / example}"
        )
    if (path / "state.json").is_file():
        return _saved_dataset_files(path)
    shards = sorted(child for child in path.iterdir() if child.is_file() and _is_data_file(child))
    if not shards:
        folders = sorted(child.name for child in path.iterdir() if child.is_dir())
        raise FrugalError(
            f"{path}: no data files in it (.jsonl, .json, .csv, .parquet, .arrow, ...)"
            + (f"; its folders: {', '.join(folders)}" if folders else "")
        )
    splits = sorted({m.group(1) for s in shards if (m := _SPLIT_PREFIX.match(s.name)) and m.group(1) in SPLIT_NAMES})
    if len(splits) > 1:
        raise FrugalError(
            f"{path}: holds shards of the splits {', '.join(splits)}; give one split's files "
            f"(e.g. {path / (splits[0] + '-*')}) so they are not mixed"
        )
    return shards


def _is_data_file(path: Path) -> bool:
    try:
        file_type(path)
    except FrugalError:
        return False
    return True


def _saved_dataset_files(folder: Path) -> list[Path]:
    with os_errors_as_user_errors(folder / "state.json"):
        try:
            state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        except ValueError as error:
            raise FrugalError(f"{folder / 'state.json'}: not valid JSON ({error})") from None
    if not isinstance(state, dict):
        raise FrugalError(f"{folder / 'state.json'}: expected an object, got {type(state).__name__}")
    if state.get("_indices_data_files"):
        raise FrugalError(f"{folder}: saved with an indices mapping; save it again after `dataset.flatten_indices()`")
    names = [entry.get("filename") for entry in state.get("_data_files", []) if isinstance(entry, dict)]
    if not names or not all(isinstance(name, str) for name in names):
        raise FrugalError(f"{folder / 'state.json'}: no '_data_files' list of Arrow files in it")
    files = [folder / name for name in names]
    for file in files:
        if not file.resolve().is_relative_to(folder.resolve()):
            raise FrugalError(f"{folder / 'state.json'}: lists {file.name!r} outside the folder")
        if not file.is_file():
            raise FrugalError(f"{file}: listed in {folder / 'state.json'} but missing")
    return files


def source_stamp(path: Path) -> tuple[int, int]:
    """(total bytes, newest mtime in ns) of a source's files: what tells that it changed."""
    files = source_files(path)
    stats = [file.stat() for file in files]
    return sum(stat.st_size for stat in stats), max(stat.st_mtime_ns for stat in stats)


def iter_rows(path: Path | str) -> Iterator[Row]:
    """Every row of a source (a file or a folder of them), in order."""
    for file in source_files(Path(path)):
        yield from _file_rows(file)


def _file_rows(path: Path) -> Iterator[Row]:
    kind, compression = file_type(path)
    if kind == ".parquet":
        yield from _parquet_rows(path)
    elif kind in (".arrow", ".feather"):
        yield from _arrow_rows(path)
    else:
        with _opened(path, compression) as handle:
            if kind in (".csv", ".tsv"):
                yield from _csv_rows(path, handle, "\t" if kind == ".tsv" else ",")
            elif _starts_with(handle, b"["):
                yield from _json_array_rows(path, handle)
            else:
                yield from _jsonl_rows(path, handle)


@contextmanager
def _opened(path: Path, compression: str | None) -> Iterator[IO[bytes]]:
    """A buffered binary stream of the file's decompressed bytes (with `peek`)."""
    with os_errors_as_user_errors(path), open(path, "rb") as raw:
        if compression == ".gz":
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw)
        elif compression == ".zst":
            try:
                import zstandard
            except ImportError:
                raise FrugalError(f"{path}: reading .zst needs zstandard (pip install zstandard)") from None
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        else:
            stream = raw
        try:
            yield io.BufferedReader(stream) if compression else stream  # type: ignore[arg-type]
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise FrugalError(f"{path}: not a readable gzip file ({error})") from None
        except Exception as error:
            if type(error).__name__ == "ZstdError":
                raise FrugalError(f"{path}: not a readable Zstandard file ({error})") from None
            raise


def _starts_with(handle: IO[bytes], prefix: bytes) -> bool:
    head = handle.peek(4096)  # type: ignore[attr-defined]
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(prefix)


def _jsonl_rows(path: Path, handle: IO[bytes]) -> Iterator[Row]:
    # Bytes, decoded line by line: a text-mode reader decodes whole chunks, so a bad byte
    # would be reported on an earlier line and end the file; here it costs only its own row.
    for number, raw in enumerate(handle, start=1):
        try:
            # utf-8-sig on line 1: editors on Windows start a file with a byte-order mark.
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            yield f"{path}:{number}", None, f"not valid UTF-8 (byte {error.start + 1})"
            continue
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line), None
        except json.JSONDecodeError as error:
            yield f"{path}:{number}", None, f"not valid JSON ({error.msg} at column {error.colno})"


def _json_array_rows(path: Path, handle: IO[bytes]) -> Iterator[Row]:
    try:
        import ijson
    except ImportError:
        raise FrugalError(f"{path}: reading a JSON array needs ijson (pip install ijson)") from None
    if handle.peek(3).startswith(b"\xef\xbb\xbf"):  # type: ignore[attr-defined]
        handle.read(3)
    number = 0
    try:
        for number, row in enumerate(ijson.items(handle, "item", use_float=True), start=1):
            yield f"{path}:row {number}", row, None
    except ijson.JSONError as error:
        raise FrugalError(f"{path}: not valid JSON after row {number} ({error}); nothing after it was read") from None
    except UnicodeDecodeError as error:
        raise FrugalError(f"{path}: not valid UTF-8 after row {number} ({error.reason})") from None


# The csv module refuses fields over 131,072 characters by default, below the records' own cap
# (records.DEFAULT_MAX_CHARS), which names the row instead of ending the file.
csv.field_size_limit(16_000_000)


def _csv_rows(path: Path, handle: IO[bytes], delimiter: str) -> Iterator[Row]:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return
        first_line = reader.line_num + 1
        for values in reader:
            where, first_line = f"{path}:{first_line}", reader.line_num + 1
            if not values:  # a blank line
                continue
            if len(values) != len(header):
                yield where, None, f"has {len(values)} values, the header has {len(header)} columns"
                continue
            yield where, dict(zip(header, values)), None
    except UnicodeDecodeError as error:
        raise FrugalError(f"{path}: not valid UTF-8 near line {reader.line_num + 1} ({error.reason})") from None
    except csv.Error as error:
        raise FrugalError(f"{path}:{reader.line_num}: not valid CSV ({error})") from None
    finally:
        text.detach()  # the caller closes the file


def _record_batches(path: Path, kind: str):
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError:
        raise FrugalError(f"{path}: reading {kind} needs pyarrow (pip install pyarrow)") from None
    try:
        if kind == "Parquet":
            return parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
        try:
            return iter(pyarrow.ipc.open_stream(pyarrow.memory_map(str(path))))
        except pyarrow.ArrowInvalid:
            reader = pyarrow.ipc.open_file(pyarrow.memory_map(str(path)))
            return (reader.get_batch(index) for index in range(reader.num_record_batches))
    except OSError as error:
        raise FrugalError(f"{path}: {error.strerror or error}") from None
    except Exception as error:  # pyarrow raises several types for a bad file
        raise FrugalError(f"{path}: not a readable {kind} file ({error})") from None


def _parquet_rows(path: Path) -> Iterator[Row]:
    yield from _table_rows(path, _record_batches(path, "Parquet"))


def _arrow_rows(path: Path) -> Iterator[Row]:
    yield from _table_rows(path, _record_batches(path, "Arrow"))


def _table_rows(path: Path, batches) -> Iterator[Row]:
    number = 0
    try:
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"{path}:row {number}", row, None
    except Exception as error:  # pyarrow raises OSError or ArrowInvalid for a damaged page
        raise FrugalError(f"{path}: not readable after row {number} ({error}); nothing after it was read") from None
