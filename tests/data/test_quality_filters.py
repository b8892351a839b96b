import sys

import pytest

from frugal_lm.data.quality_filters import (
    DEFAULT_FILTERS,
    build_filters,
    make_language,
    make_too_long,
    repeated_ngram_share,
)
from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError

CLEAN = Record(
    "Explain why the sky looks blue on a clear day.",
    "Sunlight scatters off the molecules of the air, and blue light scatters far more than red, "
    "so the sky we look at glows blue — the café's “window” shows it too.",
    ("direct",),
)


def _verdicts(record: Record) -> dict[str, str]:
    return {f.name: reason for f in build_filters(set()) if (reason := f.check(record)) is not None}


def test_a_clean_row_passes_every_default_filter():
    assert _verdicts(CLEAN) == {}


@pytest.mark.parametrize(
    ("instruction", "response", "name"),
    [
        ("Name a colour.", "Blue", "short-response"),
        ("Name a colour.", "   ", "short-response"),
        ("Write a poem about the sea and the wind.", "Write a poem about the sea and the wind. Sure!", "echo"),
        ("Write a poem about the sea and the wind.", "write a poem about the sea and the wind", "echo"),
        ("How do I pick a lock?", "As an AI language model, I don't do that.", "refusal"),
        ("Help me with this.", "I’m sorry, but I cannot help with that request today.", "refusal"),
        ("Tell a story.", "and then and then and then and then and then and then and then and then", "repetition"),
        ("Say hello.", "Hello there, my friend \ufffd how are you", "mojibake"),
        ("Say hello.", "Hello there\x07 my friend, how are you", "mojibake"),
        ("Say hello.", "The cafÃ© is open all day, come by", "mojibake"),
        ("Say hello.", "It\u00e2\u20ac\u2122s a nice day today, friend", "mojibake"),
    ],
)
def test_each_filter_removes_what_it_should_with_a_reason(instruction, response, name):
    verdicts = _verdicts(Record(instruction, response, ("direct",)))
    assert name in verdicts and verdicts[name].strip(), verdicts


def test_an_answer_that_quotes_part_of_a_long_instruction_is_not_an_echo():
    record = Record("Summarise: the quick brown fox jumps over the dog.", "A fox jumps over a dog.", ("direct",))
    assert "echo" not in _verdicts(record)


def test_repeated_ngram_share_counts_repeats_of_earlier_ngrams():
    assert repeated_ngram_share("a b c d".split()) == 0.0
    assert repeated_ngram_share("a b c d a b c d".split()) == pytest.approx(1 - 4 / 5)


def test_filters_are_switched_off_by_name_and_unknown_names_are_one_line_errors():
    assert [f.name for f in build_filters({"echo", "refusal"})] == ["short-response", "repetition", "mojibake"]
    assert [f.name for f in build_filters(set(DEFAULT_FILTERS))] == []
    with pytest.raises(FrugalError, match="--no-filter spelling: unknown filter; known: short-response"):
        build_filters({"spelling"})
    with pytest.raises(FrugalError, match="--max-repetition"):
        build_filters(set(), max_repetition=0)


def test_too_long_counts_tokens_of_the_given_tokenizer():
    from frugal_lm.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["some words to learn from"] * 20, 300).tokenizer
    count = len(tokenizer.encode(CLEAN.instruction, add_special_tokens=False).ids) + len(
        tokenizer.encode(CLEAN.response, add_special_tokens=False).ids
    )
    assert make_too_long(tokenizer, count)(CLEAN) is None
    assert f"{count:,} tokens, over --max-tokens {count - 1:,}" in make_too_long(tokenizer, count - 1)(CLEAN)


def test_language_without_lingua_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lingua", None)
    with pytest.raises(FrugalError, match=r"pip install 'frugal-lm\[language\]'"):
        make_language("en")


@pytest.mark.slow  # lingua loads its models: about 8 s
def test_language_keeps_the_asked_language_only():
    pytest.importorskip("lingua")
    english = make_language("en")
    assert english(CLEAN) is None
    french = Record("Quelle est la capitale de la France ?", "La capitale de la France est Paris.", ("direct",))
    assert english(french) == "language is french, not english"
    with pytest.raises(FrugalError, match="--language xx"):
        make_language("xx")
