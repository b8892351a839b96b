import pytest

from frugal_lm.evals.drop_metric import best_em_f1, em_f1, normalize_span


@pytest.mark.parametrize(
    "predicted, gold, expected",
    [
        ("The Bears", ("Bears",), (1.0, 1.0)),  # articles and case ignored
        ("the big cat", ("cat",), (0.0, 0.67)),  # P = 1/2, R = 1 -> F1 = 2/3
        ("big red cat", ("red cat sat",), (0.0, 0.67)),  # P = 2/3, R = 2/3
        ("4 apples", ("5 apples",), (0.0, 0.0)),  # numbers must agree before tokens count
        ("1,000", ("1000",), (1.0, 1.0)),  # numbers compared as numbers
        (("Cowboys", "Bears"), ("Bears", "Cowboys"), (1.0, 1.0)),  # multi-span: order-free
        ("Bears", ("Bears", "Cowboys"), (0.0, 0.5)),  # one of two gold spans: (1 + 0) / 2
    ],
)
def test_known_cases(predicted, gold, expected):
    assert em_f1(predicted, gold) == expected


def test_best_over_gold_answers_skips_empty():
    assert best_em_f1("24", (("twenty four",), ("24",))) == (1.0, 1.0)
    assert best_em_f1("24", (("",),)) == (0.0, 0.0)


def test_normalize_span():
    assert normalize_span("The  Chicago-Bears!") == "chicago bears"
    assert normalize_span("3.0 yards") == "3.0 yards" and normalize_span("3 yards") == "3.0 yards"


def test_agrees_with_lm_eval_implementation():
    drop_utils = pytest.importorskip("lm_eval.tasks.drop.utils")
    cases = [
        ("the big cat", ("cat",)),
        ("4 apples and 5", ("5 apples",)),
        ("Bears Cowboys", ("Bears", "Cowboys")),
        ("1,000 yards", ("1000 yards",)),
        ("a touchdown pass", ("touchdown",)),
    ]
    for predicted, gold in cases:
        assert em_f1(predicted, gold) == drop_utils.get_metrics(predicted, gold)
