import hashlib
import json
import random

import pytest

from frugal_lm.data.synth import FAMILIES, Problem, check, generate, is_heldout, parse_families, write_synthetic
from frugal_lm.errors import FrugalError


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_answers_correctly(family):
    rng = random.Random(0)
    for _ in range(50):
        instruction, response = FAMILIES[family](rng)
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
    assert set(record) == {"instruction", "response", "condition", "category"} and record["condition"] == "direct"


def test_check_and_family_errors():
    problem = Problem("addition", "What is 1 + 2?", "3")
    assert check(problem, " 3\n") and not check(problem, "4")
    assert parse_families("sorting, reversal") == ["sorting", "reversal"]
    with pytest.raises(FrugalError, match="unknown task family 'division'; allowed: addition"):
        parse_families("addition,division")


def test_cli_writes_both_splits(tmp_path, capsys):
    from frugal_lm.cli import main

    assert main(["data", "synth", "--out", str(tmp_path), "--tasks", "sorting", "--rows", "20",
                 "--heldout-rows", "5"]) == 0
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 20
    assert main(["data", "synth", "--out", str(tmp_path), "--tasks", "nope"]) == 2
    assert "unknown task family 'nope'" in capsys.readouterr().err
