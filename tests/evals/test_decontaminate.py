import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.evals.datasets import load_items
from frugal_lm.evals.decontaminate import build_index, check_source, item_text, sidecar_path, words

from .conftest import GSM8K, WINOGRANDE

PLANTED = {
    "instruction": "Fill in: " + WINOGRANDE[0]["sentence"] + " Explain.",
    "response": "trophy",
    "condition": "direct",
    "category": "planted",
}
NEAR_MISS = {"instruction": WINOGRANDE[0]["sentence"].replace("suitcase", "box"), "response": "trophy"}
SHORT_PLANTED = {"instruction": "What is 123 + 456?", "response": "579"}  # a held-out item, whole
SHORT_NEAR_MISS = {"instruction": "What is 123 + 457?", "response": "580"}
CLEAN = {"instruction": "Reverse the string: abc", "response": "cba"}


@pytest.fixture
def benchmarks(benchmark_dir):
    (benchmark_dir / "heldout.jsonl").write_text(
        json.dumps(
            {"instruction": "What is 123 + 456?", "response": "579", "condition": "direct", "category": "addition"}
        )
        + "\n"
    )
    return benchmark_dir


def brute_force_contaminated(row_text, item_texts, n):
    """Independent reference: some n-word window of an item (the whole item if shorter)
    occurs as a contiguous word run of the row."""
    row = words(row_text)
    for text in item_texts:
        item = words(text)
        size = min(n, len(item))
        windows = {tuple(item[i : i + size]) for i in range(len(item) - size + 1)}
        if any(tuple(row[i : i + size]) in windows for i in range(len(row) - size + 1)):
            return True
    return False


def test_finds_planted_overlaps_not_near_misses(benchmarks, tmp_path):
    source = tmp_path / "train.jsonl"
    rows = [CLEAN, PLANTED, NEAR_MISS, SHORT_PLANTED, SHORT_NEAR_MISS]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")
    index, missing = build_index(benchmarks)
    assert "synthetic" not in missing and "winogrande" not in missing
    report = check_source(source, index, clean_dir=tmp_path / "clean")
    assert report.per_benchmark["winogrande"] == 1 and report.per_benchmark["synthetic"] == 1
    assert report.contaminated_rows == 2 and report.rows == 6 and report.bad_rows == 1
    sidecar = json.loads(sidecar_path(source).read_text())
    assert sidecar == {
        "source": str(source),
        "source_size": source.stat().st_size,
        "source_mtime": source.stat().st_mtime,
        "ngram": 13,
        "benchmarks": {
            name: {"test_items": index.test_items[name], "contaminated_rows": report.per_benchmark[name]}
            for name in index.test_items
        },
        "contaminated_rows": 2,
        "rows": 6,
        "bad_rows": 1,
    }
    assert sidecar["benchmarks"]["winogrande"] == {"test_items": 2, "contaminated_rows": 1}
    clean = [json.loads(line) for line in (tmp_path / "clean/train.jsonl").read_text().splitlines()]
    assert clean == [CLEAN, NEAR_MISS, SHORT_NEAR_MISS]
    # the same verdicts as a brute-force scan over every benchmark item
    items = [
        item_text(item) for task in index.test_items if task != "synthetic" for item in load_items(task, benchmarks)
    ]
    items.append("What is 123 + 456?\n579")
    expected = [brute_force_contaminated(f"{r['instruction']}\n{r['response']}", items, 13) for r in rows]
    assert expected == [False, True, False, True, False]


def test_parquet_source_keeps_every_field_in_the_clean_copy(benchmarks, tmp_path):
    source = tmp_path / "math.parquet"
    gsm_row = {"instruction": GSM8K[0]["question"], "response": GSM8K[0]["answer"], "condition": "cot", "id": 7}
    pq.write_table(pa.Table.from_pylist([gsm_row, {**CLEAN, "condition": "direct", "id": 8}]), source)
    index, _ = build_index(benchmarks, ngram=8)
    report = check_source(source, index, clean_dir=tmp_path / "clean")
    assert report.per_benchmark["gsm8k"] == 1 and report.contaminated_rows == 1
    assert pq.read_table(tmp_path / "clean/math.parquet").to_pylist() == [{**CLEAN, "condition": "direct", "id": 8}]


def test_cli_report_and_errors(benchmarks, tmp_path, capsys):
    source = tmp_path / "train.jsonl"
    source.write_text(json.dumps(PLANTED) + "\n" + json.dumps(CLEAN) + "\n")
    assert main(["data", "decontaminate", "--benchmarks", str(benchmarks), str(source)]) == 0
    out = capsys.readouterr().out
    assert "13-gram overlap" in out and f"| {source} | 2 | 1 (50.00%) |" in out
    assert "not found in the benchmarks directory" not in out  # every benchmark has a fixture
    assert main(["data", "decontaminate", "--benchmarks", str(tmp_path / "none"), str(source)]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert (
        main(["data", "decontaminate", "--benchmarks", str(benchmarks), "--write-clean", str(tmp_path), str(source)])
        == 2
    )
    assert "would overwrite the source" in capsys.readouterr().err
    with pytest.raises(FrugalError, match="no benchmark test set found"):
        build_index(tmp_path)
