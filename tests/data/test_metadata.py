"""The data stages' metadata files: typed, lenient about age, one-line errors naming the file."""

import json

import pytest

from frugal_lm.data.metadata import (
    FileRecord,
    MixMetadata,
    SourceMeta,
    read_mix_metadata,
    read_source_meta,
    write_mix_metadata,
    write_source_meta,
)
from frugal_lm.errors import FrugalError


def test_a_minimal_mix_metadata_reads_with_defaults(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"vocab_size": 512, "max_seq_len": 12}))
    metadata = read_mix_metadata(tmp_path)
    assert (metadata.vocab_size, metadata.max_seq_len, metadata.sources, metadata.tokenizer_info) == (512, 12, [], {})


def test_keys_a_newer_version_wrote_are_ignored(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"vocab_size": 512, "max_seq_len": 12, "future": 1}))
    assert read_mix_metadata(tmp_path).vocab_size == 512


def test_written_metadata_reads_back_equal(tmp_path):
    metadata = MixMetadata(vocab_size=256, max_seq_len=64, epochs=2, tokens_per_epoch=[10, 10], seed=3)
    write_mix_metadata(tmp_path, metadata)
    assert read_mix_metadata(tmp_path) == metadata
    meta = SourceMeta(
        source="/data/a.jsonl",
        rows=2,
        tokens=9,
        vocab_size=300,
        files={"tokens.npy": FileRecord(size=146, sha256="ab")},
    )
    write_source_meta(tmp_path, meta)
    assert read_source_meta(tmp_path) == meta


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "metadata.json:1: not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"vocab_size": 0, "max_seq_len": 12}', "bad value for 'vocab_size'"),
        ('{"vocab_size": 256}', "missing required key 'max_seq_len'"),
    ],
)
def test_a_bad_metadata_file_is_one_line_naming_the_file_and_key(tmp_path, content, message):
    (tmp_path / "metadata.json").write_text(content)
    with pytest.raises(FrugalError, match=message) as error:
        read_mix_metadata(tmp_path)
    assert str(tmp_path / "metadata.json") in str(error.value) and "\n" not in str(error.value)


def test_a_directory_without_metadata_is_not_a_mixed_set(tmp_path):
    with pytest.raises(FrugalError, match="not a mixed training set"):
        read_mix_metadata(tmp_path)
