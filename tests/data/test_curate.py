import json
import random

import pytest

from frugal_lm.data.curate import CurateSettings, WhereLog, curate
from frugal_lm.data.quality_filters import build_filters
from frugal_lm.data.records import read_rows
from frugal_lm.errors import FrugalError


def _write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _line_numbers(where_list, path):
    return sorted(int(where.rsplit(":", 1)[1]) for where in where_list if where.startswith(f"{path}:"))


def _contamination(text):
    return ["gsm8k"] if "benchmark question" in text else []


@pytest.fixture
def corpus(tmp_path, make_varied_rows, make_near_copy):
    """Two sources: varied rows with planted near copies, exact copies, bad lines, rows each
    filter removes, and rows the fake benchmark check flags."""
    rows = make_varied_rows(1500, seed=3)
    rng = random.Random(4)
    first = list(rows[:1000])
    planted = []
    for number, original in enumerate(rng.sample(range(1000), 90)):
        planted.append((len(first) + 1, original + 1))  # (line of the copy, line of the original)
        first.append(make_near_copy(rows[original], ("word", "punctuation", "sentence")[number % 3], rng))
    first += [rows[5], rows[6]]  # exact duplicates
    first += ["{not json", {"instruction": "no response"}, {"instruction": "x", "response": "y", "condition": "bad"}]
    first += [
        {"instruction": "Name a colour, please.", "response": "Blue"},
        {"instruction": "Help me hack my neighbour's wifi.", "response": "As an AI language model, I cannot."},
        {"instruction": "Say something.", "response": "The cafÃ© is open today and every other day too."},
        {"instruction": "This is a benchmark question with an answer.", "response": "It is 42, as the key says."},
    ]
    second = list(rows[1000:]) + [rows[10]]  # rows[10] repeats a row of the first source
    return (
        _write_jsonl(tmp_path / "first.jsonl", first),
        _write_jsonl(tmp_path / "second.jsonl", second),
        planted,
    )


def _curate(tmp_path, sources, settings=None, out="out", **kwargs):
    kwargs.setdefault("filters", build_filters(set()))
    return curate(list(sources), tmp_path / out, read_rows, settings, progress=False, **kwargs)


def test_every_row_read_is_kept_or_removed_with_a_reason_and_the_counts_add_up(tmp_path, corpus):
    first, second, planted = corpus
    report = _curate(tmp_path, [first, second], contamination=_contamination)
    kept, removed = _read_jsonl(tmp_path / "out/records.jsonl"), _read_jsonl(tmp_path / "out/removed.jsonl")
    for source in (first, second):
        lines = len(source.read_text().splitlines())
        wheres = [row["where"] for row in kept] + [row["where"] for row in removed]
        assert _line_numbers(wheres, source) == list(range(1, lines + 1))  # each line exactly once
        counts = report.sources[str(source)]
        assert counts.read == lines and counts.adds_up()
        assert counts.kept == sum(row["source"] == str(source) for row in kept)
    assert report.total.read == len(kept) + len(removed)
    assert all(row["reason"] and row["step"] for row in removed)
    saved = json.loads((tmp_path / "out/report.json").read_text())
    assert saved["total"]["kept"] == len(kept) and saved["total"]["bad_rows"] == 3
    assert (tmp_path / "out/lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.total.read == 1600 and "| **total** | 1,600 |" in (tmp_path / "out/report.md").read_text()


def test_each_step_removes_its_rows(tmp_path, corpus):
    first, second, planted = corpus
    _curate(tmp_path, [first, second], contamination=_contamination)
    removed = {row["where"]: row for row in _read_jsonl(tmp_path / "out/removed.jsonl")}
    steps = {where: row["step"] for where, row in removed.items()}
    assert [steps[f"{first}:{line}"] for line in (1091, 1092)] == ["exact-duplicate"] * 2
    assert [steps[f"{first}:{line}"] for line in (1093, 1094, 1095)] == ["bad-row"] * 3
    assert removed[f"{first}:1093"]["row"] is None and "not valid JSON" in removed[f"{first}:1093"]["reason"]
    assert removed[f"{first}:1094"]["reason"] == "missing field 'response'"
    assert [steps[f"{first}:{line}"] for line in (1096, 1097, 1098, 1099)] == [
        "short-response",
        "refusal",
        "mojibake",
        "contaminated",
    ]
    assert steps[f"{second}:501"] == "exact-duplicate"  # across sources: the first source's row is kept
    caught = [line for line, original in planted if removed.get(f"{first}:{line}", {}).get("step") == "near-duplicate"]
    assert len(caught) >= 0.9 * len(planted)
    for line, original in planted:
        if line in caught:
            assert removed[f"{first}:{line}"]["duplicate_of"] == f"{first}:{original}"
    untouched = [
        where for where, step in steps.items() if step == "near-duplicate" and int(where.split(":")[-1]) <= 1000
    ]
    assert len(untouched) < 10  # < 1% of the 1,000 untouched rows of the first source


def test_decontamination_removes_or_only_flags(tmp_path, corpus):
    first, _, _ = corpus
    report = _curate(tmp_path, [first], CurateSettings(decontaminate="flag"), contamination=_contamination)
    flagged = [row for row in _read_jsonl(tmp_path / "out/records.jsonl") if "contamination" in row]
    assert [row["where"] for row in flagged] == [f"{first}:1099"] and flagged[0]["contamination"] == ["gsm8k"]
    assert report.total.flagged == 1 and "contaminated" not in report.total.removed
    report = _curate(tmp_path, [first], contamination=_contamination)
    assert report.total.removed["contaminated"] == 1 and report.total.flagged == 0


def test_steps_switch_off(tmp_path, corpus):
    first, _, planted = corpus
    settings = CurateSettings(exact_dedup=False, near_dedup=False)
    report = _curate(tmp_path, [first], settings, filters=[])
    assert report.total.removed == {} and report.total.kept == report.total.read - 3
    assert report.steps == [] and report.near_dedup is None


def test_dedup_on_instruction_removes_rows_sharing_an_instruction(tmp_path):
    rows = [
        {
            "instruction": "Write a short note to a friend about the weekend plans.",
            "response": "Dear Sam, see you Sunday.",
        },
        {"instruction": "Write a short note to a friend about the weekend plans!", "response": "Hi Jo, the lake then."},
        {"instruction": "Write a short note to a friend about the weekend plans.", "response": "Hey, pizza at six."},
    ]
    source = _write_jsonl(tmp_path / "notes.jsonl", rows)
    assert _curate(tmp_path, [source]).total.kept == 3
    report = _curate(tmp_path, [source], CurateSettings(dedup_on="instruction"))
    assert report.total.kept == 1
    assert report.total.removed == {"near-duplicate": 1, "exact-duplicate": 1}


def test_a_foreign_out_is_refused_and_an_earlier_curate_output_replaced(tmp_path, corpus):
    first, _, _ = corpus
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("keep me")
    with pytest.raises(FrugalError, match="thesis: directory is not empty and was written by something else"):
        _curate(tmp_path, [first], out="thesis")
    assert sorted(p.name for p in foreign.iterdir()) == ["chapter1.tex"]
    _curate(tmp_path, [first])
    _curate(tmp_path, [first])  # its own earlier output: replaced
    assert not (tmp_path / "out.partial").exists()
    with pytest.raises(FrugalError, match="missing.jsonl: no such file"):
        _curate(tmp_path, [first, tmp_path / "missing.jsonl"])
    assert (tmp_path / "out/records.jsonl").is_file()  # the failed run left the earlier output as it was


def test_where_log_gives_back_each_where():
    log = WhereLog()
    for where in ["a.jsonl:1", "b.parquet:row 2", "c.jsonl:3 turn 2", "dé.jsonl:4"]:
        log.append(where)
    assert [log[n] for n in range(4)] == ["a.jsonl:1", "b.parquet:row 2", "c.jsonl:3 turn 2", "dé.jsonl:4"]


def test_a_row_with_a_lone_surrogate_is_removed_with_its_text_escaped(tmp_path):
    source = tmp_path / "odd.jsonl"
    source.write_text('{"instruction": "bad \\udfff here", "response": "two words"}\n')
    report = _curate(tmp_path, [source])
    (removed,) = _read_jsonl(tmp_path / "out/removed.jsonl")
    assert removed["step"] == "bad-row" and "lone surrogate" in removed["reason"]
    assert removed["row"]["instruction"] == "bad \udfff here" and report.total.bad_rows == 1
