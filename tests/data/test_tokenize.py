import json
import os

import numpy as np
import pytest

from frugal_lm.data.records import Record
from frugal_lm.data.synth import write_synthetic
from frugal_lm.data.tokenize import output_dir_for, smallest_token_dtype, tokenize_sources
from frugal_lm.data.tokenizer import load_tokenizer, train_tokenizer
from frugal_lm.errors import FrugalError


@pytest.fixture
def setup(tmp_path):
    paths = write_synthetic(tmp_path / "synth", ["addition", "sorting"], 100, 10, seed=0)
    texts = (line for path in paths.values() for row in map(json.loads, path.read_text().splitlines())
             for line in (row["instruction"], row["response"]))
    train_tokenizer(texts, vocab_size=320).save(tmp_path / "tok")
    return tmp_path, paths


def test_arrays_decode_back_to_the_records(setup):
    tmp_path, paths = setup
    result, = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    folder = result.output
    tokens = np.load(folder / "tokens.npy", allow_pickle=False)
    assert tokens.dtype == np.uint16 and result.rows == 100
    index = {f: np.load(folder / f"{f}.npy", allow_pickle=False) for f in ("inst_start", "inst_len", "resp_start", "resp_len")}
    tokenizer = load_tokenizer(tmp_path / "tok")
    first = json.loads(paths["train"].read_text().splitlines()[0])
    expected = tokenizer.encode_records([Record(first["instruction"], first["response"], ("direct",))])[0]
    s, n = index["inst_start"][0], index["inst_len"][0]
    assert tokens[s:s + n].tolist() == expected[0]
    s, n = index["resp_start"][0], index["resp_len"][0]
    assert tokens[s:s + n].tolist() == expected[1]
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["rows"], meta["rejected"], meta["duplicates"], meta["tokens"]) == (100, 0, 0, len(tokens))


def test_fail_names_the_row_and_writes_nothing_skip_quarantines(setup):
    tmp_path, paths = setup
    source = paths["train"]
    lines = source.read_text().splitlines()
    source.write_text("\n".join([lines[0], "{broken", lines[1], lines[0], json.dumps({"instruction": "q"})]) + "\n")
    with pytest.raises(FrugalError, match=f"{source}:2: not valid JSON"):
        tokenize_sources(tmp_path / "tok", tmp_path / "out", [source], on_error="fail")
    assert not any((p / "meta.json").exists() for p in (tmp_path / "out").iterdir())  # no source output
    result, = tokenize_sources(tmp_path / "tok", tmp_path / "out", [source], on_error="skip")
    assert (result.rows, result.rejected, result.duplicates) == (2, 2, 1)
    rejected = [json.loads(line) for line in (result.output / "rejected.jsonl").read_text().splitlines()]
    assert [r["where"] for r in rejected] == [f"{source}:2", f"{source}:5"]
    assert rejected[1]["reason"] == "missing field 'response'"


def test_incremental_skips_unchanged_and_removes_vanished(setup):
    tmp_path, paths = setup
    out = tmp_path / "out"
    first = tokenize_sources(tmp_path / "tok", out, [paths["train"], paths["heldout"]])
    assert not any(r.skipped_unchanged for r in first)
    again = tokenize_sources(tmp_path / "tok", out, [paths["train"], paths["heldout"]])
    assert all(r.skipped_unchanged for r in again)
    with open(paths["heldout"], "a") as handle:
        handle.write(json.dumps({"instruction": "new", "response": "row"}) + "\n")
    os.utime(paths["heldout"], ns=(1, 1))
    changed = {r.source.name: r for r in tokenize_sources(tmp_path / "tok", out, [paths["train"], paths["heldout"]])}
    assert changed["train.jsonl"].skipped_unchanged and not changed["heldout.jsonl"].skipped_unchanged
    assert changed["heldout.jsonl"].rows == 11
    tokenize_sources(tmp_path / "tok", out, [paths["train"]])
    assert not output_dir_for(out, paths["heldout"]).exists() and output_dir_for(out, paths["train"]).exists()


def test_dtype_selection():
    assert smallest_token_dtype(65536) == np.uint16
    assert smallest_token_dtype(65537) == np.uint32
    assert smallest_token_dtype(151808) == np.uint32
