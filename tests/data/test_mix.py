import errno
import hashlib
import json
import os

import numpy as np
import pytest

from frugal_lm.cli import main
from frugal_lm.data import arrays
from frugal_lm.data.loader import LoaderState, MixedDataset, PackedLoader
from frugal_lm.data.mix import longest_example, mix
from frugal_lm.data.synth import write_synthetic
from frugal_lm.data.tokenize import tokenize_sources
from frugal_lm.data.tokenizer import train_tokenizer
from frugal_lm.errors import FrugalError


@pytest.fixture
def tokenized(tmp_path):
    paths = write_synthetic(tmp_path / "synth", ["addition", "reversal"], 120, 20, seed=0)
    texts = (
        t
        for path in paths.values()
        for row in map(json.loads, path.read_text().splitlines())
        for t in (row["instruction"], row["response"])
    )
    train_tokenizer(texts, vocab_size=320).save(tmp_path / "tok")
    tokenize_sources(tmp_path / "tok", tmp_path / "tokenized", [paths["train"], paths["heldout"]])
    return tmp_path


def checksum(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_and_the_trainer_reads_it(tokenized):
    a = mix(tokenized / "tokenized", tokenized / "a", epochs=2, context=64, seed=5)
    mix(tokenized / "tokenized", tokenized / "b", epochs=2, context=64, seed=5)
    mix(tokenized / "tokenized", tokenized / "c", epochs=2, context=64, seed=6)
    assert checksum(tokenized / "a") == checksum(tokenized / "b") != checksum(tokenized / "c")
    assert len(a.tokens_per_epoch) == 2
    metadata = json.loads((tokenized / "a" / "metadata.json").read_text())
    assert metadata["vocab_size"] % 256 == 0 and metadata["max_seq_len"] == 64
    assert metadata["tokenizer_info"]["special_tokens"]["eoa"] == "<|box_end|>"
    dataset = MixedDataset(tokenized / "a")
    batch = PackedLoader(dataset, row_len=64, rows_per_rank=2).batch(LoaderState(0, 0))
    assert batch.n_tokens > 0
    orders = [np.load(tokenized / "a" / f"epoch_{k}" / "inst_start.npy") for k in range(2)]
    assert sorted(orders[0]) == sorted(orders[1]) and not np.array_equal(orders[0], orders[1])


def test_truncate_versus_drop_and_rules(tokenized, tmp_path):
    rules = tmp_path / "mix.yaml"
    rules.write_text(
        "- prefix: train\n  long_context: truncate\n  max_per_file: 50\n  repeat: 2\n"
        "- prefix: heldout\n  long_context: drop\n"
    )
    result = mix(tokenized / "tokenized", tokenized / "m", rules, epochs=1, context=16, seed=0)
    by_name = {s.name: s for s in result.sources}
    assert by_name["train.jsonl"].rows_per_epoch == 100 and by_name["train.jsonl"].truncated > 0
    assert by_name["heldout.jsonl"].dropped_long > 0 and by_name["heldout.jsonl"].truncated == 0
    lengths = (
        np.load(tokenized / "m" / "epoch_0" / "inst_len.npy")
        + np.load(tokenized / "m" / "epoch_0" / "resp_len.npy")
        - 1
    )
    assert lengths.max() <= 16
    report = (tokenized / "m" / "report.md").read_text()
    assert "| train.jsonl |" in report and "repeated" in report


def test_bad_rules_are_named(tokenized, tmp_path):
    rules = tmp_path / "bad.yaml"
    rules.write_text("- prefix: train\n  long_context: squeeze\n")
    with pytest.raises(FrugalError, match="rule 1: bad value for 'long_context'"):
        mix(tokenized / "tokenized", tokenized / "m", rules)
    with pytest.raises(FrugalError, match="no tokenized sources"):
        mix(tmp_path / "nothing", tokenized / "m")


def _sidecar(source, **overrides):
    stat = source.stat()
    check = {
        "source": str(source),
        "source_size": stat.st_size,
        "source_mtime": stat.st_mtime,
        "ngram": 13,
        "benchmarks": {
            "gsm8k": {"test_items": 1319, "contaminated_rows": 3},
            "math500": {"test_items": 500, "contaminated_rows": 1},
        },
        "contaminated_rows": 4,
        "rows": 120,
        **overrides,
    }
    (source.parent / f"{source.name}.contamination.json").write_text(json.dumps(check))


def test_contamination_status_per_source(tokenized):
    synth = tokenized / "synth"
    mix(tokenized / "tokenized", tokenized / "m")
    assert "| not checked |" in (tokenized / "m" / "report.md").read_text()
    _sidecar(synth / "train.jsonl")  # describes the tokenized file
    _sidecar(synth / "heldout.jsonl", source_size=(synth / "heldout.jsonl").stat().st_size + 1)  # another version
    result = mix(tokenized / "tokenized", tokenized / "m")
    by_name = {s.name: s.contamination for s in result.sources}
    assert by_name["train.jsonl"]["status"] == "checked" and by_name["heldout.jsonl"]["status"] == "stale"
    assert by_name["train.jsonl"]["benchmarks"]["gsm8k"] == {"test_items": 1319, "contaminated_rows": 3}
    report = (tokenized / "m" / "report.md").read_text()
    assert "| 4 of 120 rows |" in report and "| 4 of 120 rows, stale |" in report
    assert (
        "- train.jsonl: 13-gram check, 4 of 120 rows contaminated: gsm8k 3 rows (1,319 test items), "
        "math500 1 rows (500 test items)"
    ) in report
    assert "- heldout.jsonl: stale; 13-gram check" in report
    metadata = json.loads((tokenized / "m" / "metadata.json").read_text())
    assert [s["contamination"]["status"] for s in metadata["sources"]] == ["stale", "checked"]  # sorted folders
    # Touching the source after the check (same size) makes it stale too.
    _sidecar(synth / "heldout.jsonl", source_mtime=(synth / "heldout.jsonl").stat().st_mtime - 5)
    assert {s.name: s.contamination["status"] for s in mix(tokenized / "tokenized", tokenized / "m").sources} == {
        "train.jsonl": "checked",
        "heldout.jsonl": "stale",
    }
    (synth / "train.jsonl.contamination.json").write_text('{"ngram": 13}')
    with pytest.raises(FrugalError, match=r"train.jsonl.contamination.json: not a contamination report"):
        mix(tokenized / "tokenized", tokenized / "m")


def test_tokens_are_the_sources_concatenated(tokenized):
    mix(tokenized / "tokenized", tokenized / "m")
    folders = sorted(p for p in (tokenized / "tokenized").iterdir() if (p / "meta.json").is_file())
    expected = np.concatenate([np.load(folder / "tokens.npy") for folder in folders])
    reference = tokenized / "reference.npy"
    np.save(reference, expected)  # what the mix wrote before it streamed: np.save of everything at once
    assert (tokenized / "m" / "tokens.npy").read_bytes() == reference.read_bytes()


def test_truncate_and_drop_row_by_row(tokenized, tmp_path):
    """Every row checked by hand: truncate keeps the instruction and cuts the response to
    fill the context exactly; drop removes the row; rows whose instruction alone fills the
    context are dropped either way."""
    context = 16
    rules = tmp_path / "mix.yaml"
    rules.write_text("- prefix: train\n  long_context: truncate\n- prefix: heldout\n  long_context: drop\n")
    result = mix(tokenized / "tokenized", tokenized / "m", rules, epochs=1, context=context, seed=0)
    expected, counts = [], {}
    for folder in sorted((tokenized / "tokenized").glob("*-*")):
        name = json.loads((folder / "meta.json").read_text())["source"].rsplit("/", 1)[1]
        index = {f: np.load(folder / f"{f}.npy") for f in ("inst_start", "inst_len", "resp_start", "resp_len")}
        truncated = dropped = 0
        for _, inst_len, _, resp_len in zip(*index.values()):
            if inst_len + resp_len - 1 <= context:
                expected.append((int(inst_len), int(resp_len)))
            elif name == "train.jsonl" and inst_len < context:
                truncated += 1
                expected.append((int(inst_len), context + 1 - int(inst_len)))
            else:
                dropped += 1
        counts[name] = (truncated, dropped)
    by_name = {s.name: (s.truncated, s.dropped_long) for s in result.sources}
    assert by_name == counts and counts["train.jsonl"][0] > 0 and counts["heldout.jsonl"][1] > 0
    got = sorted(
        zip(
            np.load(tokenized / "m" / "epoch_0" / "inst_len.npy").tolist(),
            np.load(tokenized / "m" / "epoch_0" / "resp_len.npy").tolist(),
        )
    )
    assert got == sorted(expected)


def test_mix_never_writes_over_its_own_input(tokenized):
    before = checksum(tokenized / "tokenized")
    for out in (tokenized / "tokenized", tokenized):  # the input itself, and the folder holding it
        with pytest.raises(FrugalError, match=f"--out {out}: directory is not empty"):
            mix(tokenized / "tokenized", out)
    assert checksum(tokenized / "tokenized") == before
    assert not (tokenized / "tokenized.partial").exists()
    assert not tokenized.with_name(tokenized.name + ".partial").exists()


def _source_folder(tokenized):
    return sorted(p for p in (tokenized / "tokenized").iterdir() if (p / "meta.json").is_file())[0]


def _truncate_tokens(folder):
    os.truncate(folder / "tokens.npy", (folder / "tokens.npy").stat().st_size // 2)


DAMAGE = {
    "truncated tokens.npy": (_truncate_tokens, "tokens.npy has"),
    "missing index file": (lambda folder: (folder / "resp_len.npy").unlink(), "resp_len.npy is missing"),
    "bad meta.json": (lambda folder: (folder / "meta.json").write_text("{not json"), "meta.json:1: not valid JSON"),
    "missing meta.json": (lambda folder: (folder / "meta.json").unlink(), "meta.json: no such file"),
    "meta.json without counts": (
        lambda folder: (folder / "meta.json").write_text("{}"),
        "meta.json: missing required key 'source'",
    ),
    "meta.json with a negative count": (
        lambda folder: (folder / "meta.json").write_text(
            json.dumps({**json.loads((folder / "meta.json").read_text()), "rows": -1})
        ),
        "meta.json: bad value for 'rows'",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_tokenized_source_is_a_one_line_error_and_writes_nothing(tokenized, capsys, damage):
    action, reason = DAMAGE[damage]
    folder = _source_folder(tokenized)
    action(folder)
    out = tokenized / "m"
    code = main(["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "Traceback" not in captured.out + captured.err
    assert f"{folder}: damaged tokenized source: {reason}" in captured.err
    assert not out.exists() and not (tokenized / "m.partial").exists()


@pytest.mark.parametrize(
    "rule, key",
    [("repeat: -1", "repeat"), ("max_per_file: -5", "max_per_file"), ("min_response_len: -1", "min_response_len")],
)
def test_negative_rule_values_are_named(tokenized, tmp_path, capsys, rule, key):
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"- prefix: train\n  {rule}\n")
    code = main(
        ["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(tokenized / "m"), "--mix", str(rules)]
    )
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert f"{rules}: rule 1: bad value for '{key}'" in error and "greater than or equal to 0" in error


def test_a_full_disk_is_a_one_line_error_and_removes_the_partial_mix(tokenized, capsys, monkeypatch):
    def disk_full(self, values):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(arrays.NpyWriter, "write", disk_full)
    out = tokenized / "m"
    code = main(["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(out)])
    assert code == 2 and capsys.readouterr().err == f"frugal data: error: {out}: No space left on device\n"
    assert not out.exists() and not (tokenized / "m.partial").exists()


def test_a_context_that_drops_every_row_fails_at_mix_naming_the_context_needed(tokenized, capsys):
    out = tokenized / "m"
    code = main(["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(out), "--context", "10"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1 and "Tokens per epoch" not in captured.out
    assert (
        "the mix would hold no rows: of 140 rows, 140 longer than --context 10 (the shortest needs --context"
        in captured.err
    )
    assert not out.exists() and not (tokenized / "m.partial").exists()
    shortest = int(captured.err.split("the shortest needs --context ")[1].split(";")[0])
    assert (
        main(
            ["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(out), "--context", str(shortest)]
        )
        == 0
    )  # the number given is enough for one row


def test_rules_that_leave_no_rows_are_refused(tokenized, tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- prefix: ''\n  repeat: 0\n")
    code = main(
        ["data", "mix", "--tokenized", str(tokenized / "tokenized"), "--out", str(tokenized / "m"), "--mix", str(rules)]
    )
    assert code == 2 and "of 140 rows, 140 left out by the rules' repeat or max_per_file" in capsys.readouterr().err


def test_longest_example_is_the_context_that_keeps_every_row(tokenized):
    source = tokenized / "tokenized"
    longest = longest_example(source)
    whole = mix(source, tokenized / "whole", None, 1, longest, 0)
    assert sum(s.dropped_long + s.truncated for s in whole.sources) == 0
    short = mix(source, tokenized / "short", None, 1, longest - 1, 0)
    assert sum(s.dropped_long + s.truncated for s in short.sources) >= 1
    with pytest.raises(FrugalError, match="no tokenized sources"):
        longest_example(tokenized / "nothing")
