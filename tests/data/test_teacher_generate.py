"""`generate` against the fault-injecting fake teacher on 127.0.0.1: every unit ends once, resume,
verification, budget, parsing."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from frugal_lm.data.readers import ReadOptions
from frugal_lm.data.teacher.client import RetryPolicy
from frugal_lm.data.teacher.fake_teacher import FakeTeacher
from frugal_lm.data.teacher.generate import GenerateSettings, generate
from frugal_lm.errors import FrugalError

FAST = RetryPolicy(max_retries=12, base_delay=0.005, max_delay=0.05, request_timeout=0.3)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def settings(teacher, inputs, out, **overrides):
    return GenerateSettings(
        **{"base_url": teacher.base_url, "model": "teacher-1", "inputs": inputs, "out": out, "policy": FAST,
           "concurrency": 16, **overrides}
    )  # fmt: skip


def test_500_rows_against_30_percent_failures_all_end_as_records_once(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": f"question {index}"} for index in range(500)])
    faults = {"429": 0.1, "500": 0.1, "stall": 0.02, "cut": 0.04, "invalid_json": 0.04}
    with FakeTeacher(faults=faults, stall_s=0.4, seed=3) as teacher:
        report = generate(settings(teacher, [source], tmp_path / "out", concurrency=32), None)
    records = read_lines(tmp_path / "out" / "records.jsonl")
    assert sorted(record["where"] for record in records) == sorted(f"{source}:{line}" for line in range(1, 501))
    assert all(record["response"] == f"echo: {record['instruction']}" for record in records)
    assert (report.units, report.kept, report.failed, report.rejected, report.pending) == (500, 500, 0, 0, 0)
    retries = json.loads((tmp_path / "out" / "report.json").read_text())["retries"]
    # Every fault served cost one retry (a reply slowed past the client's timeout by the load is one
    # more, counted as a timeout, whatever the server meant to send).
    faults_served = sum(count for fate, count in teacher.served.items() if fate != "ok")
    assert set(retries) == {"429", "5xx", "timeout", "connection", "malformed"}
    assert sum(retries.values()) >= faults_served and retries["timeout"] >= teacher.served["stall"]


def test_a_record_is_canonical_with_teacher_usage_params_and_source(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": "a b", "condition": "cot", "category": "math"}])
    with FakeTeacher() as teacher:
        run = settings(teacher, [source], tmp_path / "out", system="Be brief.", temperature=0.2, max_tokens=50)
        generate(run, None)
    [record] = read_lines(tmp_path / "out" / "records.jsonl")
    assert record["instruction"] == "a b" and record["response"] == "echo: a b"
    assert record["condition"] == "cot,synth" and record["category"] == "math" and record["teacher"] == "teacher-1"
    assert record["usage"] == {"prompt_tokens": 2, "completion_tokens": 3}
    assert record["params"]["temperature"] == 0.2 and record["params"]["max_tokens"] == 50
    assert record["params"]["sample"] == 0 and len(record["params"]["system_sha256"]) == 64
    assert (record["source"], record["where"]) == (str(source), f"{source}:1")


def gsm8k_teacher(prompt):
    """Right for even a, wrong (off by one) for odd a: its correct generations are known."""
    a, b = map(int, re.findall(r"\d+", prompt)[:2])
    answer = a + b if a % 2 == 0 else a + b + 1
    return f"{a} plus {b} makes {answer:,} in all.\n#### {answer:,}"


def test_verify_final_answer_keeps_exactly_the_correct_generations(tmp_path):
    rows = [
        {
            "question": f"Tom has {a} apples and gets {a * 500} more. How many?",
            "answer": f"{a}+{a * 500}\n#### {a * 501:,}",
        }
        for a in range(1, 13)
    ]
    rows.append({"question": "What is the capital of France? 1 2"})  # no known answer: rejected unasked
    source = write_rows(tmp_path / "gsm8k.jsonl", rows)
    with FakeTeacher(answer=gsm8k_teacher) as teacher:
        report = generate(settings(teacher, [source], tmp_path / "out", verify="final-answer"), None)
    kept = read_lines(tmp_path / "out" / "records.jsonl")
    assert sorted(record["instruction"] for record in kept) == sorted(row["question"] for row in rows[1:12:2])
    rejected = read_lines(tmp_path / "out" / "rejected.jsonl")
    assert len(rejected) == 7 and sum(line.get("asked") is False for line in rejected) == 1
    assert "does not match the known answer" in rejected[0]["reason"] or "no known answer" in rejected[0]["reason"]
    assert (report.kept, report.rejected, report.asked) == (6, 7, 12)
    assert sum(teacher.asked.values()) == 12


def test_verify_json_keeps_only_parseable_replies(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": "good"}, {"instruction": "bad"}])
    with FakeTeacher(answer=lambda prompt: '{"ok": true}' if prompt == "good" else "{ok}") as teacher:
        report = generate(settings(teacher, [source], tmp_path / "out", verify="json"), None)
    assert [record["instruction"] for record in read_lines(tmp_path / "out" / "records.jsonl")] == ["good"]
    assert (report.kept, report.rejected) == (1, 1)


def test_max_dollars_stops_cleanly_and_resume_finishes(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": f"question {index}"} for index in range(30)])
    out = tmp_path / "out"
    with FakeTeacher() as teacher:  # each reply: 3 completion tokens, $3 at $1M per million
        budget = {"price_out": 1_000_000.0, "concurrency": 1}
        first = generate(settings(teacher, [source], out, max_dollars=30, **budget), None)
        assert first.stopped == "max-dollars" and first.kept == 10 and first.pending == 20 and first.dollars == 30
        again = generate(settings(teacher, [source], out, max_dollars=30, resume=True, **budget), None)
        assert again.kept == 10 and sum(teacher.asked.values()) == 10  # the run's total is spent: nothing asked
        last = generate(settings(teacher, [source], out, max_dollars=1000, resume=True, **budget), None)
    assert last.stopped is None and last.kept == 30 and last.dollars == 90
    where = Counter(record["where"] for record in read_lines(out / "records.jsonl"))
    assert len(where) == 30 and set(where.values()) == {1}


def test_failed_units_are_counted_and_asked_again_only_with_retry_failed(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": f"question {index}"} for index in range(20)])
    out = tmp_path / "out"
    with FakeTeacher(faults={"500": 0.5}, seed=1) as teacher:
        policy = RetryPolicy(max_retries=0, base_delay=0.0)
        first = generate(settings(teacher, [source], out, policy=policy), None)
        assert first.failed > 0 and first.kept + first.failed == 20 and first.failures == {"5xx": first.failed}
        asked = sum(teacher.asked.values())
        same = generate(settings(teacher, [source], out, policy=policy, resume=True), None)
        assert sum(teacher.asked.values()) == asked and same.failed == first.failed
        final = generate(settings(teacher, [source], out, resume=True, retry_failed=True), None)
    assert (final.kept, final.failed) == (20, 0)
    assert len(read_lines(out / "records.jsonl")) == 20


def test_resume_trims_a_torn_tail_and_asks_that_unit_again(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": f"question {index}"} for index in range(5)])
    out = tmp_path / "out"
    with FakeTeacher() as teacher:
        generate(settings(teacher, [source], out), None)
        lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
        (out / "records.jsonl").write_text("".join(lines[:4]) + lines[4][:30])  # killed inside the last write
        report = generate(settings(teacher, [source], out, resume=True), None)
    assert report.torn_lines_trimmed == 1 and report.kept == 5
    assert len(read_lines(out / "records.jsonl")) == 5 and sum(teacher.asked.values()) == 6


def test_resume_refuses_other_parameters_and_a_fresh_run_refuses_an_earlier_one(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": "q"}])
    out = tmp_path / "out"
    with FakeTeacher() as teacher:
        generate(settings(teacher, [source], out), None)
        with pytest.raises(FrugalError, match="add --resume to continue it"):
            generate(settings(teacher, [source], out), None)
        with pytest.raises(FrugalError, match=r"--resume: temperature differs .*\(0.7 in run.json, 0.1 now\)"):
            generate(settings(teacher, [source], out, resume=True, temperature=0.1), None)
        (tmp_path / "theirs").mkdir()
        (tmp_path / "theirs" / "thesis.tex").write_text("x")
        with pytest.raises(FrugalError, match="was written by something else"):
            generate(settings(teacher, [source], tmp_path / "theirs", resume=True), None)
    assert (tmp_path / "theirs" / "thesis.tex").read_text() == "x"


def test_template_samples_and_qa_pairs_give_several_records_per_reply(tmp_path):
    source = write_rows(tmp_path / "docs.jsonl", [{"instruction": "doc", "text": "Cats sleep."}])
    template = tmp_path / "template.txt"
    template.write_text("Write Q/A pairs about: $text")
    out = tmp_path / "out"
    with FakeTeacher(answer=lambda prompt: f"Q: What about {prompt[-11:]}?\nA: Yes.\nQ: Sure?\nA: Sure.") as teacher:
        report = generate(settings(teacher, [source], out, template=template, parse="qa-pairs", samples=2), None)
    records = read_lines(out / "records.jsonl")
    assert sorted((r["sample"], r["item"], r["instruction"], r["response"]) for r in records) == [
        (0, 0, "What about Cats sleep.?", "Yes."), (0, 1, "Sure?", "Sure."),
        (1, 0, "What about Cats sleep.?", "Yes."), (1, 1, "Sure?", "Sure."),
    ]  # fmt: skip
    assert (report.units, report.kept, report.records) == (2, 2, 4)
    assert sum("billed" in record for record in records) == 2  # once per reply, so dollars add up


def test_parse_lines_makes_prompts_that_a_second_run_answers(tmp_path):
    source = write_rows(tmp_path / "topics.jsonl", [{"instruction": "topics"}])
    with FakeTeacher(answer=lambda prompt: "1. First?\n2. Second?" if prompt == "topics" else "ok") as teacher:
        generate(settings(teacher, [source], tmp_path / "questions", parse="lines"), None)
        questions = tmp_path / "questions" / "records.jsonl"
        report = generate(settings(teacher, [questions], tmp_path / "answers"), None)
    answers = read_lines(tmp_path / "answers" / "records.jsonl")
    assert sorted((r["instruction"], r["response"]) for r in answers) == [("First?", "ok"), ("Second?", "ok")]
    assert report.kept == 2


def test_bad_input_rows_are_counted_not_asked(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "q"}\nnot json\n{"instruction": ""}\n')
    with FakeTeacher() as teacher:
        report = generate(
            settings(teacher, [source], tmp_path / "out", read_options=ReadOptions(require_response=False)), None
        )
    assert (report.kept, report.bad_input_rows, report.units) == (1, 2, 1)


def test_an_input_given_twice_is_refused(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": "q"}])
    with FakeTeacher() as teacher, pytest.raises(FrugalError, match="is given twice"):
        generate(settings(teacher, [source, source], tmp_path / "out"), None)
    assert not (tmp_path / "out").exists()


def test_a_run_killed_before_its_first_write_starts_afresh(tmp_path):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": "q"}])
    out = tmp_path / "out"
    out.mkdir()
    (out / ".frugal_output.json").write_text('{"command": "frugal data generate", "entries": ["run.json"]}')
    with FakeTeacher() as teacher:
        report = generate(settings(teacher, [source], out), None)
    assert report.kept == 1 and (out / "run.json").exists()


def test_the_progress_bar_shows_dollars_and_tokens(tmp_path, capsys):
    source = write_rows(tmp_path / "in.jsonl", [{"instruction": f"question {index}"} for index in range(3)])
    with FakeTeacher() as teacher:
        generate(settings(teacher, [source], tmp_path / "out", price_out=1e6, concurrency=1, progress=True), None)
    bar = capsys.readouterr().err
    assert "3/3" in bar and "$9.0000" in bar and "6 in / 9 out" in bar and "kept 3" in bar


def test_an_input_given_twice_under_two_spellings_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "in.jsonl", [{"instruction": "q"}])
    with FakeTeacher() as teacher, pytest.raises(FrugalError, match="is given twice"):
        generate(settings(teacher, [Path("in.jsonl"), tmp_path / "in.jsonl"], tmp_path / "out"), None)
    assert not (tmp_path / "out").exists()
