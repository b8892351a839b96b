import gzip
import json

import pytest

from frugal_lm.data.readers import (
    ReadOptions,
    SourceCounts,
    SourceReader,
    describe_source,
    parse_field_map,
    read_examples,
)
from frugal_lm.errors import FrugalError
from frugal_lm.infer.openai_schema import ChatMessage, chat_instruction

SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "You are terse."},
        {"from": "human", "value": "Capital of France?"},
        {"from": "gpt", "value": "Paris."},
        {"from": "human", "value": "And of Italy?"},
        {"from": "gpt", "value": "Rome."},
        {"from": "human", "value": "Sum of 2 and 3?"},
        {"from": "gpt", "value": "2 + 3 = 5\n#### 5"},
    ]
}
ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_each_assistant_turn_is_an_example_rendered_as_serve_renders_its_prefix(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [SHAREGPT])
    results = list(read_examples(path))
    messages = [ChatMessage(role=ROLES[m["from"]], content=m["value"]) for m in SHAREGPT["conversations"]]
    assert [r.where for r in results] == [f"{path}:1 turn {k}" for k in (1, 2, 3)]
    for result, answer_index in zip(results, (2, 4, 6)):
        assert result.record.instruction == chat_instruction(messages[:answer_index])
        assert result.record.response == messages[answer_index].text
    assert results[0].record.instruction == "You are terse.\n\nCapital of France?"  # the system prompt is kept
    assert [r.record.conditions for r in results] == [("direct",), ("direct",), ("cot",)]
    assert results[0].record.source_format == "sharegpt"


@pytest.mark.parametrize("turns, kept", [("first", 1), ("last", 3)])
def test_turns_first_or_last(tmp_path, turns, kept):
    path = write_jsonl(tmp_path / "chat.jsonl", [SHAREGPT])
    results = list(read_examples(path, ReadOptions(turns=turns)))
    assert [r.where.endswith(f"turn {kept}") for r in results if r.record] == [True]
    skipped = [r for r in results if r.skipped]
    assert len(skipped) == 2 and all(r.reason == f"turns: not selected by --turns {turns}" for r in skipped)


def test_openai_messages_with_tool_calls_are_counted_not_dropped(tmp_path):
    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in "}, {"type": "text", "text": "Oslo?"}]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
            {"role": "tool", "content": "rain", "tool_call_id": "1"},
            {"role": "assistant", "content": "Rain."},
        ]
    }
    plain = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    counts = SourceCounts()
    for result in read_examples(write_jsonl(tmp_path / "m.jsonl", [row, plain])):
        counts.add(result)
    assert (counts.good, counts.bad, dict(counts.skipped)) == (1, 0, {"tool": 2})
    assert counts.summary() == "1 good rows, 0 bad rows, 2 turns skipped (tool 2)"


def test_a_conversation_without_a_final_answer_is_one_bad_row(tmp_path):
    open_chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    open_chat["messages"].append({"role": "user", "content": "c"})
    path = write_jsonl(tmp_path / "m.jsonl", [open_chat])
    [result] = read_examples(path)
    assert result.where == f"{path}:1" and not result.skipped
    assert result.reason == "conversation does not end with an assistant turn (its last message is from user)"
    prompts = list(read_examples(path, ReadOptions(require_response=False)))
    assert [r.record.response for r in prompts] == ["b", ""]


def test_a_five_row_alpaca_json_array(tmp_path):
    rows = [
        {"instruction": f"Add {i} and 1.", "input": "" if i % 2 else f"n={i}", "output": str(i + 1)} for i in range(5)
    ]
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(rows, indent=4))
    reader = SourceReader(path)
    records = [r.record for r in reader]
    assert reader.format == "alpaca" and all(records) and len(records) == 5
    assert records[0].instruction == "Add 0 and 1.\n\nn=0" and records[1].instruction == "Add 1 and 1."


def test_gsm8k_rows_become_cot(tmp_path):
    rows = [
        {
            "question": "Natalia sold 48 clips in April and half as many in May. How many?",
            "answer": "48/2 = 24\n#### 72",
        },
        {"question": "What is 2 + 2?", "answer": "4"},
    ]
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert [r.record.conditions for r in read_examples(path)] == [("cot",), ("direct",)]
    assert describe_source(path) == "question-answer"


def test_dolly_context_and_category(tmp_path):
    row = {"instruction": "Who wrote it?", "context": "Ada wrote it.", "response": "Ada", "category": "closed_qa"}
    [result] = read_examples(write_jsonl(tmp_path / "dolly.jsonl", [row]))
    assert result.record.instruction == "Who wrote it?\n\nAda wrote it." and result.record.category == "closed_qa"


def test_map_reads_other_columns(tmp_path):
    rows = [{"q": "2+2?", "a": "4", "tag": "cot", "topic": "math"}, {"q": "3+3?", "answer": "6"}]
    path = write_jsonl(tmp_path / "custom.jsonl", rows)
    options = ReadOptions(field_map=parse_field_map("instruction=q, response=a,condition=tag,category=topic"))
    reader = SourceReader(path, options)
    first, second = reader
    assert reader.format == "mapped"
    assert (first.record.instruction, first.record.conditions, first.record.category) == ("2+2?", ("cot",), "math")
    assert second.reason == "missing mapped column 'a' (--map response=a); the row has 'q', 'answer'"


@pytest.mark.parametrize(
    "text, message",
    [
        ("instruction", "'instruction' is not KEY=FIELD"),
        ("instruction=q,answer=a", "unknown key 'answer'"),
        ("instruction=q,instruction=r", "'instruction' is mapped twice"),
    ],
)
def test_a_bad_map_is_a_one_line_error(text, message):
    with pytest.raises(FrugalError, match=message):
        parse_field_map(text)


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(FrugalError, match="--map: names no column for response"):
        ReadOptions(field_map={"instruction": "q"})
    with pytest.raises(FrugalError, match="cannot be combined with --format alpaca"):
        ReadOptions(format="alpaca", field_map={"instruction": "q", "response": "a"})
    with pytest.raises(FrugalError, match="--format chatml: unknown format"):
        ReadOptions(format="chatml")
    with pytest.raises(FrugalError, match="--condition cot,chatty: unknown tag 'chatty'"):
        SourceReader(tmp_path / "x.jsonl", ReadOptions(condition="cot,chatty"))


def test_condition_tags_a_whole_source(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d", "condition": "cot"}]
    results = read_examples(write_jsonl(tmp_path / "pc.jsonl", rows), ReadOptions(condition="noisy"))
    assert [r.record.conditions for r in results] == [("noisy",), ("cot", "noisy")]


def test_a_file_mixing_formats_names_both(tmp_path):
    rows = [{"question": "a", "answer": "b"}, {"instruction": "c", "response": "d"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    results = list(read_examples(path))
    assert results[0].record is not None
    assert results[1].reason == (
        f"a records row in a file of question-answer rows (from {path}:1): a file mixes formats; "
        "split it, or force one with --format"
    )


def test_an_unknown_row_shape_names_its_fields(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"query": "a", "reply": "b"}])
    [result] = read_examples(path)
    assert result.where == f"{path}:1" and result.reason.startswith("unknown row shape with fields 'query', 'reply'")
    assert describe_source(path) is None


def test_a_forced_format_names_the_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"instruction": "a", "response": "b"}])
    [result] = read_examples(path, ReadOptions(format="alpaca"))
    assert result.reason == "missing field 'output'"
    [result] = read_examples(write_jsonl(tmp_path / "e.jsonl", [{"question": "a", "answer": " "}]))
    assert result.reason == "field 'answer' is empty"


def test_prompt_only_rows_when_no_response_is_required(tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"instruction": "Name a colour.", "input": ""}])
    [result] = read_examples(path)
    assert result.reason == "missing field 'output'"
    [result] = read_examples(path, ReadOptions(require_response=False))
    assert result.record.instruction == "Name a colour." and result.record.response == ""


def test_conversational_prompt_completion(tmp_path):
    row = {
        "prompt": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "2+2?"},
        ],
        "completion": [{"role": "assistant", "content": "4"}],
    }
    [result] = read_examples(write_jsonl(tmp_path / "trl.jsonl", [row]))  # the prompt's answer is context only
    assert result.where.endswith(":1 turn 1") and result.record.response == "4"
    assert result.record.instruction == "User: hi\n\nAssistant: hello\n\nUser: 2+2?"


def test_a_forced_format_on_rows_that_are_not_objects_names_each_row(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[[1, 2], "x", {"prompt": "p", "completion": "c"}]')
    results = list(read_examples(path, ReadOptions(format="prompt-completion")))
    assert [result.reason for result in results[:2]] == [
        "expected an object with instruction and response, got list",
        "expected an object with instruction and response, got str",
    ]
    assert results[2].record is not None
