"""Prompts from rows (--template, --system) and replies parsed into records (--parse)."""

import pytest

from frugal_lm.data.records import Record, RowResult
from frugal_lm.data.teacher.prompts import PromptTemplate, messages, parse_reply, read_system, row_fields
from frugal_lm.errors import FrugalError


def row(raw, instruction="What is 2+2?", response=""):
    return RowResult("in.jsonl:3", Record(instruction, response, ("direct",)), None, raw)


def test_a_template_fills_the_rows_fields_and_keeps_braces(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text('Write 3 Q/A pairs about:\n${document}\nas {"q": ..., "a": ...}; cost $$5; ask: $instruction\n')
    template = PromptTemplate(path)
    fields = row_fields(row({"document": "Cats sleep a lot.", "n": 3}))
    assert template.render(fields, "in.jsonl:3") == (
        'Write 3 Q/A pairs about:\nCats sleep a lot.\nas {"q": ..., "a": ...}; cost $5; ask: What is 2+2?\n'
    )
    assert fields["n"] == "3"


def test_a_missing_field_is_one_line_naming_template_field_and_row(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("About $document")
    with pytest.raises(FrugalError) as error:
        PromptTemplate(path).render(row_fields(row({"text": "x"})), "in.jsonl:3")
    message = str(error.value)
    assert f"--template {path}: field 'document' is not in row in.jsonl:3" in message and "\n" not in message


@pytest.mark.parametrize("text, problem", [("cost $5 $instruction", "that starts no"), ("no fields", "uses no")])
def test_bad_templates_are_refused(tmp_path, text, problem):
    path = tmp_path / "t.txt"
    path.write_text(text)
    with pytest.raises(FrugalError, match=problem):
        PromptTemplate(path)


def test_system_text_or_file(tmp_path):
    (tmp_path / "s.txt").write_text("Be brief.")
    assert read_system("Be kind.") == "Be kind." and read_system(f"@{tmp_path / 's.txt'}") == "Be brief."
    assert messages("S", "P") == [{"role": "system", "content": "S"}, {"role": "user", "content": "P"}]
    assert messages(None, "P") == [{"role": "user", "content": "P"}]
    with pytest.raises(FrugalError, match="--system @nope"):
        read_system("@nope")


def test_parse_text_lines_qa_pairs_and_json():
    assert parse_reply("Four.", "text") == [(None, "Four.")]
    assert parse_reply("  ", "text") == "the reply is empty"
    assert parse_reply("1. What is a cat?\n\n- Why is the sky blue?\n", "lines") == [
        ("What is a cat?", ""),
        ("Why is the sky blue?", ""),
    ]
    reply = "Q1: What do cats do?\nA1: They sleep.\nA lot.\n\n**Question 2:** Where?\n**Answer 2:** Home."
    assert parse_reply(reply, "qa-pairs") == [("What do cats do?", "They sleep.\nA lot."), ("Where?", "Home.")]
    assert parse_reply("Nothing here.", "qa-pairs").startswith("--parse qa-pairs: no")
    reply = '```json\n[{"question": "Q?", "answer": "A."}, {"instruction": "I", "response": "R"}]\n```'
    assert parse_reply(reply, "json") == [("Q?", "A."), ("I", "R")]
    assert "item 2 is not an object" in parse_reply('[{"question": "Q?", "answer": "A."}, {"q": 1}]', "json")
    assert parse_reply("not json", "json").startswith("--parse json: not JSON")


def test_a_system_file_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "s.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(FrugalError, match="not UTF-8 text"):
        read_system(f"@{tmp_path / 's.txt'}")
