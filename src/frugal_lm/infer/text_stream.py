"""Incremental detokenization: the text of a growing token sequence, handed out piece by piece.

Design choices:
- One detokenizer for every caller that streams text (the server's scheduler, `frugal chat`):
  the pieces it hands out join to exactly `decode(all tokens)`, cut at the first stop string.
- Decoding only a window of recent tokens keeps each step O(window) rather than O(length)
  (re-decoding the whole answer every token is O(n^2)); a byte-level BPE decodes a window
  independently of what precedes it.
- Text ending in U+FFFD is an incomplete UTF-8 character and is held back until the next
  token completes it; so is any end of the text that a stop string may still grow from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


class TextStream:
    """Incremental detokenization with stop strings (none: plain streaming), for one
    generated sequence; the window is `token_ids[prefix_start:]`."""

    def __init__(self, decode: Callable[[list[int]], str], stop_strings: Iterable[str] = ()):
        self.decode = decode
        self.stop_strings = list(stop_strings)
        self.token_ids: list[int] = []
        self.prefix_start = 0  # window start for decoding
        self.read_end = 0  # tokens before this are already in `text`
        self.text = ""  # all text so far (cut at a stop string once one appears)
        self.emitted = 0  # characters of `text` already handed out
        self.stopped = False  # a stop string was found

    def push(self, token_id: int) -> str:
        """Add one token; the text that is now safe to hand out."""
        self.token_ids.append(token_id)
        self._absorb(final=False)
        return self._release(final=self.stopped)

    def flush(self) -> str:
        """At the end of generation: everything not handed out yet, including a held-back
        incomplete character (as U+FFFD: the sequence ended inside it)."""
        if not self.stopped:
            self._absorb(final=True)
        return self._release(final=True)

    def _absorb(self, final: bool) -> None:
        """Move the decoded text of the pending tokens into `text`, then cut at a stop string."""
        before = self.decode(self.token_ids[self.prefix_start : self.read_end])
        after = self.decode(self.token_ids[self.prefix_start :])
        if not final and (after.endswith("\ufffd") or len(after) <= len(before)):
            return
        searched_from = len(self.text)
        self.text += after[len(before) :]
        self.prefix_start, self.read_end = self.read_end, len(self.token_ids)
        self._cut_stop_string(searched_from)

    def _cut_stop_string(self, searched_from: int) -> None:
        longest = max((len(s) for s in self.stop_strings), default=0)
        start = max(0, searched_from - longest + 1)
        hits = [p for p in (self.text.find(s, start) for s in self.stop_strings) if p >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def _release(self, final: bool) -> str:
        end = len(self.text) if final else len(self.text) - self._possible_stop_prefix()
        end = max(end, self.emitted)
        released, self.emitted = self.text[self.emitted : end], end
        return released

    def _possible_stop_prefix(self) -> int:
        """Length of the longest end of `text` that a stop string starts with."""
        best = 0
        for stop in self.stop_strings:
            for size in range(min(len(stop) - 1, len(self.text)), best, -1):
                if self.text.endswith(stop[:size]):
                    best = size
                    break
        return best
