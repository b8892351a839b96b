"""The demo end to end on the real pipeline, shortened: it must learn, and it must end its
schedule on time when the step count comes from the clock."""

import json
from collections import Counter

import pytest

from frugal_lm.config import resolve_run_config
from frugal_lm.demo import DataSettings, DemoOptions, run_demo
from frugal_lm.demo.budget import MIN_STEPS, steps_for_budget
from frugal_lm.demo.run import RECIPE

SMALL_MODEL = ("model.hidden_size=64", "model.n_heads=2", "model.n_layers=2")
TINY_MODEL = ("model.hidden_size=32", "model.n_heads=2", "model.n_layers=2")


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def majority_baseline(train_rows, heldout_rows):
    """Exact match of always answering the most common training answer: the best a model that
    ignores the question can do, so the honest chance level for counting (answers 0..12)."""
    most_common, _ = Counter(row["response"] for row in train_rows).most_common(1)[0]
    return sum(row["response"] == most_common for row in heldout_rows) / len(heldout_rows)


def test_short_demo_learns_counting_well_above_chance(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(DemoOptions(
        out=out, steps=150,
        data=DataSettings(families=("counting",), train_rows=6000, heldout_rows=100),
        overrides=(*SMALL_MODEL, "batch_tokens=2048", "lr=3e-3")))
    shown = capsys.readouterr().out

    report = summary.reports[0]
    chance = majority_baseline(read_jsonl(out / "data" / "train.jsonl"), read_jsonl(out / "data" / "heldout.jsonl"))
    assert 0.1 < chance < 0.5  # the baseline is a real number, not a degenerate one
    assert report.exact_match >= chance + 0.25, (report.exact_match, chance)

    # Every stage left its output where its own command would, and the numbers agree.
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["reports"][0]["exact_match"] == report.exact_match
    evaluated = json.loads((out / "eval" / "results.json").read_text())["results"]["synthetic"]
    assert evaluated["value"] == report.exact_match and evaluated["n"] == 100
    assert report.steps == 150 and len(read_jsonl(out / "run" / "metrics.jsonl")) == 150
    assert report.tokens_seen == read_jsonl(out / "run" / "metrics.jsonl")[-1]["tokens"]
    assert (out / "hf" / "config.json").is_file() and (out / "hf" / "model.safetensors").is_file()
    assert [s.family for s in report.samples] == ["counting"]
    for stage in ("[1/7] synthetic tasks", "[5/7] train hrm", "[6/7] held-out eval hrm", "[7/7] export"):
        assert stage in shown
    assert "exact match: MEAN (100 held-out)" in shown and "frugal chat --model" in shown


def test_time_budget_gives_a_schedule_that_ends_on_its_last_step(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(DemoOptions(
        out=out, minutes=0.05,
        data=DataSettings(families=("reversal",), train_rows=200, heldout_rows=10),
        overrides=(*TINY_MODEL, "batch_tokens=512")))
    assert "s/step (measured)" in capsys.readouterr().out
    report = summary.reports[0]
    assert report.seconds_per_step_measured is not None and report.seconds_per_step_measured > 0
    assert report.steps == MIN_STEPS  # 3 seconds of budget is less than the minimum run
    metrics = read_jsonl(out / "run" / "metrics.jsonl")
    recipe = resolve_run_config(RECIPE, [])
    assert len(metrics) == report.steps
    assert metrics[-1]["lr"] == pytest.approx(recipe.lr * recipe.lr_floor)  # the cosine ended, not cut
    assert not (out / "step_time_probe").exists()


def test_overwrite_replaces_a_finished_demo_run(tmp_path):
    out = tmp_path / "demo"
    options = DemoOptions(out=out, steps=2, data=DataSettings(families=("reversal",), train_rows=50, heldout_rows=5),
                          overrides=(*TINY_MODEL, "batch_tokens=256"))
    run_demo(options)
    (out / "stale.txt").write_text("from the first run")
    run_demo(DemoOptions(**{**options.__dict__, "overwrite": True}))
    assert not (out / "stale.txt").exists() and (out / "summary.json").is_file()


@pytest.mark.parametrize("seconds_per_step, train_seconds, expected", [
    (0.5, 100.0, 200), (0.3, 100.0, 333), (2.0, 10.0, MIN_STEPS), (1.0, -5.0, MIN_STEPS)])
def test_steps_for_budget(seconds_per_step, train_seconds, expected):
    assert steps_for_budget(seconds_per_step, train_seconds).steps == expected


def test_compare_trains_both_nets_on_the_same_tokens_with_the_same_parameters(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(DemoOptions(out=out, steps=3, compare=True,
                                   data=DataSettings(families=("reversal",), train_rows=60, heldout_rows=6),
                                   overrides=(*TINY_MODEL, "batch_tokens=256")))
    hrm, transformer = summary.reports
    assert (hrm.net, transformer.net) == ("hrm", "transformer")
    assert hrm.parameters == transformer.parameters
    assert hrm.tokens_seen == transformer.tokens_seen and hrm.steps == transformer.steps == 3
    assert [line["tokens"] for line in read_jsonl(out / "run_hrm" / "metrics.jsonl")] == \
           [line["tokens"] for line in read_jsonl(out / "run_transformer" / "metrics.jsonl")]
    table = capsys.readouterr().out
    assert "hrm" in table and "transformer" in table and summary.export_dir is None
