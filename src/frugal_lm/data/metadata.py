"""The data stages' metadata files, typed: a tokenized source's `meta.json` and a mixed set's `metadata.json`.

Design choices:
- Each file has one pydantic model and one reader and one writer here; `tokenize`, `mix`, the
  loader, `frugal plan` and the demo all go through them, so a key is spelled in one place.
- Reading is lenient about age: keys that older versions did not write are optional with
  defaults, and keys this version does not know are ignored, so a set built by an older or
  newer frugal-lm still loads. Only what a reader cannot do without is required (a mixed
  set's `vocab_size` and `max_seq_len`; a source's path and counts).
- A bad file is one line naming it and the key (`config.validate`), never a KeyError later.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from frugal_lm.config import validate
from frugal_lm.errors import FrugalError

SOURCE_META = "meta.json"
MIX_METADATA = "metadata.json"

Model = TypeVar("Model", bound=BaseModel)


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FileRecord(Metadata):
    """One output file of a tokenized source, as tokenize wrote it."""

    size: int
    sha256: str


class SourceMeta(Metadata):
    """`meta.json` of one tokenized source (`frugal data tokenize`)."""

    source: str
    """Absolute path of the record file."""
    size: int | None = None
    mtime_ns: int | None = None
    tokenizer: str | None = None
    """Fingerprint of the tokenizer files (`tokenize.tokenizer_fingerprint`)."""
    reader: dict[str, Any] | None = None
    """The reader options the source was read with (`readers.ReadOptions.stamp`)."""
    source_format: str | None = None
    """The row format the source was read as (`formats.FORMATS`, or `mapped`)."""
    rows: int = Field(ge=0)
    rejected: int = 0
    duplicates: int = 0
    skipped: dict[str, int] = {}
    """Conversation turns skipped, by category (`conversations.SKIP_CATEGORIES`)."""
    tokens: int = Field(ge=0)
    token_dtype: str | None = None
    vocab_size: int = Field(ge=1)
    files: dict[str, FileRecord] | None = None
    """Size and sha256 of every output file; None in files from before it was recorded."""


class MixSource(Metadata):
    """One source's share of a mixed set."""

    name: str
    rows_available: int
    rows_per_epoch: int
    tokens_per_epoch: int
    contamination: dict[str, Any] = {}
    """`{"status": "not checked"}`, or "checked"/"stale" with the decontamination counts."""


class MixMetadata(Metadata):
    """`metadata.json` of a mixed training set (`frugal data mix`)."""

    vocab_size: int = Field(ge=1)
    """The largest source vocabulary, rounded up to a multiple of 256."""
    max_seq_len: int = Field(ge=1)
    """The `--context` every row fits."""
    epochs: int | None = None
    tokens_per_epoch: list[int] = []
    seed: int | None = None
    tokenizer_info: dict[str, Any] = {}
    sources: list[MixSource] = []


def read_source_meta(folder: Path, label: str | None = None) -> SourceMeta:
    """`folder/meta.json`; errors name `label` (default: the file's path)."""
    return _read(Path(folder) / SOURCE_META, SourceMeta, label)


def write_source_meta(folder: Path, meta: SourceMeta) -> None:
    _write(Path(folder) / SOURCE_META, meta)


def read_mix_metadata(directory: Path) -> MixMetadata:
    path = Path(directory) / MIX_METADATA
    if not path.is_file():
        raise FrugalError(
            f"{directory}: not a mixed training set (no {MIX_METADATA}); build one with `frugal data mix`"
        )
    return _read(path, MixMetadata)


def write_mix_metadata(directory: Path, metadata: MixMetadata) -> None:
    _write(Path(directory) / MIX_METADATA, metadata)


def _read(path: Path, model: type[Model], label: str | None = None) -> Model:
    label = label or str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FrugalError(f"{label}: no such file") from None
    except OSError as error:
        raise FrugalError(f"{label}: unreadable ({error.strerror})") from None
    except json.JSONDecodeError as error:
        raise FrugalError(f"{label}:{error.lineno}: not valid JSON ({error.msg})") from None
    except UnicodeDecodeError:
        raise FrugalError(f"{label}: not valid JSON (not UTF-8 text)") from None
    if not isinstance(data, dict):
        raise FrugalError(f"{label}: expected a JSON object at the top level")
    return validate(model, data, label)


def _write(path: Path, metadata: BaseModel) -> None:
    path.write_text(json.dumps(metadata.model_dump(mode="json"), indent=1), encoding="utf-8")
