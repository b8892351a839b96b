"""The teacher client against the fault-injecting fake teacher (real HTTP on 127.0.0.1), and its rate limits."""

import asyncio
import email.utils
import random
from collections import Counter

import httpx
import pytest

from frugal_lm.data.teacher.client import RetryPolicy, TeacherClient, retry_after_seconds
from frugal_lm.data.teacher.fake_teacher import FakeTeacher
from frugal_lm.data.teacher.limits import RateLimiter, TokenBucket
from frugal_lm.errors import FrugalError

FAST = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=0.05, request_timeout=0.3)


def ask_all(teacher_url, prompts, policy=FAST, limiter=None, api_key=None):
    """The exchanges of `prompts`, asked concurrently through one client."""

    async def run():
        async with TeacherClient(teacher_url, api_key, policy, limiter or RateLimiter(), concurrency=8) as client:
            bodies = [{"model": "m", "messages": [{"role": "user", "content": p}], "max_tokens": 16} for p in prompts]
            return await asyncio.gather(*(client.complete(body, 100) for body in bodies))

    return asyncio.run(run())


def ask(teacher_url, prompt, policy=FAST, limiter=None, api_key=None):
    return ask_all(teacher_url, [prompt], policy, limiter, api_key)[0]


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds(email.utils.formatdate(1000.0 + 30, usegmt=True), now=1000.0) == pytest.approx(30)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_backoff_is_full_jitter_under_a_doubling_cap():
    policy, rng = RetryPolicy(base_delay=1.0, max_delay=5.0), random.Random(0)
    for retry, bound in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (10, 5.0)]:
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= bound and max(delays) > bound / 2


@pytest.mark.parametrize(
    "fault, cause", [("429", "429"), ("500", "5xx"), ("stall", "timeout"), ("cut", "connection"),
                     ("invalid_json", "malformed"), ("truncated", "truncated")],
)  # fmt: skip
def test_each_fault_is_retried_and_counted_by_cause(fault, cause):
    # Every prompt's first attempts fail with this fault, at rate 0.6: some prompts need several retries.
    with FakeTeacher(faults={fault: 0.6}, stall_s=0.6) as teacher:
        prompts = [f"prompt {index}" for index in range(6)]
        exchanges = ask_all(teacher.base_url, prompts, RetryPolicy(**{**FAST.__dict__, "max_retries": 8}))
    assert all(exchange.reply is not None for exchange in exchanges)
    assert [exchange.reply.text for exchange in exchanges] == [f"echo: prompt {index}" for index in range(6)]
    retries = sum((exchange.retries for exchange in exchanges), start=Counter())
    assert set(retries) == {cause} and retries[cause] == teacher.served[fault]


def test_retries_run_out_into_a_failure_with_its_cause_and_reason():
    with FakeTeacher(faults={"500": 1.0}) as teacher:
        exchange = ask(teacher.base_url, "p")
    assert exchange.reply is None and exchange.cause == "5xx"
    assert exchange.retries["5xx"] == FAST.max_retries and teacher.served["500"] == FAST.max_retries + 1
    assert "500 internal error" in exchange.reason and "after 4 retries" in exchange.reason


def test_a_truncated_reply_is_kept_when_asked_and_billed_every_time():
    with FakeTeacher(faults={"truncated": 1.0}) as teacher:
        failed = ask(teacher.base_url, "a b c", RetryPolicy(**{**FAST.__dict__, "max_retries": 2}))
        kept = ask(teacher.base_url, "a b c", RetryPolicy(**{**FAST.__dict__, "keep_truncated": True}))
    assert failed.reply is None and failed.cause == "truncated" and "max_tokens 16" in failed.reason
    assert failed.billed.prompt_tokens == 3 * 3  # three replies received, each billed
    assert kept.reply.finish_reason == "length" and kept.retries == {}


def test_429_retry_after_pauses_every_new_request():
    limiter = RateLimiter()
    with FakeTeacher(faults={"429": 1.0}, retry_after=0.2) as teacher:
        exchange = ask(teacher.base_url, "p", RetryPolicy(**{**FAST.__dict__, "max_retries": 1}), limiter)
    assert exchange.cause == "429" and limiter.paused_until > 0


def test_unauthorized_stops_the_run_naming_the_variable_not_the_key(tmp_path):
    async def run():
        policy = FAST
        async with TeacherClient(
            "http://127.0.0.1:1/v1", "sk-secret", policy, RateLimiter(), 1, api_key_env="MY_KEY"
        ) as c:
            return c._read(httpx.Response(401, json={"error": {"message": "bad key"}}), {})

    with pytest.raises(FrugalError) as error:
        asyncio.run(run())
    assert "$MY_KEY" in str(error.value) and "sk-secret" not in str(error.value) and "\n" not in str(error.value)


def test_a_client_error_fails_at_once_with_the_server_message():
    async def run():
        async with TeacherClient("http://127.0.0.1:1/v1", None, FAST, RateLimiter(), 1) as client:
            response = httpx.Response(400, json={"error": {"message": "prompt too long"}})
            return client._read(response, {})

    attempt = asyncio.run(run())
    assert attempt.reply is None and not attempt.retryable and attempt.reason == "400 prompt too long"


def test_the_api_key_goes_in_the_authorization_header():
    with FakeTeacher() as teacher:
        ask(teacher.base_url, "p", api_key="sk-test")
    assert teacher.authorizations == {"Bearer sk-test"}


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_token_bucket_refills_at_its_rate_up_to_a_minute():
    clock = FakeClock()
    bucket = TokenBucket(60, clock)  # one a second
    bucket.level = 0
    assert bucket.wait_for(1) == pytest.approx(1.0)
    clock.now = 0.5
    assert bucket.wait_for(1) == pytest.approx(0.5)
    clock.now = 1000
    bucket.refill()
    assert bucket.level == 60
    assert bucket.wait_for(10_000) == 0  # more than a minute's worth: waits only for a full bucket


def test_rate_limiter_spaces_requests_and_settles_tokens(monkeypatch):
    clock = FakeClock()
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    async def run():
        limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=100, clock=clock)
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        await limiter.acquire(10)
        await limiter.acquire(10)
        await limiter.acquire(10)  # the third request of a 2-per-minute limit waits 30 s
        after_third = limiter.tokens.level  # 80 refilled by 30 s (50), capped at 100, minus 10
        limiter.settle(10, 4)  # used 4 of the 10 estimated: 6 come back
        return limiter, after_third

    limiter, after_third = asyncio.run(run())
    assert sum(slept) == pytest.approx(30)
    assert after_third == pytest.approx(90) and limiter.tokens.level == pytest.approx(96)


def test_rate_limiter_holds_tokens_until_the_bucket_refills(monkeypatch):
    clock = FakeClock()

    async def fake_sleep(seconds):
        clock.now += seconds

    async def run():
        monkeypatch.setattr(asyncio, "sleep", fake_sleep)
        limiter = RateLimiter(tokens_per_minute=600, clock=clock)  # 10 tokens a second
        await limiter.acquire(500)
        await limiter.acquire(300)  # 100 left: waits 20 s for the other 200

    asyncio.run(run())
    assert clock.now == pytest.approx(20)
