"""Quality filters for instruction -> response pairs: each says why a record should go, or None.

Every filter has a name (the `step` of its removals in `removed.jsonl`, and the name in
`--no-filter NAME`) and returns a one-line reason. The rules, and why:

- `short-response`: the response is empty or one word: nothing to learn from it (turn it
  off for data whose answers are single labels or numbers);
- `echo`: the response repeats the instruction (the same words; or the instruction, when at
  least 5 words, is 80% or more of the response's words and appears in it as is);
- `refusal`: the response holds boilerplate of a chat model's refusal or disclaimer
  (REFUSAL_PHRASES, matched case-insensitively with straight apostrophes);
- `repetition`: more than `max_repetition` (default 0.3) of the response's word 4-grams
  repeat an earlier 4-gram of it, as Gopher's quality rules measure degenerate text;
- `mojibake`: control characters (other than tab and newline), U+FFFD (a decoder's
  replacement character), or UTF-8 decoded as Latin-1 / Windows-1252 ("Ã©", "â€™", "Â ");
- `too-long` (with `--max-tokens N --tokenizer DIR`): instruction and response together are
  over N tokens of that tokenizer;
- `language` (with `--language CODE`): lingua does not detect that language in the pair.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from frugal_lm.data.near_dedup import normalised_words
from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError

REFUSAL_PHRASES = (
    "as an ai language model",
    "as a language model",
    "as an ai model",
    "as an ai assistant",
    "as a large language model",
    "i'm just an ai",
    "i am just an ai",
    "i cannot assist",
    "i can't assist",
    "i'm unable to assist",
    "i am unable to assist",
    "i cannot fulfill",
    "i can't fulfill",
    "i cannot provide assistance",
    "i'm sorry, but i cannot",
    "i'm sorry, but i can't",
    "i apologize, but i cannot",
    "my knowledge cutoff",
    "openai's content policy",
)
DEFAULT_MAX_REPETITION = 0.3
REPETITION_NGRAM = 4
ECHO_SHARE = 0.8

# UTF-8 read as Latin-1 or Windows-1252: a lead byte shown as Ã/Â/Å/Ä/Ð/Ñ followed by a
# continuation byte shown as U+0080-U+00BF or one of the Windows-1252 specials; "â€" starts
# every mis-decoded curly quote, dash and ellipsis.
_CP1252_SPECIALS = (
    "\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152\u017d"
    "\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
)
_MOJIBAKE = re.compile(f"[\u00c2\u00c3\u00c5\u00c4\u00d0\u00d1][\u0080-\u00bf{_CP1252_SPECIALS}]|\u00e2\u20ac")
# Control characters (Unicode category Cc: C0, DEL, C1) other than tab, newline and carriage return.
_CONTROL = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_BROKEN_TEXT = re.compile(f"[{_CONTROL}\ufffd]|{_MOJIBAKE.pattern}")


def short_response(record: Record) -> str | None:
    words = record.response.split()
    if len(words) <= 1:
        return "response is empty" if not words else f"response is one word ({words[0][:40]!r})"
    return None


def echo(record: Record) -> str | None:
    instruction, response = normalised_words(record.instruction), normalised_words(record.response)
    if response == instruction:
        return "response repeats the instruction"
    if len(instruction) >= 5 and len(instruction) >= ECHO_SHARE * len(response):
        if f" {' '.join(instruction)} " in f" {' '.join(response)} ":
            return f"the instruction is {len(instruction) / len(response):.0%} of the response's words"
    return None


def refusal(record: Record) -> str | None:
    text = record.response.lower().replace("\u2019", "'")
    phrase = next((phrase for phrase in REFUSAL_PHRASES if phrase in text), None)
    return None if phrase is None else f"response holds refusal boilerplate {phrase!r}"


def repeated_ngram_share(words: list[str], n: int = REPETITION_NGRAM) -> float:
    """Share of the word n-grams that repeat an earlier n-gram of the same text."""
    grams = [tuple(words[start : start + n]) for start in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def make_repetition(max_share: float) -> Callable[[Record], str | None]:
    if not 0.0 < max_share <= 1.0:
        raise FrugalError(f"--max-repetition must be in (0, 1], got {max_share}")

    def repetition(record: Record) -> str | None:
        share = repeated_ngram_share(record.response.lower().split())
        if share > max_share:
            return f"{share:.0%} of the response's word {REPETITION_NGRAM}-grams are repeats (over {max_share:.0%})"
        return None

    return repetition


def mojibake(record: Record) -> str | None:
    for field, text in (("instruction", record.instruction), ("response", record.response)):
        if (match := _BROKEN_TEXT.search(text)) is None:
            continue
        found = match.group()
        if found == "\ufffd":
            return f"{field} holds U+FFFD, the replacement character of a failed decoding"
        if len(found) == 1:
            return f"{field} holds the control character U+{ord(found):04X}"
        return f"{field} holds mojibake {found!r} (UTF-8 read as Latin-1)"
    return None


def make_too_long(tokenizer, max_tokens: int) -> Callable[[Record], str | None]:
    """`tokenizer`: a `tokenizers.Tokenizer` (the one in a frugal tokenizer directory)."""
    if max_tokens < 1:
        raise FrugalError(f"--max-tokens must be >= 1, got {max_tokens}")

    def too_long(record: Record) -> str | None:
        count = sum(
            len(encoding.ids)
            for encoding in tokenizer.encode_batch([record.instruction, record.response], add_special_tokens=False)
        )
        return f"{count:,} tokens, over --max-tokens {max_tokens:,}" if count > max_tokens else None

    return too_long


def make_language(code: str) -> Callable[[Record], str | None]:
    try:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    except ImportError:
        raise FrugalError("--language needs lingua: pip install 'frugal-lm[language]'") from None
    try:
        wanted = Language.from_iso_code_639_1(getattr(IsoCode639_1, code.upper()))
    except (AttributeError, ValueError):
        raise FrugalError(f"--language {code}: not an ISO 639-1 code lingua knows (e.g. en, fr, de)") from None
    # High-accuracy mode: the low-accuracy one misreads short English sentences.
    detector = LanguageDetectorBuilder.from_all_languages().build()

    def language(record: Record) -> str | None:
        found = detector.detect_language_of(f"{record.instruction}\n{record.response}")
        if found == wanted:
            return None
        return f"language is {found.name.lower() if found else 'not detected'}, not {wanted.name.lower()}"

    return language


DEFAULT_FILTERS = ("short-response", "echo", "refusal", "repetition", "mojibake")


@dataclass(frozen=True)
class QualityFilter:
    name: str
    check: Callable[[Record], str | None]


def build_filters(
    disabled: set[str],
    max_repetition: float = DEFAULT_MAX_REPETITION,
    too_long: Callable[[Record], str | None] | None = None,
    language: Callable[[Record], str | None] | None = None,
) -> list[QualityFilter]:
    """The default filters less `disabled`, then the optional too-long and language ones."""
    unknown = sorted(disabled - set(DEFAULT_FILTERS))
    if unknown:
        raise FrugalError(f"--no-filter {unknown[0]}: unknown filter; known: {', '.join(DEFAULT_FILTERS)}")
    checks = {
        "short-response": short_response,
        "echo": echo,
        "refusal": refusal,
        "repetition": make_repetition(max_repetition),
        "mojibake": mojibake,
    }
    filters = [QualityFilter(name, checks[name]) for name in DEFAULT_FILTERS if name not in disabled]
    if too_long is not None:
        filters.append(QualityFilter("too-long", too_long))
    if language is not None:
        filters.append(QualityFilter("language", language))
    return filters
