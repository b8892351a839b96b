"""`frugal data generate` as a user runs it: killed at random points and resumed, against the
project's own `frugal serve` app, one-line errors, and an API key that never reaches the disk."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from frugal_lm.cli import main
from frugal_lm.data.teacher.fake_teacher import FakeTeacher

RUN_CLI = "import sys; from frugal_lm.cli import main; sys.exit(main(sys.argv[1:]))"
FAST = ["--retry-base-delay", "0.005", "--retry-max-delay", "0.05", "--request-timeout", "2", "--max-retries", "20"]


def write_questions(path, count):
    path.write_text("".join(json.dumps({"instruction": f"question {index}"}) + "\n" for index in range(count)))
    return path


def lines_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_killed_at_random_points_then_resumed_every_row_exactly_once(tmp_path):
    source, out = write_questions(tmp_path / "in.jsonl", 500), tmp_path / "out"
    arguments = ["data", "generate", "--model", "m", str(source), "--out", str(out), "--concurrency", "8", *FAST]
    rng = random.Random(7)
    kills = 0
    with FakeTeacher(faults={"429": 0.1, "500": 0.1}, delay_s=0.01, seed=5) as teacher:
        base = [sys.executable, "-c", RUN_CLI, *arguments, "--base-url", teacher.base_url]
        for attempt in range(4):
            process = subprocess.Popen(base + (["--resume"] if attempt else []), stderr=subprocess.PIPE, text=True)
            time.sleep(rng.uniform(0.4, 1.2))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.communicate(timeout=30)
        finished = subprocess.run(base + ["--resume"], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert kills >= 2  # the run was really cut short, more than once
    records = lines_of(out / "records.jsonl")
    where = Counter(record["where"] for record in records)
    assert set(where) == {f"{source}:{line}" for line in range(1, 501)} and set(where.values()) == {1}
    report = json.loads((out / "report.json").read_text())
    assert (report["kept"], report["pending"], report["failed"]) == (500, 0, 0)


def test_generate_through_frugal_serve(tmp_path, tiny_run, serving, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"instruction": prompt}) + "\n" for prompt in ["12+7=", "3+4=", "reverse: ab"])
    )
    out = tmp_path / "out"
    with serving(tiny_run) as url:
        arguments = ["data", "generate", "--base-url", url, "--model", "tiny", str(source), "--out", str(out)]
        code = main([*arguments, "--max-tokens", "6", "--temperature", "0", "--keep-truncated", "--concurrency", "3"])
    assert code == 0, capsys.readouterr().err
    records = lines_of(out / "records.jsonl")
    assert sorted(record["instruction"] for record in records) == ["12+7=", "3+4=", "reverse: ab"]
    assert all(record["teacher"] == "tiny" and record["usage"]["completion_tokens"] >= 1 for record in records)
    assert json.loads((out / "report.json").read_text())["kept"] == 3


def test_the_api_key_never_reaches_the_disk_or_the_output(tmp_path, monkeypatch, capsys):
    secret = "sk-test-0123456789-never-on-disk"
    monkeypatch.setenv("TEACHER_KEY", secret)
    source, out = write_questions(tmp_path / "in.jsonl", 20), tmp_path / "out"
    with FakeTeacher(faults={"500": 0.3, "invalid_json": 0.2}) as teacher:
        arguments = ["data", "generate", "--base-url", teacher.base_url, "--model", "m", str(source), "--out", str(out)]
        assert main([*arguments, "--api-key-env", "TEACHER_KEY", "--max-retries", "1", *FAST[:4]]) == 0
    assert teacher.authorizations == {f"Bearer {secret}"}  # it was sent
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    files = [path for path in out.rglob("*") if path.is_file()]
    assert len(files) >= 5 and not any(secret.encode() in path.read_bytes() for path in files)


def test_a_wrong_base_url_is_one_line_naming_the_url(tmp_path, capsys):
    source = write_questions(tmp_path / "in.jsonl", 3)
    with FakeTeacher() as teacher:
        root = teacher.base_url.removesuffix("/v1")
        code = main(["data", "generate", "--base-url", root, "--model", "m", str(source), "--out", str(tmp_path / "o")])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert f"POST {root}/chat/completions: 404" in error and "API root" in error


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--concurrency", "0"], "--concurrency must be >= 1"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--max-dollars", "-1"], "--max-dollars must be >= 0"),
        (["--base-url", "localhost:8000"], "--base-url localhost:8000: must start with http://"),
        (["--template", "missing.txt"], "--template missing.txt:"),
        (["--system", "@missing.txt"], "--system @missing.txt:"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    write_questions(tmp_path / "in.jsonl", 1)
    base = ["data", "generate", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "in.jsonl", "--out", "o"]
    assert main([*base, *extra]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_template_field_missing_from_a_row_stops_before_anything_is_asked(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text('{"instruction": "a", "doc": "x"}\n{"instruction": "b"}\n')
    template = tmp_path / "t.txt"
    template.write_text("About: $doc")
    with FakeTeacher() as teacher:
        arguments = ["data", "generate", "--base-url", teacher.base_url, "--model", "m", str(source)]
        code = main([*arguments, "--out", str(tmp_path / "o"), "--template", str(template)])
    error = capsys.readouterr().err
    assert code == 2 and f"field 'doc' is not in row {source}:2" in error and error.count("\n") == 1
    assert not teacher.asked and not (tmp_path / "o").exists()


def test_help_names_the_options():
    result = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "data", "generate", "--help"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    options = "--base-url --concurrency --resume --verify --max-dollars --template --parse --samples --api-key-env"
    for option in [*options.split(), "--requests-per-minute", "--tokens-per-minute", "--retry-failed"]:
        assert option in result.stdout


def test_generated_records_are_a_source_curate_reads_and_deduplicates(tmp_path, capsys):
    first, second = write_questions(tmp_path / "a.jsonl", 4), write_questions(tmp_path / "b.jsonl", 4)
    answer = "Cats sleep for most of the day, mostly because hunting takes a great deal of energy."
    with FakeTeacher(answer=lambda prompt: answer) as teacher:
        arguments = ["data", "generate", "--base-url", teacher.base_url, "--model", "m", str(first), str(second)]
        assert main([*arguments, "--out", str(tmp_path / "teacher")]) == 0
    assert len(lines_of(tmp_path / "teacher" / "records.jsonl")) == 8
    curate = ["data", "curate", str(tmp_path / "teacher" / "records.jsonl"), "--out", str(tmp_path / "cur")]
    assert main([*curate, "--no-near-dedup"]) == 0  # one answer to every question: near-duplicates otherwise
    kept = lines_of(tmp_path / "cur" / "records.jsonl")
    removed = lines_of(tmp_path / "cur" / "removed.jsonl")
    assert sorted(record["instruction"] for record in kept) == [f"question {index}" for index in range(4)]
    assert all(record["condition"] == "direct,synth" for record in kept)
    assert [line["step"] for line in removed] == ["exact-duplicate"] * 4
