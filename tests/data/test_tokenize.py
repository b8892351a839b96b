import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

from frugal_lm.cli import main
from frugal_lm.data import arrays, tokenize
from frugal_lm.data.mix import mix
from frugal_lm.data.records import Record
from frugal_lm.data.synth import write_synthetic
from frugal_lm.data.tokenize import encode_layout, output_dir_for, smallest_token_dtype, tokenize_sources
from frugal_lm.data.tokenizer import TextTokenizer, load_tokenizer, train_tokenizer
from frugal_lm.errors import FrugalError

INDEX = ("inst_start", "inst_len", "resp_start", "resp_len")


@pytest.fixture
def setup(tmp_path):
    paths = write_synthetic(tmp_path / "synth", ["addition", "sorting"], 100, 10, seed=0)
    texts = (
        line
        for path in paths.values()
        for row in map(json.loads, path.read_text().splitlines())
        for line in (row["instruction"], row["response"])
    )
    train_tokenizer(texts, vocab_size=320).save(tmp_path / "tok")
    return tmp_path, paths


def test_arrays_decode_back_to_the_records(setup):
    tmp_path, paths = setup
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    folder = result.output
    tokens = np.load(folder / "tokens.npy", allow_pickle=False)
    assert tokens.dtype == np.uint16 and result.rows == 100
    index = {
        f: np.load(folder / f"{f}.npy", allow_pickle=False)
        for f in ("inst_start", "inst_len", "resp_start", "resp_len")
    }
    tokenizer = load_tokenizer(tmp_path / "tok")
    first = json.loads(paths["train"].read_text().splitlines()[0])
    expected = tokenizer.encode_records([Record(first["instruction"], first["response"], (first["condition"],))])[0]
    s, n = index["inst_start"][0], index["inst_len"][0]
    assert tokens[s : s + n].tolist() == expected[0]
    s, n = index["resp_start"][0], index["resp_len"][0]
    assert tokens[s : s + n].tolist() == expected[1]
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
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [source], on_error="skip")
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


def read_source(folder):
    tokens = np.load(folder / "tokens.npy", allow_pickle=False)
    index = {f: np.load(folder / f"{f}.npy", allow_pickle=False) for f in INDEX}
    return tokens, [
        (tokens[s : s + n].tolist(), tokens[t : t + m].tolist()) for s, n, t, m in zip(*(index[f] for f in INDEX))
    ]


# Rows here have 16-18 characters, so a 60-character cap closes a batch at its 4th row.
@pytest.mark.parametrize(
    "batch_rows, batch_chars, largest_batch", [(7, 10**9, 7), (10**9, 60, 4)], ids=["row-cap", "char-cap"]
)
def test_every_row_matches_encode_records_across_batches_and_duplicates(
    setup, monkeypatch, batch_rows, batch_chars, largest_batch
):
    """Small batches, so rows, duplicates and condition tags straddle batch boundaries."""
    tmp_path, _ = setup
    monkeypatch.setattr(tokenize, "BATCH_ROWS", batch_rows)
    monkeypatch.setattr(tokenize, "BATCH_CHARS", batch_chars)
    batch_sizes = []
    monkeypatch.setattr(
        tokenize, "encode_layout", lambda tok, records: batch_sizes.append(len(records)) or encode_layout(tok, records)
    )
    rows = [
        {
            "instruction": f"what is {i % 30} + {i % 2}?",
            "response": str(i % 30 + i % 2),
            "condition": ["direct", "cot,noisy", "synth"][i % 3],
        }
        for i in range(100)
    ]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [source])
    first_seen, keys = [], set()
    for row in rows:  # brute force: keep the first occurrence of each (instruction, response)
        if (row["instruction"], row["response"]) not in keys:
            keys.add((row["instruction"], row["response"]))
            first_seen.append(
                Record(row["instruction"], row["response"], tuple(t.strip() for t in row["condition"].split(",")))
            )
    expected = load_tokenizer(tmp_path / "tok").encode_records(first_seen)
    tokens, pairs = read_source(result.output)
    assert pairs == expected and len(tokens) == sum(len(a) + len(b) for a, b in expected)
    assert (result.rows, result.duplicates) == (len(first_seen), 100 - len(first_seen)) and result.duplicates > 0
    assert len(batch_sizes) > 3 and max(batch_sizes) == largest_batch


# One row of each bad kind, at line 3 (line 2 is blank: line numbers count every line).
BAD_ROWS = [
    (b"{broken", "not valid JSON (Expecting property name enclosed in double quotes at column 2)"),
    (b'{"instruction": "\xff", "response": "a"}', "not valid UTF-8 (byte 18)"),
    (b"[1, 2]", "expected an object with instruction and response, got list"),
    (b'{"instruction": "q"}', "missing field 'response'"),
    (b'{"instruction": "  ", "response": "a"}', "field 'instruction' is empty"),
    (b'{"instruction": "q", "response": 2}', "field 'response' must be a string, got int"),
    (
        b'{"instruction": "\\udfff", "response": "ok"}',  # JSON's escape for a lone surrogate
        "field 'instruction' holds a lone surrogate '\\udfff' at character 1 (not valid Unicode)",
    ),
    (
        b'{"instruction": "q", "response": "a", "condition": "direct,chatty"}',
        "unknown condition tag 'chatty'; known: direct, cot, noisy, synth",
    ),
    (
        b'{"instruction": "q", "response": "a", "condition": 3}',
        "field 'condition' must be a string of comma-separated tags, got int",
    ),
    (
        b'{"instruction": "' + b"x" * 1_000_001 + b'", "response": "a"}',
        "field 'instruction' has 1,000,001 characters, over the cap of 1,000,000",
    ),
]


@pytest.mark.parametrize("line, reason", BAD_ROWS, ids=[r.split(" (")[0][:30] for _, r in BAD_ROWS])
def test_each_bad_row_kind_through_validate_fail_and_skip(setup, capsys, line, reason):
    tmp_path, _ = setup
    source = tmp_path / "data.jsonl"
    good = json.dumps({"instruction": "What is 1 + 1?", "response": "2"}).encode()
    source.write_bytes(good + b"\n\n" + line + b"\n" + good.replace(b"1 + 1", b"2 + 2") + b"\n")
    out = tmp_path / "out"
    assert main(["data", "validate", str(source)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{source}:3: {reason}"]

    arguments = ["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--out", str(out), str(source)]
    assert main(arguments) == 1  # --on-error fail is the default
    assert f"{source}:3: {reason}" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".frugal_output.json", "tokenizer"]  # no output, no scratch

    assert main([*arguments, "--on-error", "skip"]) == 0
    folder = output_dir_for(out, source)
    quarantined = [json.loads(row) for row in (folder / "rejected.jsonl").read_text().splitlines()]
    assert [(q["where"], q["reason"]) for q in quarantined] == [(f"{source}:3", reason)]
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["rows"], meta["rejected"], meta["duplicates"]) == (2, 1, 0)
    assert "2 rows" in capsys.readouterr().out and len(read_source(folder)[1]) == 2


def test_a_new_tokenizer_retokenizes_every_source(setup):
    tmp_path, paths = setup
    tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    texts = (
        t
        for row in map(json.loads, paths["train"].read_text().splitlines())
        for t in (row["instruction"], row["response"])
    )
    train_tokenizer(texts, vocab_size=300).save(tmp_path / "tok")
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    assert not result.skipped_unchanged
    assert json.loads((result.output / "meta.json").read_text())["vocab_size"] == 300


def big_vocab_tokenizer(directory):
    """A byte-level BPE with 70,000 tokens whose special tokens sit above 65,535, built from
    a vocabulary rather than trained (training one that large takes minutes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from frugal_lm.data.tokenizer import DEFAULT_CONDITION_TOKENS, DEFAULT_SPECIAL_TOKENS

    vocab = {byte: index for index, byte in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    vocab.update({f"<filler_{i}>": len(vocab) + i for i in range(65_536 - len(vocab))})
    specials = [*DEFAULT_SPECIAL_TOKENS.values(), *DEFAULT_CONDITION_TOKENS.values()]
    vocab.update({f"<filler_high_{i}>": 65_536 + i for i in range(70_000 - 65_536 - len(specials))})
    vocab.update({token: len(vocab) + i for i, token in enumerate(specials)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.add_special_tokens(specials)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    roles = {role: tokenizer.token_to_id(t) for role, t in DEFAULT_SPECIAL_TOKENS.items()}
    conditions = {tag: tokenizer.token_to_id(t) for tag, t in DEFAULT_CONDITION_TOKENS.items()}
    TextTokenizer(tokenizer, roles, conditions).save(directory)
    return roles


def test_ids_above_65535_get_uint32_end_to_end(tmp_path):
    roles = big_vocab_tokenizer(tmp_path / "tok")
    assert min(roles.values()) > 65_535
    source = tmp_path / "rows.jsonl"
    source.write_text(json.dumps({"instruction": "abc", "response": "d"}) + "\n")
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [source])
    tokens, pairs = read_source(result.output)
    assert tokens.dtype == np.uint32 and {roles["boq"], roles["eoq"], roles["eoa"]} <= set(tokens.tolist())
    assert pairs == load_tokenizer(tmp_path / "tok").encode_records([Record("abc", "d", ("direct",))])
    mix(tmp_path / "out", tmp_path / "mix")
    mixed = np.load(tmp_path / "mix" / "tokens.npy")
    assert mixed.dtype == np.uint32 and np.array_equal(mixed, tokens)
    assert json.loads((tmp_path / "mix" / "metadata.json").read_text())["vocab_size"] == 70_144  # 274 * 256


def test_background_reader_stops_when_the_consumer_does():
    closed = threading.Event()

    def endless():
        try:
            number = 0
            while True:
                number += 1
                yield number
        finally:
            closed.set()

    reader = tokenize._Background(endless(), depth=2)
    with pytest.raises(KeyError):
        with reader as items:
            assert [next(items) for _ in range(5)] == [1, 2, 3, 4, 5]
            raise KeyError("the consumer failed")
    assert closed.is_set() and not reader.thread.is_alive()

    def failing():
        yield 1
        raise FrugalError("row 2 is bad")

    with pytest.raises(FrugalError, match="row 2 is bad"):
        with tokenize._Background(failing()) as items:
            list(items)


KILL_DURING_ENCODING = """
import os, signal, sys
from frugal_lm.cli import main
from frugal_lm.data import tokenize

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

tokenize.encode_layout = killed
main(sys.argv[1:])
"""


def test_a_killed_runs_scratch_is_cleared_by_the_next_run(setup):
    tmp_path, paths = setup
    out = tmp_path / "out"
    arguments = ["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--out", str(out), str(paths["train"])]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_ENCODING, *arguments], capture_output=True)
    assert killed.returncode == -signal.SIGKILL
    assert any(path.is_file() for path in out.rglob("*.raw"))  # what a killed run leaves
    assert main(arguments) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".frugal_output.json", "tokenizer", output_dir_for(out, paths["train"]).name]
    )


@pytest.mark.parametrize("damage", ["truncate", "same size"])
def test_a_damaged_output_is_rebuilt_not_reported_unchanged(setup, damage):
    tmp_path, paths = setup
    (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    tokens = result.output / "tokens.npy"
    good = tokens.read_bytes()
    if damage == "truncate":
        os.truncate(tokens, len(good) // 2)
    else:
        tokens.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    (again,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    assert not again.skipped_unchanged and tokens.read_bytes() == good
    assert tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])[0].skipped_unchanged


def test_outputs_follow_the_umask(setup):
    tmp_path, paths = setup
    previous = os.umask(0o022)
    try:
        (result,) = tokenize_sources(tmp_path / "tok", tmp_path / "out", [paths["train"]])
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in [result.output, *result.output.iterdir()]}
    assert modes.pop(result.output.name) == 0o755 and set(modes.values()) == {0o644}


def test_the_tokenizer_copy_in_out_can_be_the_tokenizer(setup, capsys):
    tmp_path, paths = setup
    out = tmp_path / "out"
    tokenize_sources(tmp_path / "tok", out, [paths["train"]])
    arguments = ["data", "tokenize", "--tokenizer", str(out / "tokenizer"), "--out", str(out), str(paths["train"])]
    assert main(arguments) == 0  # it used to copy the tokenizer onto itself (shutil.Error)
    assert ": unchanged," in capsys.readouterr().out


def test_a_full_disk_is_a_one_line_error_and_leaves_no_partial_output(setup, capsys, monkeypatch):
    tmp_path, paths = setup
    out = tmp_path / "out"

    def disk_full(self, values):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(arrays.NpyWriter, "write", disk_full)
    code = main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--out", str(out), str(paths["train"])])
    captured = capsys.readouterr()
    last = captured.err.split("\r")[-1]  # after the progress bar tqdm clears
    assert code == 2 and last == f"frugal data: error: {out}: No space left on device\n"
    assert "Traceback" not in captured.out + captured.err
    assert sorted(p.name for p in out.iterdir()) == [".frugal_output.json", "tokenizer"]
