"""TextStream (incremental detokenization + stop strings) against a brute-force reference
that decodes every prefix of the sequence from scratch. The scheduler's
batching, queue and cancellation are exercised over HTTP in test_server.py."""

import random

import pytest

from frugal_lm.data.tokenizer import load_tokenizer
from frugal_lm.infer.loading import checkpoint_folder
from frugal_lm.infer.text_stream import TextStream

TEXTS = ["héllo wörld ✓ 日本語 done", "12+7=19 and 3+4=7", "reverse: abc -> cba", "emoji 🙂🙃 end", "ab" * 30]
STOPS = [[], ["="], ["wörld"], ["7 and", "cba"], ["🙃"], ["babab"], ["not there"], ["日本語 d", "本"]]


@pytest.fixture(scope="module")
def tokenizer(tiny_run):
    # Trained on ASCII synthetic tasks: every non-ASCII character is split over byte tokens.
    return load_tokenizer(checkpoint_folder(tiny_run) / "tokenizer")


def run_stream(tokenizer, token_ids, stops):
    stream = TextStream(tokenizer.decode, stops)
    pieces = []
    for token_id in token_ids:
        pieces.append(stream.push(token_id))
        if stream.stopped:
            break
    pieces.append(stream.flush())
    return pieces, stream


def reference(tokenizer, token_ids, stops):
    """Generation stops at the first token after which the text contains a stop string; the
    text is cut where a stop string first occurs."""
    for k in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:k])
        hits = [text.find(stop) for stop in stops if stop in text]
        if hits:
            return text[: min(hits)]
    return tokenizer.decode(token_ids)


@pytest.mark.parametrize("stops", STOPS)
def test_pieces_join_to_the_whole_decode_cut_at_the_first_stop(tokenizer, stops):
    for text in TEXTS:
        token_ids = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
        pieces, stream = run_stream(tokenizer, token_ids, stops)
        expected = reference(tokenizer, token_ids, stops)
        assert "".join(pieces) == expected, (text, stops, pieces)
        assert stream.stopped == (expected != text)
        assert not any("\ufffd" in piece for piece in pieces)  # no half characters handed out


def test_text_that_may_become_a_stop_string_is_held_back(tokenizer):
    stream = TextStream(tokenizer.decode, ["STOP"])
    handed_out = ""
    for token_id in tokenizer.tokenizer.encode("abc STO", add_special_tokens=False).ids:
        handed_out += stream.push(token_id)
    assert handed_out == "abc "  # "STO" may still become "STOP"
    assert stream.flush() == "STO"  # ... but generation ended: it is text after all


def test_random_tokens_decode_like_the_whole_sequence(tokenizer):
    rng = random.Random(0)
    for _ in range(50):
        token_ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 30))]
        pieces, _ = run_stream(tokenizer, token_ids, [])
        assert "".join(pieces) == tokenizer.decode(token_ids), token_ids
