import pytest

from frugal_lm.data.formats import (
    FLAT_FORMATS,
    FORMATS,
    detect_format,
    ends_with_final_answer,
    flat_fields,
    unknown_shape,
)


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"messages": []}, "messages"),
        ({"conversations": [], "id": "x"}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"instruction": "a", "input": "b"}, "alpaca"),  # prompt-only Alpaca
        ({"instruction": "a", "context": "", "response": "b", "category": "qa"}, "dolly"),
        ({"prompt": "a", "completion": "b"}, "prompt-completion"),
        ({"question": "a", "answer": "b"}, "question-answer"),
        ({"instruction": "a", "response": "b", "condition": "cot"}, "records"),
        ({"instruction": "a"}, "records"),
        ({"text": "a"}, None),
        (["instruction", "response"], None),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row) == expected
    assert expected is None or expected in FORMATS


def test_unknown_shape_names_the_fields_and_the_formats_it_could_be():
    reason = unknown_shape({"query": "a", "answer": "b"})
    assert reason.startswith("unknown row shape with fields 'query', 'answer'; it could be question-answer")
    assert "messages" not in reason and "--map instruction=FIELD,response=FIELD" in reason
    # Nothing in common with any format: every format is listed.
    assert all(name in unknown_shape({"text": "a"}) for name in FORMATS)
    assert unknown_shape([1]) == "expected an object with instruction and response, got list"


def test_alpaca_input_and_dolly_context_join_the_instruction_after_a_blank_line():
    fields, names = flat_fields(FLAT_FORMATS["alpaca"], {"instruction": "Sum", "input": "1 2", "output": "3"})
    assert fields == {"instruction": "Sum\n\n1 2", "response": "3"} and names["response"] == "output"
    fields, _ = flat_fields(FLAT_FORMATS["alpaca"], {"instruction": "Sum", "input": "  ", "output": "3"})
    assert fields["instruction"] == "Sum"  # an empty input adds nothing
    row = {"instruction": "Who?", "context": "Ada wrote it.", "response": "Ada", "category": "closed_qa"}
    fields, _ = flat_fields(FLAT_FORMATS["dolly"], row)
    assert fields == {"instruction": "Who?\n\nAda wrote it.", "response": "Ada", "category": "closed_qa"}
    assert flat_fields(FLAT_FORMATS["alpaca"], {"instruction": "a", "input": 3, "output": "b"}) == (
        "field 'input' must be a string, got int"
    )


def test_a_worked_solution_ending_in_a_final_answer_is_cot():
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72.\n#### 72"
    fields, _ = flat_fields(FLAT_FORMATS["question-answer"], {"question": "How many?", "answer": answer})
    assert fields["condition"] == "cot"
    fields, _ = flat_fields(FLAT_FORMATS["question-answer"], {"question": "q", "answer": answer, "condition": "noisy"})
    assert fields["condition"] == "noisy"  # the row's own condition wins
    assert ends_with_final_answer("#### 4") and ends_with_final_answer("a\n####  -3.5 \n")
    assert not ends_with_final_answer("the answer is #### 72") and not ends_with_final_answer("a\n####")
