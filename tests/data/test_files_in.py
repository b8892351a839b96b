import gzip
import json

import pyarrow
import pyarrow.parquet as parquet
import pytest

from frugal_lm.data.files_in import iter_rows, source_files, source_stamp
from frugal_lm.errors import FrugalError

ROWS = [{"instruction": f"question {i}", "response": f"answer {i}"} for i in range(3)]


def jsonl_bytes(rows=ROWS) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def csv_bytes(rows=ROWS, delimiter=",") -> bytes:
    lines = [delimiter.join(rows[0])] + [delimiter.join(row.values()) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def rows_of(path):
    results = list(iter_rows(path))
    assert all(error is None for _, _, error in results), results
    return [row for _, row, _ in results]


@pytest.mark.parametrize(
    "name, content",
    [
        ("data.jsonl", jsonl_bytes()),
        ("data.json", json.dumps(ROWS, indent=2).encode()),  # a JSON array, as Alpaca publishes it
        ("data.json", b"\xef\xbb\xbf" + json.dumps(ROWS).encode()),  # with a byte-order mark
        ("data.jsonl", json.dumps(ROWS).encode()),  # an array whatever the suffix says
        ("data.csv", csv_bytes()),
        ("data.tsv", csv_bytes(delimiter="\t")),
        ("data.jsonl.gz", gzip.compress(jsonl_bytes())),
        ("data.json.gz", gzip.compress(json.dumps(ROWS).encode())),
        ("data.csv.gz", gzip.compress(csv_bytes())),
    ],
)
def test_every_text_type_gives_the_same_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert rows_of(path) == ROWS


def test_zstandard_compressed_files(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    compress = zstandard.ZstdCompressor().compress
    (tmp_path / "data.jsonl.zst").write_bytes(compress(jsonl_bytes()))
    (tmp_path / "data.json.zst").write_bytes(compress(json.dumps(ROWS).encode()))
    assert rows_of(tmp_path / "data.jsonl.zst") == ROWS == rows_of(tmp_path / "data.json.zst")


def test_parquet_and_arrow_files(tmp_path):
    table = pyarrow.Table.from_pylist(ROWS)
    parquet.write_table(table, tmp_path / "data.parquet")
    with pyarrow.ipc.new_stream(tmp_path / "stream.arrow", table.schema) as writer:
        writer.write_table(table)
    with pyarrow.ipc.new_file(tmp_path / "file.arrow", table.schema) as writer:
        writer.write_table(table)
    for name in ("data.parquet", "stream.arrow", "file.arrow"):
        assert rows_of(tmp_path / name) == ROWS
    assert [where for where, _, _ in iter_rows(tmp_path / "file.arrow")][-1] == f"{tmp_path / 'file.arrow'}:row 3"


def test_where_is_the_line_or_the_row(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\n" + jsonl_bytes(ROWS[:2]))
    assert [where for where, _, _ in iter_rows(tmp_path / "a.jsonl")] == [f"{tmp_path}/a.jsonl:{n}" for n in (2, 3)]
    (tmp_path / "a.json").write_text(json.dumps(ROWS, indent=2))
    assert [where for where, _, _ in iter_rows(tmp_path / "a.json")][1] == f"{tmp_path}/a.json:row 2"
    # A quoted value over two lines: the next row starts on line 4.
    (tmp_path / "a.csv").write_text('instruction,response\n"two\nlines",b\nc,d\n')
    results = list(iter_rows(tmp_path / "a.csv"))
    assert [where for where, _, _ in results] == [f"{tmp_path}/a.csv:2", f"{tmp_path}/a.csv:4"]
    assert results[0][1] == {"instruction": "two\nlines", "response": "b"}


def test_bad_rows_and_bad_files(tmp_path):
    (tmp_path / "short.csv").write_text("instruction,response\nonly one value\n")
    [(where, row, error)] = list(iter_rows(tmp_path / "short.csv"))
    assert row is None and error == "has 1 values, the header has 2 columns" and where.endswith("short.csv:2")
    (tmp_path / "broken.json").write_text(json.dumps(ROWS)[:-20])
    with pytest.raises(FrugalError, match=r"broken.json: not valid JSON after row 2"):
        list(iter_rows(tmp_path / "broken.json"))
    (tmp_path / "fake.jsonl.gz").write_bytes(jsonl_bytes())
    with pytest.raises(FrugalError, match="fake.jsonl.gz: not a readable gzip file"):
        list(iter_rows(tmp_path / "fake.jsonl.gz"))
    (tmp_path / "x.parquet.gz").write_bytes(b"")
    with pytest.raises(FrugalError, match="a compressed .parquet file is not supported"):
        list(iter_rows(tmp_path / "x.parquet.gz"))
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(FrugalError, match="unsupported file type .xml"):
        list(iter_rows(tmp_path / "x.xml"))
    with pytest.raises(FrugalError, match="no such file or folder"):
        list(iter_rows(tmp_path / "missing.jsonl"))


def test_a_folder_of_shards_is_read_in_name_order(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    parquet.write_table(pyarrow.Table.from_pylist(ROWS[1:]), shards / "train-00001-of-00002.parquet")
    parquet.write_table(pyarrow.Table.from_pylist(ROWS[:1]), shards / "train-00000-of-00002.parquet")
    (shards / "README.md").write_text("not data")
    assert rows_of(shards) == ROWS
    assert [where for where, _, _ in iter_rows(shards)][1] == f"{shards}/train-00001-of-00002.parquet:row 1"
    size, _ = source_stamp(shards)
    parquet.write_table(pyarrow.Table.from_pylist(ROWS), shards / "train-00001-of-00002.parquet")
    assert source_stamp(shards)[0] != size  # a changed shard changes the folder's stamp


def test_folders_that_would_mix_splits_are_refused(tmp_path):
    shards = tmp_path / "data"
    shards.mkdir()
    for split in ("train", "test"):
        (shards / f"{split}-00000-of-00001.jsonl").write_bytes(jsonl_bytes())
    with pytest.raises(FrugalError, match="holds shards of the splits test, train"):
        source_files(shards)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(FrugalError, match="no data files in it .*; its folders: sub"):
        source_files(tmp_path / "empty")


def _save_to_disk_by_hand(folder, rows):
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow stream shards listed in state.json."""
    folder.mkdir()
    table = pyarrow.Table.from_pylist(rows)
    with pyarrow.ipc.new_stream(folder / "data-00000-of-00001.arrow", table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    (folder / "dataset_info.json").write_text("{}")


def test_a_saved_dataset_folder_is_read_without_the_datasets_library(tmp_path):
    _save_to_disk_by_hand(tmp_path / "saved", ROWS)
    assert rows_of(tmp_path / "saved") == ROWS
    (tmp_path / "dict").mkdir()
    _save_to_disk_by_hand(tmp_path / "dict" / "train", ROWS)
    _save_to_disk_by_hand(tmp_path / "dict" / "test", ROWS)
    (tmp_path / "dict" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(FrugalError, match=r"a DatasetDict with splits test, train; give one split's folder, e\.g\."):
        source_files(tmp_path / "dict")


def test_a_folder_saved_by_the_datasets_library(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the datasets library is not installed (pip install datasets)")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert rows_of(tmp_path / "saved") == ROWS
    datasets.Dataset.from_list(ROWS).shuffle(seed=0).save_to_disk(str(tmp_path / "shuffled"))
    assert sorted(rows_of(tmp_path / "shuffled"), key=str) == sorted(ROWS, key=str)


def test_a_gzip_file_damaged_midway_is_one_line_naming_it(tmp_path):
    lines = "".join(json.dumps({"instruction": f"i{n}", "response": "r"}) + "\n" for n in range(3000))
    damaged = bytearray(gzip.compress(lines.encode()))
    damaged[len(damaged) // 2] ^= 0xFF
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(FrugalError, match="rows.jsonl.gz: not a readable gzip file"):
        list(iter_rows(path))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ("{bad", "not valid JSON"),
        ("[1]", "expected an object, got list"),
        ('{"_data_files": [{"filename": "../x.arrow"}]}', "outside the folder"),
    ],
)
def test_a_bad_saved_dataset_state_is_one_line(tmp_path, state, message):
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "state.json").write_text(state)
    (folder / "dataset_info.json").write_text("{}")
    with pytest.raises(FrugalError, match=message):
        list(iter_rows(folder))


def test_a_csv_field_longer_than_the_csv_modules_default_limit_is_read(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("instruction,response\n" + "x" * 200_000 + ",ok\n")
    [(where, row, problem)] = list(iter_rows(path))
    assert problem is None and len(row["instruction"]) == 200_000
