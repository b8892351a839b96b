"""Rate limits for the teacher client: requests and tokens per minute, as token buckets.

Design choices:
- One bucket per limit, refilled continuously at limit/60 per second, holding at most one
  minute's worth, and full at the start (the burst a per-minute quota allows).
- A request's tokens are not known before it is answered: it takes an estimate (its prompt's
  characters / 4 plus `max_tokens`, an upper bound on the reply) and `settle` gives back the
  difference once the reply's `usage` is known.
- A request estimated above a whole minute's budget waits for a full bucket and takes it, so
  it runs (alone) instead of waiting forever.
- `pause_until`: a 429 with Retry-After holds every new request, not only the one that got it.
- Waiters are served in arrival order (one lock), so a large request is not starved by small ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


def estimate_tokens(prompt_chars: int, max_tokens: int) -> int:
    """An upper-bound guess of a request's tokens before it is sent (~4 characters a token)."""
    return -(-prompt_chars // 4) + max_tokens


class TokenBucket:
    """`per_minute` units a minute; `level` may go negative after a large request or a correction."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self.updated = clock()

    def refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` (capped at the capacity) is available; 0 when it is now."""
        self.refill()
        needed = min(amount, self.capacity) - self.level
        return max(0.0, needed / self.rate)


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits (either may be None: unlimited)."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.requests = TokenBucket(requests_per_minute, clock) if requests_per_minute else None
        self.tokens = TokenBucket(tokens_per_minute, clock) if tokens_per_minute else None
        self.clock = clock
        self.paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause_until(self, when: float) -> None:
        """Hold every new request until the clock reads `when` (a server's Retry-After)."""
        self.paused_until = max(self.paused_until, when)

    async def acquire(self, estimated_tokens: int) -> None:
        async with self._lock:
            while True:
                delay = max(
                    self.paused_until - self.clock(),
                    self.requests.wait_for(1) if self.requests else 0.0,
                    self.tokens.wait_for(estimated_tokens) if self.tokens else 0.0,
                )
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            if self.requests:
                self.requests.level -= 1
            if self.tokens:
                self.tokens.level -= estimated_tokens

    def settle(self, estimated_tokens: int, used_tokens: int | None) -> None:
        """Correct the token bucket by what the request really used (None: it used nothing we know of)."""
        if self.tokens is not None:
            self.tokens.refill()
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + estimated_tokens - (used_tokens or 0))
