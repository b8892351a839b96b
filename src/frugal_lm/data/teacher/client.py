"""An async client for OpenAI-compatible chat completions that retries what is worth retrying.

Design choices:
- httpx's AsyncClient, with connections for the run's whole concurrency, so N workers keep N
  requests in flight. The connections are split over several clients of at most
  `SHARD_CONNECTIONS` each: httpcore's pool scans all its connections on every request event, a
  cost that grows with the pool and was most of the client's time at N=16 (profiled).
  `base_url` is the API root as OpenAI clients take it (`.../v1`); the client POSTs
  `{base_url}/chat/completions`.
- Retried, up to `max_retries` times, each retry counted by cause: `429`, `5xx`, `timeout`
  (httpx's or the whole request's deadline, and 408), `connection` (refused, reset, cut mid-reply),
  `malformed` (not JSON, no choices, no text) and `truncated` (finish_reason "length", unless
  truncated replies are kept). The wait is the server's `Retry-After` (seconds or an HTTP date)
  when it sends one, else exponential backoff with full jitter: uniform(0, min(max_delay,
  base_delay * 2**retry)). A 429's Retry-After also pauses every other new request (`limits`).
- Not retried: other 4xx (a prompt too long for the model, a bad parameter) fail the request at
  once with the server's message; 401, 403 and 404 stop the whole run (a wrong key, model or
  URL fails every request alike), with one line naming the URL or the key's variable.
- Every reply received is billed (its `usage`, or characters / 4 when the server sends none),
  retried ones included, so the run's dollars are what the endpoint charged.
- The API key only ever goes into the Authorization header; no message quotes a header.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from frugal_lm.data.teacher.limits import RateLimiter
from frugal_lm.errors import FrugalError

RETRY_CAUSES = ("429", "5xx", "timeout", "connection", "malformed", "truncated")
SHARD_CONNECTIONS = 8
FATAL_STATUSES = {401: "the endpoint refused the API key", 403: "the endpoint refused access", 404: "not found"}


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    request_timeout: float = 120.0
    keep_truncated: bool = False

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform over [0, min(max_delay, base_delay * 2**retry)]."""
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * 2.0**retry))


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    """True when the server sent no usage and the counts are characters / 4."""

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.estimated or other.estimated,
        )

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.estimated:
            data["estimated"] = True
        return data


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str | None
    usage: Usage
    model: str | None


@dataclass
class Exchange:
    """What asking for one completion came to: a reply, or the cause and reason it failed."""

    reply: Reply | None = None
    cause: str | None = None
    reason: str | None = None
    retries: Counter = field(default_factory=Counter)
    billed: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class _Attempt:
    reply: Reply | None = None
    cause: str | None = None
    reason: str | None = None
    retryable: bool = False
    retry_after: float | None = None
    billed: Usage | None = None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delta seconds, or an HTTP date) as seconds from now; None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TeacherClient:
    """`async with TeacherClient(...) as client: exchange = await client.complete(body, ...)`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        policy: RetryPolicy,
        limiter: RateLimiter,
        concurrency: int,
        seed: int = 0,
        api_key_env: str = "OPENAI_API_KEY",
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.policy, self.limiter, self.api_key_env = policy, limiter, api_key_env
        self.rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        per_shard = min(concurrency, SHARD_CONNECTIONS)
        limits = httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        timeout = httpx.Timeout(policy.request_timeout)
        tls = httpx.create_ssl_context()  # one for all shards: loading the CA bundle takes ~30 ms each
        self.shards = [
            httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits, verify=tls)
            for _ in range(-(-concurrency // per_shard))
        ]
        # One slot per connection: a request takes a free one, so no pool holds more than it has.
        self.free_slots: asyncio.Queue[int] = asyncio.Queue()
        for shard in range(len(self.shards)):
            for _ in range(per_shard):
                self.free_slots.put_nowait(shard)

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for shard in self.shards:
            await shard.aclose()

    async def complete(self, body: dict[str, Any], estimated_tokens: int) -> Exchange:
        """POST `body` until a usable reply, a non-retryable failure, or the retries run out."""
        exchange = Exchange()
        for retry in range(self.policy.max_retries + 1):
            await self.limiter.acquire(estimated_tokens)
            attempt = await self._attempt(body)
            billed = attempt.billed or Usage()
            self.limiter.settle(estimated_tokens, billed.prompt_tokens + billed.completion_tokens)
            exchange.billed += billed
            if attempt.reply is not None:
                exchange.reply = attempt.reply
                return exchange
            exchange.cause, exchange.reason = attempt.cause, attempt.reason
            if not attempt.retryable or retry == self.policy.max_retries:
                break
            exchange.retries[attempt.cause] += 1
            delay = attempt.retry_after
            if delay is not None and attempt.cause == "429":
                self.limiter.pause_until(self.limiter.clock() + delay)
            await asyncio.sleep(delay if delay is not None else self.policy.backoff(retry, self.rng))
        if exchange.retries:
            exchange.reason = f"{exchange.reason} (after {sum(exchange.retries.values())} retries)"
        return exchange

    async def _attempt(self, body: dict[str, Any]) -> _Attempt:
        timeout = self.policy.request_timeout
        shard = await self.free_slots.get()
        try:
            # httpx's timeout bounds each read; this bounds the whole request (a server trickling bytes).
            response = await asyncio.wait_for(self.shards[shard].post(self.url, json=body), timeout)
        except (TimeoutError, httpx.TimeoutException):
            return _Attempt(cause="timeout", reason=f"no reply within --request-timeout {timeout:g} s", retryable=True)
        except httpx.RequestError as error:  # transport errors, and a body httpx cannot decode
            reason = f"connection failed: {type(error).__name__}" + (f": {error}" if str(error) else "")
            return _Attempt(cause="connection", reason=reason, retryable=True)
        finally:
            self.free_slots.put_nowait(shard)
        return self._read(response, body)

    def _read(self, response: httpx.Response, body: dict[str, Any]) -> _Attempt:
        status = response.status_code
        if status in FATAL_STATUSES:
            hint = (
                f" (check ${self.api_key_env})"
                if status in (401, 403)
                else " (is --base-url the API root, e.g. .../v1, and --model served there?)"
            )
            raise FrugalError(f"POST {self.url}: {status}, {FATAL_STATUSES[status]}{hint}: {_server_message(response)}")
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status == 429:
            return _Attempt(cause="429", reason="429 rate limited", retryable=True, retry_after=retry_after)
        if status >= 500:
            reason = f"{status} {_server_message(response)}"
            return _Attempt(cause="5xx", reason=reason, retryable=True, retry_after=retry_after)
        if status == 408:
            return _Attempt(cause="timeout", reason="408 request timeout", retryable=True, retry_after=retry_after)
        if status != 200:
            return _Attempt(cause=f"{status}", reason=f"{status} {_server_message(response)}")
        return self._reply(response, body)

    def _reply(self, response: httpx.Response, body: dict[str, Any]) -> _Attempt:
        try:
            data = response.json()
        except ValueError:
            return _Attempt(cause="malformed", reason="the reply is not JSON", retryable=True)
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return _Attempt(cause="malformed", reason="the reply has no choices", retryable=True)
        message = choices[0].get("message")
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            return _Attempt(cause="malformed", reason="the reply's message has no text content", retryable=True)
        usage = _usage(data.get("usage"), body, text)
        finish_reason = choices[0].get("finish_reason")
        if finish_reason == "length" and not self.policy.keep_truncated:
            reason = f"truncated at max_tokens {body.get('max_tokens')} (finish_reason length)"
            return _Attempt(cause="truncated", reason=reason, retryable=True, billed=usage)
        model = data.get("model") if isinstance(data.get("model"), str) else None
        return _Attempt(reply=Reply(text, finish_reason, usage, model), billed=usage)


def _usage(usage: Any, body: dict[str, Any], text: str) -> Usage:
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            return Usage(prompt, completion)
    prompt_chars = sum(len(str(message.get("content", ""))) for message in body.get("messages", []))
    return Usage(-(-prompt_chars // 4), -(-len(text) // 4), estimated=True)


def _server_message(response: httpx.Response) -> str:
    """The error message a server sent (OpenAI's `{"error": {"message": ...}}`, or its text), shortened."""
    try:
        data = response.json()
    except ValueError:
        data = None
    text = None
    if isinstance(data, dict):
        error = data.get("error")
        text = error.get("message") if isinstance(error, dict) else error or data.get("detail")
    if not isinstance(text, str):
        text = response.text
    text = " ".join(str(text).split())
    return (text[:200] + "...") if len(text) > 200 else text or response.reason_phrase
