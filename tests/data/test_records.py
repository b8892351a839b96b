import json

import pytest

from frugal_lm.cli import main
from frugal_lm.data.records import read_rows, validate_row
from frugal_lm.errors import FrugalError

GOOD = {"instruction": "What is 1 + 1?", "response": "2"}


@pytest.mark.parametrize(
    "row, reason",
    [
        ([1, 2], "expected an object"),
        ({"response": "2"}, "missing field 'instruction'"),
        ({"instruction": "", "response": "2"}, "field 'instruction' is empty"),
        ({"instruction": "q", "response": 2}, "field 'response' must be a string, got int"),
        ({**GOOD, "condition": "direct,chatty"}, "unknown condition tag 'chatty'"),
        ({**GOOD, "condition": 3}, "field 'condition' must be a string"),
        ({"instruction": "x" * 101, "response": "y"}, "over the cap of 100"),
        (
            {"instruction": "ok \udfff", "response": "y"},
            "field 'instruction' holds a lone surrogate '\\udfff' at character 4 (not valid Unicode)",
        ),
        ({**GOOD, "category": "\ud800"}, "field 'category' holds a lone surrogate"),
    ],
)
def test_each_bad_row_kind_has_a_reason(row, reason):
    verdict = validate_row(row, max_chars=100)
    assert isinstance(verdict, str) and reason in verdict


def test_good_rows_default_to_direct():
    record = validate_row({**GOOD, "condition": "cot, noisy", "category": "math"})
    assert record.conditions == ("cot", "noisy") and record.category == "math"
    assert validate_row(GOOD).conditions == ("direct",)


def test_validate_command_reports_file_and_line(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([json.dumps(GOOD), "{broken", "", json.dumps({"instruction": "q"})]) + "\n")
    assert main(["data", "validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:4: missing field 'response'",
    ]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    assert main(["data", "validate", str(good)]) == 0


def test_parquet_rows_stream(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    path = tmp_path / "data.parquet"
    parquet.write_table(pyarrow.table({"instruction": ["a", ""], "response": ["b", "c"]}), path)
    results = list(read_rows(path))
    assert results[0].record is not None and results[1].where == f"{path}:row 2"
    assert results[1].reason == "field 'instruction' is empty"


def test_unreadable_inputs(tmp_path):
    with pytest.raises(FrugalError, match="no such file"):
        list(read_rows(tmp_path / "missing.jsonl"))
    (tmp_path / "x.txt").write_text("a,b\n")
    with pytest.raises(FrugalError, match="unsupported file type .txt"):
        list(read_rows(tmp_path / "x.txt"))
    good_line = json.dumps(GOOD).encode() + b"\n"
    (tmp_path / "bad.jsonl").write_bytes(good_line + b'{"instruction": "\xff"}\n' + good_line)
    results = list(read_rows(tmp_path / "bad.jsonl"))
    # The bad byte is pinned to its own line and costs only that row.
    assert [r.where.rsplit(":", 1)[1] for r in results] == ["1", "2", "3"]
    assert results[1].reason == "not valid UTF-8 (byte 18)"
    assert results[0].record is not None and results[2].record is not None


def test_a_byte_order_mark_on_line_one_is_accepted(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode() * 2)  # as Windows editors save it
    records = [result.record for result in read_rows(path)]
    assert records[0] is not None and records[0] == records[1]


def test_an_unreadable_input_is_a_one_line_error_naming_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")

    def denied(file, *args, **kwargs):  # as chmod 000 does for anyone but root (tests may run as root)
        raise PermissionError(13, "Permission denied", str(file))

    monkeypatch.setattr("frugal_lm.data.files_in.open", denied, raising=False)
    assert main(["data", "validate", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"frugal data: error: {path}: Permission denied\n" and "Traceback" not in captured.out
