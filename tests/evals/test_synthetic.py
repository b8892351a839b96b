import json

import pytest

from frugal_lm.data.records import Record
from frugal_lm.data.synth import write_synthetic
from frugal_lm.errors import FrugalError
from frugal_lm.evals.synthetic import (
    ANSWER_MARGIN_TOKENS,
    MAX_ANSWER_TOKENS,
    majority_baselines,
    read_heldout,
    score_synthetic,
)


class StandInEngine:
    """Answers through `answer(prompt)`; records what it was asked, as the engine contract's
    batched greedy `generate` would receive it."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []

    def generate(self, requests, progress=False):
        from types import SimpleNamespace

        self.requests.extend(requests)
        return [
            SimpleNamespace(text=self.answer(r.prompt), token_ids=[], prompt_tokens=0, finish_reason="stop")
            for r in requests
        ]


@pytest.fixture
def heldout(tmp_path):
    return write_synthetic(tmp_path, ["addition", "reversal", "sorting"], rows=5, heldout_rows=30, seed=3)["heldout"]


def test_scores_per_family_and_overall(heldout):
    rows = [json.loads(line) for line in heldout.read_text().splitlines()]
    gold = {row["instruction"]: row["response"] for row in rows}

    def answer(prompt):  # right on addition (a worked solution), sorting up to whitespace, wrong on reversal
        if prompt.startswith("Reverse"):
            return gold[prompt] + "x"
        return f"  {gold[prompt]} \n" if prompt.startswith("Sort") else gold[prompt]

    engine = StandInEngine(answer)
    result = score_synthetic(engine, heldout)
    families = [row["category"] for row in rows]
    assert result.metrics["exact_match/addition"].value == 1.0
    assert result.metrics["exact_match/sorting"].value == 1.0
    assert result.metrics["exact_match/reversal"].value == 0.0
    expected = sum(f != "reversal" for f in families) / len(families)
    assert result.value == pytest.approx(expected)
    assert result.metrics["exact_match"].n == 30
    # stderr of a 0/1 mean: sqrt(p (1 - p) / (n - 1)), the unbiased sample std over sqrt(n)
    assert result.metrics["exact_match"].stderr == pytest.approx((expected * (1 - expected) / 29) ** 0.5)
    # greedy, and the record's own condition tags, as in training
    assert all(r.sampling.temperature == 0.0 for r in engine.requests)
    assert [r.conditions for r in engine.requests] == [(row["condition"],) for row in rows]
    assert {row["condition"] for row in rows} == {"cot", "direct"}
    # a worked solution is scored on its final answer alone, against the final answer
    addition = next(s for s in result.samples if s.extra["family"] == "addition")
    assert addition.gold == addition.output.rsplit("#### ", 1)[1] == addition.extracted
    assert [r.prompt for r in engine.requests] == [row["instruction"] for row in rows]
    wrong = next(s for s in result.samples if not s.correct)
    assert wrong.extra["family"] == "reversal" and wrong.output.endswith("x") and wrong.gold != wrong.output


def test_a_worked_solution_without_the_marker_is_wrong(heldout):
    rows = [json.loads(line) for line in heldout.read_text().splitlines()]
    gold = {row["instruction"]: row["response"] for row in rows}
    result = score_synthetic(StandInEngine(lambda prompt: gold[prompt].replace("#### ", "")), heldout)
    assert result.metrics["exact_match/addition"].value == 0.0
    assert all(s.extracted == "" for s in result.samples if s.extra["family"] == "addition")


def test_generation_leaves_room_for_the_longest_worked_solution(tmp_path):
    """`frugal eval --tasks synthetic` must score a demo's model as the demo did: a worked
    solution cut short has no marker and would count as wrong. Worked expressions run far
    past the format's least limit (a fixed 176 once cut a third of them)."""
    worked = write_synthetic(tmp_path / "cot", ["expression"], 1, 200, seed=0)["heldout"]
    longest = max(len(json.loads(line)["response"]) for line in worked.read_text().splitlines())
    engine = StandInEngine(lambda prompt: "")
    score_synthetic(engine, worked)
    assert longest > MAX_ANSWER_TOKENS["cot"]
    assert {r.sampling.max_new_tokens for r in engine.requests} == {longest + ANSWER_MARGIN_TOKENS}
    direct = write_synthetic(tmp_path / "direct", ["reversal"], 1, 5, seed=0, answer_format="direct")["heldout"]
    engine = StandInEngine(lambda prompt: "")
    score_synthetic(engine, direct)
    assert {r.sampling.max_new_tokens for r in engine.requests} == {MAX_ANSWER_TOKENS["direct"]}


def test_limit_and_condition_override(heldout):
    engine = StandInEngine(lambda prompt: "0")
    result = score_synthetic(engine, heldout, limit=7, conditions=("cot",))
    assert len(result.samples) == 7 and {r.conditions for r in engine.requests} == {("cot",)}


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(FrugalError, match="frugal data synth"):
        read_heldout(tmp_path / "heldout.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "response": "b"}\n{"instruction": "a"}\n')
    with pytest.raises(FrugalError, match=r"bad.jsonl:2: missing field 'response'"):
        read_heldout(bad)


def test_majority_baselines_guess_each_familys_most_common_training_answer():
    def records(family, responses):
        return [Record(f"q{i}", response, ("direct",), family) for i, response in enumerate(responses)]

    train = records("counting", ["2", "3", "2", "2"]) + records("reversal", ["ab", "cd"])
    train += [Record("q", "x1 x2\n#### 3", ("cot",), "counting")] * 3  # worked: its final answer counts
    heldout = records("counting", ["3", "3", "3", "2"]) + records("reversal", ["ef"]) + records("sorting", ["1 2"])
    assert majority_baselines(train, heldout) == {"counting": 0.75, "reversal": 0.0, "sorting": 0.0}
