import hashlib
import json
import random
import re

import pytest

from frugal_lm.data.synth import (
    ANSWER_MARKER,
    DEFAULT_FAMILIES,
    FAMILIES,
    Problem,
    as_problem,
    check,
    generate,
    is_heldout,
    parse_families,
    parse_weights,
    write_synthetic,
)
from frugal_lm.errors import FrugalError


@pytest.mark.parametrize("family", DEFAULT_FAMILIES)  # the depth families: test_synth_depth.py
def test_every_family_answers_correctly(family):
    rng = random.Random(0)
    for _ in range(50):
        solution = FAMILIES[family](rng)
        instruction, response = solution.instruction, solution.answer
        if family == "addition":
            a, b = instruction.removeprefix("What is ").removesuffix("?").split(" + ")
            assert int(response) == int(a) + int(b) and max(len(a), len(b)) <= 6
        elif family == "multiplication":
            a, b = instruction.removeprefix("What is ").removesuffix("?").split(" * ")
            assert (len(a), len(b)) == (3, 2) and int(response) == int(a) * int(b)
        elif family == "sorting":
            numbers = list(map(int, instruction.split(": ")[1].split()))
            assert 5 <= len(numbers) <= 8 and response == " ".join(map(str, sorted(numbers)))
        elif family == "reversal":
            assert response == instruction.split(": ")[1][::-1]
        elif family == "expression":
            expression = instruction.removeprefix("Evaluate: ")
            assert sum(expression.count(op) for op in " + , - , * ".split(",")) >= 3 and "(" in expression
            assert int(response) == eval(expression, {"__builtins__": {}})  # independent reference
        elif family == "counting":
            target, word = instruction.split("'")[1], instruction.split(" in ")[1].removesuffix("?")
            assert int(response) == word.count(target)


def test_splits_never_overlap_and_are_deterministic(tmp_path):
    families = list(FAMILIES)
    train = [p.instruction for p in generate(families, 600, seed=0, heldout=False)]
    heldout = [p.instruction for p in generate(families, 100, seed=0, heldout=True)]
    other_seed = [p.instruction for p in generate(families, 600, seed=7, heldout=False)]
    assert not set(train) & set(heldout) and not set(other_seed) & set(heldout)
    assert all(is_heldout(i) for i in heldout) and not any(is_heldout(i) for i in train + other_seed)
    assert len(set(train)) == 600
    first = write_synthetic(tmp_path / "a", families, 60, 12, seed=3)
    second = write_synthetic(tmp_path / "b", families, 60, 12, seed=3)
    for split in ("train", "heldout"):
        digest = [hashlib.sha256(paths[split].read_bytes()).hexdigest() for paths in (first, second)]
        assert digest[0] == digest[1]
    record = json.loads(first["train"].read_text().splitlines()[0])
    assert set(record) == {"instruction", "response", "condition", "category"} and record["condition"] == "cot"
    assert record["response"].endswith(ANSWER_MARKER + str(eval(record["instruction"].split("is ")[1][:-1])))


def test_check_and_family_errors():
    problem = Problem("addition", "What is 1 + 2?", "3")
    assert check(problem, " 3\n") and not check(problem, "4")
    worked = Problem("addition", "What is 1 + 2?", "1+2+0=3\n#### 3", "cot")
    assert worked.answer == "3" and check(worked, "1+2+0=3\n#### 3") and check(worked, "junk #### 3 ")
    assert not check(worked, "3") and not check(worked, "1+2+0=3\n#### 4")  # a missing marker is wrong
    assert parse_families("sorting, reversal") == ["sorting", "reversal"]
    with pytest.raises(FrugalError, match="unknown task family 'division'; allowed: addition"):
        parse_families("addition,division")


def test_cli_writes_both_splits(tmp_path, capsys):
    from frugal_lm.cli import main

    assert (
        main(["data", "synth", "--out", str(tmp_path), "--tasks", "sorting", "--rows", "20", "--heldout-rows", "5"])
        == 0
    )
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 20
    assert main(["data", "synth", "--out", str(tmp_path), "--tasks", "nope"]) == 2
    assert "unknown task family 'nope'" in capsys.readouterr().err


def test_weights_shape_the_train_split_and_leave_the_heldout_split_even(tmp_path):
    families = ["addition", "sorting", "reversal"]
    assert parse_weights("sorting=3", families) == {"sorting": 3} and parse_weights("", families) == {}
    paths = write_synthetic(tmp_path / "w", families, 500, 60, seed=0, weights={"sorting": 3})
    counts = {}
    for split, path in paths.items():
        rows = [json.loads(line)["category"] for line in path.read_text().splitlines()]
        counts[split] = {family: rows.count(family) for family in families}
    assert counts["train"] == {"addition": 100, "sorting": 300, "reversal": 100}
    assert counts["heldout"] == {"addition": 20, "sorting": 20, "reversal": 20}
    even = write_synthetic(tmp_path / "e", families, 60, 12, seed=0)
    assert (
        even["train"].read_bytes()
        == write_synthetic(tmp_path / "one", families, 60, 12, seed=0, weights={})["train"].read_bytes()
    )
    for text, message in [
        ("counting=2", "'counting' is not among the tasks"),
        ("sorting=0", "'sorting=0' is not FAMILY=N"),
        ("sorting=x", "is not FAMILY=N"),
        ("sorting=2,sorting=3", "once per family"),
    ]:
        with pytest.raises(FrugalError, match=message):
            parse_weights(text, families)


def test_write_synthetic_refuses_weights_it_would_not_use_before_writing(tmp_path):
    for weights, message in [({"sortng": 2}, "'sortng', which is not among the tasks"), ({"sorting": 0}, ">= 1")]:
        with pytest.raises(FrugalError, match=message):
            write_synthetic(tmp_path / "w", ["sorting", "reversal"], 10, 2, seed=0, weights=weights)
    assert not (tmp_path / "w").exists()


def test_cli_weights_and_their_one_line_error(tmp_path, capsys):
    from frugal_lm.cli import main

    argv = ["data", "synth", "--out", str(tmp_path), "--tasks", "sorting,reversal", "--rows", "30"]
    assert main([*argv, "--heldout-rows", "4", "--weights", "reversal=2"]) == 0
    rows = [json.loads(line)["category"] for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert rows.count("reversal") == 20
    assert main([*argv, "--weights", "addition=2"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _steps(family, seed=0, count=200):
    rng = random.Random(seed)
    for _ in range(count):
        problem = as_problem(family, FAMILIES[family](rng), "cot")
        assert problem.condition == "cot" and check(problem, problem.response)
        *lines, last = problem.response.split("\n")
        assert last == ANSWER_MARKER + problem.answer
        yield problem, lines


def _column_sums(text):
    """Checks `x+y+c=s` columns against each other: s is the sum, c the carry out of the previous column."""
    carry, digits = 0, []
    for x, y, c, total in (map(int, m) for m in re.findall(r"(\d)\+(\d)\+(\d)=(\d+)", text)):
        assert c == carry and total == x + y + c
        carry, digits = total // 10, digits + [total % 10]
    return int("".join(map(str, [carry] * bool(carry) + digits[::-1])))


def test_worked_additions_carry_column_by_column():
    for problem, (line,) in _steps("addition"):
        a, b = map(int, problem.instruction.removeprefix("What is ").removesuffix("?").split(" + "))
        assert _column_sums(line) == a + b == int(problem.answer)


def test_worked_multiplications_are_partial_products_then_their_sum():
    for problem, (first, second, total) in _steps("multiplication"):
        a, b = map(int, problem.instruction.removeprefix("What is ").removesuffix("?").split(" * "))
        for line, digit in ((first, b % 10), (second, b // 10)):
            assert line.endswith(f" ={a * digit}") and line.count("*") == 3
            _columns_add_up(line)
        left, right = map(int, total.split(":")[0].split("+"))
        assert (left, right) == (a * (b % 10), a * (b // 10) * 10) and _column_sums(total) == a * b


def _columns_add_up(work):
    """Every column step of a worked operation is right on its own."""
    for x, y, c, total in (map(int, m) for m in re.findall(r"(?<![\d*])(\d)\+(\d)\+(\d)=(\d+)", work)):
        assert total == x + y + c
    for top, y, borrow, digit in (map(int, m) for m in re.findall(r"(1?\d)-(\d)-(\d)=(\d+)", work)):
        assert digit == top - y - borrow and 0 <= digit <= 9
    for x, d, c, total in (map(int, m) for m in re.findall(r"(\d)\*(\d)\+(\d)=(\d+)", work)):
        assert total == x * d + c


def test_worked_expressions_take_one_operation_per_step():
    for problem, lines in _steps("expression"):
        value = eval(problem.instruction.removeprefix("Evaluate: "), {"__builtins__": {}})
        worked, rewritten = lines[0::2], lines[1::2]
        assert len(worked) == 3 and len(rewritten) == 2  # three operators; the last one's rewrite is the answer
        for line in worked:
            header, work = line.split(": ", 1)
            literal, *settled = header.split(" = ")
            result = int(work.rsplit("=", 1)[1])
            assert eval(literal, {"__builtins__": {}}) == result
            assert not settled or eval(settled[0], {"__builtins__": {}}) == result  # signs settled, same value
            _columns_add_up(work)
        for line in rewritten:
            assert eval(line, {"__builtins__": {}}) == value


def test_worked_counts_run_over_the_word():
    for problem, (line,) in _steps("counting"):
        target, word = problem.instruction.split("'")[1], problem.instruction.split(" in ")[1].removesuffix("?")
        assert line.split() == ["0"] + [
            f"{letter}{target}{'=' if letter == target else '!'}{word[: i + 1].count(target)}"
            for i, letter in enumerate(word)
        ]


def test_worked_sorts_list_each_tens_digit_with_its_numbers():
    for problem, (line,) in _steps("sorting"):
        numbers = list(map(int, problem.instruction.split(": ")[1].split()))
        buckets = [part.split(": ") for part in line.split(" | ")]
        assert [int(tens) for tens, _ in buckets] == list(range(10))
        listed = [[] if text == "-" else list(map(int, text.split())) for _, text in buckets]
        assert all(n // 10 == tens and bucket == sorted(bucket) for tens, bucket in enumerate(listed) for n in bucket)
        assert sorted(n for bucket in listed for n in bucket) == sorted(numbers)
        assert " ".join(str(n) for bucket in listed for n in bucket) == problem.answer


@pytest.mark.parametrize("family", ["reversal"])
def test_families_without_worked_steps_stay_direct(family):
    problem = as_problem(family, FAMILIES[family](random.Random(0)), "cot")
    assert problem.condition == "direct" and ANSWER_MARKER not in problem.response


def test_direct_format_gives_the_answer_alone(tmp_path):
    paths = write_synthetic(tmp_path, list(FAMILIES), 12, 6, seed=1, answer_format="direct")
    rows = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    assert {row["condition"] for row in rows} == {"direct"} and not any(ANSWER_MARKER in r["response"] for r in rows)
    with pytest.raises(FrugalError, match="unknown answer format 'scratch'"):
        write_synthetic(tmp_path, list(FAMILIES), 2, 2, seed=1, answer_format="scratch")
