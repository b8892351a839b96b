import json
import random
import string

import pytest

from frugal_lm.data.synth import DEFAULT_FAMILIES, FAMILIES, as_problem, check, generate, is_heldout, write_synthetic
from frugal_lm.data.synth_depth import ChainKnobs, ModexprKnobs, parse_difficulty, sequential_steps
from frugal_lm.errors import FrugalError

DEPTH = ["modexpr", "chain"]


def evaluate_prefix(tokens, modulus):
    """Independent reference: (value, operations, depth) of a prefix expression, by recursion."""

    def walk(position):
        token = tokens[position]
        if token not in "+-*":
            return int(token, 36), 0, 0, position + 1
        a, ops_a, depth_a, position = walk(position + 1)
        b, ops_b, depth_b, position = walk(position)
        value = {"+": a + b, "-": a - b, "*": a * b}[token] % modulus
        return value, ops_a + ops_b + 1, max(depth_a, depth_b) + 1, position

    value, ops, depth, end = walk(0)
    assert end == len(tokens)  # every token used, none left over
    return value, ops, depth


def solve_modexpr(instruction):
    head, expression = instruction.split(": ")
    modulus = int(head.removeprefix("Evaluate mod "))
    tokens = expression.split(" ")
    assert all(t in "+-*" or int(t, 36) < modulus for t in tokens) and all(len(t) == 1 for t in tokens)
    return (modulus, *evaluate_prefix(tokens, modulus))


def solve_chain(instruction):
    """Follow the bindings from the query; (value, hops, bindings, the chains' lengths)."""
    text, query = instruction.rsplit(". ", 1)
    pairs = [binding.split("=") for binding in text.split("; ")]
    bindings = dict(pairs)
    assert len(bindings) == len(pairs)  # each variable bound once
    lengths = []
    for head in set(bindings) - {b for _, b in pairs}:  # the variables no binding reads
        name, hops = head, 0
        while name in bindings:
            name, hops = bindings[name], hops + 1
        lengths.append(hops)
    name, hops = query.removesuffix("=?"), 0
    while name in bindings:
        name, hops = bindings[name], hops + 1
    return name, hops, pairs, lengths


def draw(family, knobs=None, count=300, seed=0):
    rng = random.Random(seed)
    return [FAMILIES[family](rng) if knobs is None else FAMILIES[family](rng, knobs) for _ in range(count)]


def test_modexpr_answers_match_a_recursive_evaluator():
    for knobs in (None, ModexprKnobs(ops=12, modulus=23), ModexprKnobs(ops=5, shape="chain", modulus=2)):
        solutions = draw("modexpr", knobs)
        for solution in solutions:
            modulus, value, ops, _ = solve_modexpr(solution.instruction)
            expected = knobs or ModexprKnobs()
            assert modulus == expected.modulus and expected.min_ops <= ops <= expected.ops
            assert int(solution.answer, 36) == value and solution.steps == ()
        assert len({s.answer for s in solutions}) == (knobs or ModexprKnobs()).modulus  # every value occurs


def test_chain_answers_match_following_the_bindings():
    for knobs in (None, ChainKnobs(hops=7, min_hops=7, distractors=5), ChainKnobs(hops=1, distractors=9)):
        expected = knobs or ChainKnobs()
        for solution in draw("chain", knobs):
            value, hops, pairs, lengths = solve_chain(solution.instruction)
            assert solution.answer == value and value in string.digits and expected.min_hops <= hops <= expected.hops
            # no surface cue: every chain as long as the queried one, each value ending exactly one chain
            assert lengths == [hops] * (1 + expected.distractors)
            values = [b for _, b in pairs if b in string.digits]
            assert len(values) == len(set(values)) == 1 + expected.distractors
            assert all(len(name) == 1 for pair in pairs for name in pair)


@pytest.mark.parametrize("family", DEPTH)
def test_generators_are_deterministic_for_a_seed(family):
    assert draw(family, seed=3, count=50) == draw(family, seed=3, count=50)
    assert draw(family, seed=3, count=50) != draw(family, seed=4, count=50)
    first = [p.record() for p in generate([family], 40, seed=5, heldout=True)]
    assert first == [p.record() for p in generate([family], 40, seed=5, heldout=True)]


def test_the_knob_sets_the_number_of_sequential_steps():
    def modexpr_depths(**knobs):
        return [solve_modexpr(s.instruction)[3] for s in draw("modexpr", ModexprKnobs(**knobs))]

    def chain_hops(**knobs):
        return [solve_chain(s.instruction)[1] for s in draw("chain", ChainKnobs(**knobs))]

    # a left-deep chain is fully serial: its depth is its operation count, exactly the knob when pinned
    assert set(modexpr_depths(ops=24, min_ops=24, shape="chain")) == {24}
    assert set(modexpr_depths(ops=6, min_ops=6, shape="chain")) == {6}
    assert set(modexpr_depths(ops=6, shape="chain")) == set(range(1, 7))  # "up to": every depth drawn
    for solution in draw("modexpr", ModexprKnobs(ops=6, shape="chain")):  # left-deep: operators first in prefix
        tokens = solution.instruction.split(": ")[1].split()
        operators = solve_modexpr(solution.instruction)[2]
        assert all(t in "+-*" for t in tokens[:operators]) and len(tokens) == 2 * operators + 1
    shallow, deep = modexpr_depths(ops=4), modexpr_depths(ops=24)
    assert max(shallow) <= 4 < max(deep) and sum(deep) > 2 * sum(shallow)
    assert set(chain_hops(hops=6, min_hops=6)) == {6} and set(chain_hops(hops=2, min_hops=2)) == {2}
    assert set(chain_hops(hops=5, min_hops=2)) == {2, 3, 4, 5}


def test_sequential_steps_read_back_from_the_instruction_match_the_references():
    for solution in draw("modexpr", ModexprKnobs(ops=12), count=200):
        assert sequential_steps("modexpr", solution.instruction) == solve_modexpr(solution.instruction)[3]
    for solution in draw("chain", ChainKnobs(hops=7, distractors=3), count=200):
        assert sequential_steps("chain", solution.instruction) == solve_chain(solution.instruction)[1]
    assert sequential_steps("addition", "What is 1 + 2?") is None


def test_defaults_are_short_contexts():
    for family in DEPTH:
        lengths = [len(s.instruction) + len(s.answer) for s in draw(family)]
        assert max(lengths) < 80  # one character a token under the demo's tokenizer: tens of tokens


@pytest.mark.parametrize("family", DEPTH)
def test_heldout_is_disjoint_from_train_at_any_difficulty(family):
    difficulty = {"modexpr": ModexprKnobs(ops=2), "chain": ChainKnobs(hops=2, distractors=1)}[family]
    train = [p.instruction for p in generate([family], 1500, seed=0, heldout=False, difficulty={family: difficulty})]
    other = [p.instruction for p in generate([family], 1500, seed=9, heldout=False)]
    heldout = [p.instruction for p in generate([family], 150, seed=0, heldout=True, difficulty={family: difficulty})]
    assert len(set(train)) == 1500 and len(set(heldout)) == 150
    assert not set(heldout) & (set(train) | set(other))
    assert all(map(is_heldout, heldout)) and not any(map(is_heldout, train + other))


@pytest.mark.parametrize("answer_format", ["cot", "direct"])
def test_answered_directly_and_scored_by_exact_match(answer_format):
    for family in DEPTH:
        problem = as_problem(family, FAMILIES[family](random.Random(1)), answer_format)
        assert problem.condition == "direct" and problem.response == problem.answer and len(problem.answer) == 1
        assert check(problem, problem.answer) and check(problem, f"  {problem.answer}\n")
        wrong = next(c for c in string.digits if c != problem.answer)
        assert not check(problem, wrong) and not check(problem, problem.answer * 2) and not check(problem, "")


def test_parse_difficulty_and_its_one_line_errors():
    assert parse_difficulty(None) == {} and parse_difficulty("") == {}
    parsed = parse_difficulty("modexpr.ops=24, modexpr.shape=chain,chain.hops=6")
    assert parsed == {"modexpr": ModexprKnobs(ops=24, shape="chain"), "chain": ChainKnobs(hops=6)}
    for text, message in [
        ("modexpr.depth=3", "--difficulty modexpr: unknown key 'depth'; allowed: min_ops, modulus, ops, shape"),
        ("modexpr.ops=many", "--difficulty modexpr: bad value for 'ops' ('many')"),
        ("modexpr.ops=0", "greater than or equal to 1"),
        ("modexpr.modulus=9", "invalid modulus: must be a prime from 2 to 36, not 9"),
        ("modexpr.shape=tree", "Input should be 'random' or 'chain'"),
        ("modexpr.ops=3,modexpr.min_ops=4", "invalid min_ops: must be <= ops (3), not 4"),
        ("chain.hops=20", "invalid distractors: (1 + distractors) * hops = 60 variables, more than the 52"),
        ("chain.distractors=10", "less than or equal to 9"),
        ("addition.max_digits=8", "family 'addition' has no difficulty knobs; families with knobs: modexpr, chain"),
        ("nope.ops=3", "family 'nope' has no difficulty knobs"),
        ("modexpr=3", "'modexpr=3' is not FAMILY.KNOB=VALUE"),
        ("modexpr.ops", "'modexpr.ops' is not FAMILY.KNOB=VALUE"),
        ("chain.hops=3,chain.hops=4", "chain.hops given twice"),
    ]:
        with pytest.raises(FrugalError, match="^[^\n]*$") as error:
            parse_difficulty(text)
        assert message in str(error.value)


def test_difficulty_must_match_the_tasks(tmp_path):
    with pytest.raises(FrugalError, match="difficulty given for 'modexpr', which is not among the tasks"):
        write_synthetic(tmp_path / "out", ["chain"], 5, 5, seed=0, difficulty={"modexpr": ModexprKnobs()})
    with pytest.raises(FrugalError, match="difficulty of 'chain' must be a ChainKnobs, not ModexprKnobs"):
        list(generate(["chain"], 5, seed=0, heldout=False, difficulty={"chain": ModexprKnobs()}))
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_default_tasks_stay_the_demos_six(tmp_path):
    from frugal_lm.data.synth import parse_families

    assert parse_families(None) == list(DEFAULT_FAMILIES) and not set(DEPTH) & set(DEFAULT_FAMILIES)
    assert parse_families("modexpr,chain") == DEPTH


def test_cli_writes_the_depth_families_at_the_chosen_difficulty(tmp_path, capsys):
    from frugal_lm.cli import main

    out = tmp_path / "depth"
    argv = ["data", "synth", "--out", str(out), "--tasks", "modexpr,chain", "--rows", "40", "--heldout-rows", "10"]
    assert main([*argv, "--difficulty", "modexpr.ops=9,modexpr.min_ops=9,modexpr.shape=chain,chain.hops=5"]) == 0
    for split, rows in (("train", 40), ("heldout", 10)):
        records = [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
        assert len(records) == rows and {r["category"] for r in records} == set(DEPTH)
        assert {r["condition"] for r in records} == {"direct"}
        for record in records:
            if record["category"] == "modexpr":
                _, value, ops, depth = solve_modexpr(record["instruction"])
                assert ops == depth == 9 and record["response"] == str(value)
            else:
                value, hops, _, _ = solve_chain(record["instruction"])
                assert 1 <= hops <= 5 and record["response"] == value
    assert main([*argv, "--difficulty", "chain.hops=many"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--difficulty chain: bad value for 'hops' ('many')" in err and "\n" not in err
    assert main(["data", "synth", "--out", str(out), "--tasks", "chain", "--difficulty", "modexpr.ops=3"]) == 2
    assert "difficulty given for 'modexpr'" in capsys.readouterr().err


def test_majority_baseline_is_near_chance():
    from frugal_lm.evals.synthetic import majority_baselines, score_outputs

    def records(heldout):
        from frugal_lm.data.records import Record

        problems = generate(DEPTH, 600 if not heldout else 200, seed=0, heldout=heldout)
        return [Record(p.instruction, p.response, (p.condition,), p.family) for p in problems]

    train, heldout = records(False), records(True)
    baselines = majority_baselines(train, heldout)
    assert set(baselines) == set(DEPTH)
    assert baselines["chain"] < 0.25 and baselines["modexpr"] < 0.4  # ten digits; seven residues, 0 the likeliest
    right = score_outputs(heldout, [r.instruction for r in heldout], [r.response for r in heldout])
    wrong = score_outputs(heldout, [r.instruction for r in heldout], [r.response + "0" for r in heldout])
    assert right.value == 1.0 and wrong.value == 0.0 and set(right.metrics) >= {"exact_match/modexpr"}
