"""The demo's data stage: which train rows each family gets."""

import json
from collections import Counter

import pytest

from frugal_lm.cli import main
from frugal_lm.demo.stages import DataSettings, data_paths, synthesize


def train_families(tmp_path, settings: DataSettings) -> Counter:
    paths = data_paths(tmp_path)
    synthesize(paths, settings)
    return Counter(json.loads(line)["category"] for line in paths.train_jsonl.read_text().splitlines())


def test_expressions_and_sorting_get_twice_the_rows_by_default(tmp_path):
    settings = DataSettings(families=("addition", "sorting", "expression"), train_rows=40, heldout_rows=6)
    assert train_families(tmp_path, settings) == {"addition": 8, "sorting": 16, "expression": 16}


def test_default_weights_name_only_the_families_among_the_tasks(tmp_path):
    settings = DataSettings(families=("reversal", "sorting"), train_rows=30, heldout_rows=4)
    assert settings.train_weights == {"sorting": 2}
    assert train_families(tmp_path, settings) == {"reversal": 10, "sorting": 20}


def test_empty_weights_give_even_rows(tmp_path):
    settings = DataSettings(families=("reversal", "sorting"), weights={}, train_rows=30, heldout_rows=4)
    assert train_families(tmp_path, settings) == {"reversal": 15, "sorting": 15}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [([], None), (["--weights", ""], {}), (["--weights", "sorting=3"], {"sorting": 3})],
)
def test_the_cli_leaves_the_default_to_the_demo_and_an_empty_flag_means_even(monkeypatch, tmp_path, argv, expected):
    seen = []
    monkeypatch.setattr("frugal_lm.demo.run_demo", lambda options: seen.append(options.data.weights))
    assert main(["demo", "--out", str(tmp_path / "demo"), *argv]) == 0
    assert seen == [expected]


def test_the_demo_records_the_weights_it_drew_with(tmp_path, monkeypatch):
    from frugal_lm.demo import run

    def stop_after_marker(*args):
        raise SystemExit(0)

    monkeypatch.setattr(run, "synthesize", stop_after_marker)
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path / "demo")])
    assert json.loads((tmp_path / "demo" / "demo.json").read_text())["data"]["weights"] == {
        "expression": 2,
        "sorting": 2,
    }
