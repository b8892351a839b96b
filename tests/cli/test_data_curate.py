"""`frugal data curate` from the command line, and its output through tokenizer, tokenize, mix and train."""

import json

import pytest

from frugal_lm.cli import data_curate, main


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _source(tmp_path):
    """Synthetic worked-solution rows plus one row for each thing curate removes."""
    assert main(["data", "synth", "--out", "synth", "--tasks", "addition", "--rows", "300", "--heldout-rows", "5"]) == 0
    rows = (tmp_path / "synth/train.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    extra = [
        rows[1],  # an exact duplicate
        json.dumps({**first, "instruction": first["instruction"].upper()}),  # a near-duplicate: case only
        "{broken",
        json.dumps({"instruction": "Tell me a secret.", "response": "As an AI language model, I have none."}),
    ]
    source = tmp_path / "mine.jsonl"
    source.write_text("\n".join(rows + extra) + "\n")
    return source, len(rows) + len(extra)


def test_the_cli_defaults_are_the_librarys():
    from frugal_lm.data.near_dedup import DEFAULT_NUM_PERM, DEFAULT_THRESHOLD
    from frugal_lm.data.quality_filters import DEFAULT_FILTERS, DEFAULT_MAX_REPETITION

    assert data_curate.FILTER_NAMES == DEFAULT_FILTERS
    assert (data_curate.NEAR_DEDUP_THRESHOLD, data_curate.NEAR_DEDUP_PERMS) == (DEFAULT_THRESHOLD, DEFAULT_NUM_PERM)
    assert data_curate.MAX_REPETITION == DEFAULT_MAX_REPETITION


def test_curated_rows_go_through_tokenizer_tokenize_mix_and_train_with_counts_that_add_up(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    source, rows = _source(tmp_path)
    assert main(["data", "curate", "mine.jsonl", "--out", "curated"]) == 0
    kept, removed = _lines(tmp_path / "curated/records.jsonl"), _lines(tmp_path / "curated/removed.jsonl")
    assert len(kept) + len(removed) == rows
    assert sorted(row["step"] for row in removed) == ["bad-row", "exact-duplicate", "near-duplicate", "refusal"]
    near = next(row for row in removed if row["step"] == "near-duplicate")
    assert near["duplicate_of"] == "mine.jsonl:1" and kept[0]["where"] == "mine.jsonl:1"
    assert f"read {rows:,} examples: kept {len(kept):,}" in capsys.readouterr().out
    commands = [
        ["data", "tokenizer", "--vocab-size", "300", "--out", "tok", "curated/records.jsonl"],
        ["data", "tokenize", "--tokenizer", "tok", "--out", "tokenized", "curated/records.jsonl"],
        ["data", "mix", "--tokenized", "tokenized", "--out", "mix", "--context", "192"],
        ["train", "--config", "demo", "data=mix", "out=run", "steps=2"],
    ]
    for command in commands:
        assert main(command) == 0, command
    output = capsys.readouterr().out
    assert f"{len(kept):,} rows" in output and "0 rejected, 0 duplicates" in output
    sources = json.loads((tmp_path / "mix/metadata.json").read_text())["sources"]
    assert [source["rows_available"] for source in sources] == [len(kept)]
    assert (tmp_path / "run").is_dir()


def test_benchmark_overlap_is_removed_or_flagged(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source, rows = _source(tmp_path)
    benchmarks = tmp_path / "benchmarks"
    benchmarks.mkdir()
    (benchmarks / "heldout.jsonl").write_text(source.read_text().splitlines()[7] + "\n")
    assert main(["data", "curate", "mine.jsonl", "--out", "removed", "--benchmarks", "benchmarks"]) == 0
    contaminated = [row for row in _lines(tmp_path / "removed/removed.jsonl") if row["step"] == "contaminated"]
    assert [row["where"] for row in contaminated] == ["mine.jsonl:8"]
    assert "shares an n-gram with synthetic" in contaminated[0]["reason"]
    assert "Benchmarks not found, not checked: gsm8k" in (tmp_path / "removed/report.md").read_text()
    flag = ["data", "curate", "mine.jsonl", "--out", "flagged", "--benchmarks", "benchmarks", "--decontaminate", "flag"]
    assert main(flag) == 0
    flagged = [row for row in _lines(tmp_path / "flagged/records.jsonl") if "contamination" in row]
    assert [(row["where"], row["contamination"]) for row in flagged] == [("mine.jsonl:8", ["synthetic"])]
    assert "(1 flagged as contaminated)" in capsys.readouterr().out


def test_switches_turn_steps_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source, rows = _source(tmp_path)
    assert (
        main(["data", "curate", "mine.jsonl", "--out", "all", "--no-exact-dedup", "--no-near-dedup", "--no-filters"])
        == 0
    )
    assert len(_lines(tmp_path / "all/records.jsonl")) == rows - 1  # only the broken line goes
    assert main(["data", "curate", "mine.jsonl", "--out", "some", "--no-filter", "refusal,echo"]) == 0
    assert "refusal" not in {row["step"] for row in _lines(tmp_path / "some/removed.jsonl")}


def test_verified_near_dedup_writes_only_the_usual_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _source(tmp_path)
    assert main(["data", "curate", "mine.jsonl", "--out", "plain"]) == 0
    assert main(["data", "curate", "mine.jsonl", "--out", "verified", "--near-dedup-verify"]) == 0
    names = sorted(path.name for path in (tmp_path / "verified").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "plain").iterdir())  # the scratch file is gone
    report = json.loads((tmp_path / "verified/report.json").read_text())
    assert report["settings"]["near_dedup_verify"] is True


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max-tokens", "10"], "--max-tokens and --tokenizer go together"),
        (["--no-filter", "spelling"], "--no-filter spelling: unknown filter"),
        (["--near-dedup-threshold", "1.5"], "--near-dedup-threshold must be between 0 and 1"),
        (["--benchmarks", "nowhere"], "--benchmarks nowhere: no such directory"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(tmp_path, capsys, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    _source(tmp_path)
    capsys.readouterr()
    assert main(["data", "curate", "mine.jsonl", "--out", "out", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_foreign_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _source(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes/todo.txt").write_text("mine")
    assert main(["data", "curate", "mine.jsonl", "--out", "notes"]) == 2
    assert "was written by something else" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_curate_reads_the_formats_people_have_and_accounts_for_every_example(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    alpaca = [
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, and move."},
        {"instruction": "Translate to French.", "input": "Good morning, everyone", "output": "Bonjour à tous."},
        {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well, sleep, and move."},
    ]
    (tmp_path / "alpaca.json").write_text(json.dumps(alpaca))  # a JSON array, as Alpaca publishes it
    sharegpt = {
        "conversations": [
            {"from": "human", "value": "What is the capital of France?"},
            {"from": "gpt", "value": "Paris is the capital of France."},
            {"from": "human", "value": "Look up its population."},
            {"from": "function_call", "value": '{"name": "search", "arguments": {"q": "Paris"}}'},
        ]
    }
    (tmp_path / "chats.jsonl").write_text(json.dumps(sharegpt) + "\n")
    gsm8k = {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "3 + 4 = 7 apples.\n#### 7"}
    (tmp_path / "gsm8k.jsonl").write_text(json.dumps(gsm8k) + "\n")
    assert main(["data", "curate", "alpaca.json", "chats.jsonl", "gsm8k.jsonl", "--out", "curated"]) == 0
    kept, removed = _lines(tmp_path / "curated/records.jsonl"), _lines(tmp_path / "curated/removed.jsonl")
    assert [(row["where"], row["step"], row["reason"]) for row in removed] == [
        ("alpaca.json:row 3", "exact-duplicate", "the same text as an earlier row"),
        ("chats.jsonl:1 turn 2", "skipped", "tool: the assistant turn calls a tool"),
    ]
    assert "Good morning, everyone" in kept[1]["instruction"]  # Alpaca's input joins the instruction
    assert kept[2]["response"] == "Paris is the capital of France."
    assert kept[3]["condition"] == "cot" and kept[3]["response"].endswith("#### 7")
    report = json.loads((tmp_path / "curated/report.json").read_text())
    assert {name: counts["format"] for name, counts in report["sources"].items()} == {
        "alpaca.json": "alpaca",
        "chats.jsonl": "sharegpt",
        "gsm8k.jsonl": "question-answer",
    }
    assert all(c["read"] == c["bad_rows"] + sum(c["removed"].values()) + c["kept"] for c in report["sources"].values())
    assert report["total"]["read"] == len(kept) + len(removed) == 6


def test_a_source_inside_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _source(tmp_path)
    assert main(["data", "curate", "mine.jsonl", "--out", "curated"]) == 0
    assert main(["data", "curate", "curated/records.jsonl", "--out", "curated"]) == 2
    assert "curated/records.jsonl is inside --out curated" in capsys.readouterr().err
    assert (tmp_path / "curated/records.jsonl").is_file()
