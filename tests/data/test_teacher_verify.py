"""--verify final-answer and json: known answers, final answers, and their equivalence."""

import pytest

from frugal_lm.data.teacher.verify import answers_match, final_answer, json_payload, known_answer, rejection


@pytest.mark.parametrize(
    "response, answer",
    [
        ("She has 3 + 4 = 7 apples.\n#### 7", "7"),
        ("Total: 1,080\n#### 1,080", "1080"),
        ("so the answer is $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("42", "42"),
        ("", None),
        ("   ", None),
    ],
)
def test_known_answer_reads_the_rows_response(response, answer):
    assert known_answer(response) == answer


@pytest.mark.parametrize(
    "output, answer",
    [
        ("3 + 4 = 7\n#### 7\nThat is all.", "7"),
        ("the result is \\boxed{12}", "12"),
        ("We add 2 and 3 to get 5. The answer is 5.", "5"),
        ("no number here", None),
        ("#### ", None),
    ],
)
def test_final_answer_after_hashes_else_boxed_else_last_number(output, answer):
    assert final_answer(output) == answer


@pytest.mark.parametrize(
    "gold, predicted, match",
    [
        ("1080", "1,080", True),
        ("18", "$18 dollars", True),
        ("18", "18.0", True),
        ("18", "19", False),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "1/2", True),
        ("x^2 + 1", "1 + x^2", True),
        ("Paris", "paris", True),
        ("Paris", "Lyon", False),
        ("7", None, False),
    ],
)
def test_answers_match_numbers_exactly_and_expressions_by_math_verify(gold, predicted, match):
    assert answers_match(gold, predicted) is match


def test_rejection_says_why():
    assert rejection("final-answer", "so #### 7", "7") is None
    assert rejection("final-answer", "so #### 8", "7") == "final answer '8' does not match the known answer '7'"
    assert rejection("json", '```json\n{"a": 1}\n```', None) is None
    assert rejection("json", "{'a': 1}", None).startswith("--verify json: not JSON")
    assert rejection(None, "anything", None) is None


def test_json_payload_reads_a_whole_reply_or_its_one_fenced_block():
    assert json_payload("[1, 2]") == [1, 2]
    assert json_payload('Here it is:\n```json\n{"q": "x"}\n```\nDone.') == {"q": "x"}
    with pytest.raises(ValueError, match="not JSON"):
        json_payload("Here: {oops}")
