"""`frugal data` commands' messages."""

import json

from frugal_lm.cli import main


def test_a_tokenizer_smaller_than_asked_for_says_the_data_saturated_it(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"instruction": f"add {i} and {i}", "response": str(2 * i)}) + "\n" for i in range(20))
    )
    assert main(["data", "tokenizer", "--vocab-size", "32768", "--out", str(tmp_path / "tok"), str(records)]) == 0
    out = capsys.readouterr().out
    assert "-token byte-level BPE" in out
    assert "(asked for 32,768: every word in the data is already a single token, so nothing is left to merge" in out
