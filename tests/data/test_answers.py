import pytest

from frugal_lm.data.answers import extract_number, gsm8k_final_answer, last_boxed, math_verify_match, numbers_match


@pytest.mark.parametrize(
    "output, expected",
    [
        ("#### 1,234", "1234"),  # '#### ' format with thousands commas
        ("So 3 + 4 = 7.\n#### 7", "7"),  # the '####' line wins over earlier numbers
        ("The answer is -5 apples. Check: 2 + 3 = 5", "-5"),  # "answer is" wins over the last number
        ("It costs $1,234.50 in total.", "1234.5"),  # currency, commas, decimals
        ("3 cats and 4 dogs make 7 animals", "7"),  # else the last number
        ("The temperature is \u22123 degrees", "-3"),  # typographic minus
        ("She runs 12km every day", "12"),  # unit glued to the number
        ("The answer is 1,000,000.", "1000000"),  # sentence-final period is not a decimal
        ("no number here", None),
    ],
)
def test_extract_number(output, expected):
    assert extract_number(output) == expected


def test_numbers_match_ignores_formatting_not_value():
    assert numbers_match("1234", "1234.0") and numbers_match("-3", "-3") and numbers_match("0.5", ".5")
    assert not numbers_match("1234", "1235") and not numbers_match("3", "-3") and not numbers_match("7", None)


def test_gsm8k_final_answer():
    assert gsm8k_final_answer("a\n#### 1,234") == "1234"
    with pytest.raises(ValueError):
        gsm8k_final_answer("42")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),  # nested braces
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
        ("\\fbox{x+1}", "x+1"),
        ("$\\boxed 5$", "5"),
        ("\\boxed{unterminated", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_math_verify_equivalence():
    assert math_verify_match("\\frac{3}{4}", "We find $\\boxed{0.75}$.") == ("0.75", True)
    assert math_verify_match("\\frac{3}{4}", "thus \\boxed{\\frac{6}{8}}")[1]
    assert not math_verify_match("2", "so $x = \\boxed{-2}$")[1]
    assert not math_verify_match("2", "I do not know")[1]


def test_as_number_accepts_one_number_with_its_formatting_only():
    from decimal import Decimal

    from frugal_lm.data.answers import as_number

    assert as_number("$1,234.50 dollars") == Decimal("1234.50") and as_number("-7.") == Decimal("-7")
    for not_one_number in ["1/2", "x = 3", "2 + 3", "\\frac{1}{2}", "(4)", "no digits"]:
        assert as_number(not_one_number) is None
