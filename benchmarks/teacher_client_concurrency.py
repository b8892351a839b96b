"""Does `frugal data generate`'s client keep N requests in flight?

A local OpenAI-shaped server (`data/teacher/fake_teacher.py`, in its own process so it does not
share the client's interpreter) answers every request after a fixed `--delay` (default 50 ms).
With N requests always in flight the best possible rate is N / delay; the script prints, for each
N in `--concurrency` (default 16,64):
1. the client alone: `--requests-per-n` x N requests through `TeacherClient.complete` from N
   tasks (what `generate`'s workers do), requests/s and the ratio to N / delay;
2. the whole `generate` (reading a JSONL of as many rows, writing records.jsonl and the report),
   requests/s and the same ratio.
The target is a ratio >= 0.9. No rate limits, no faults.

    PYTHONPATH=src python benchmarks/teacher_client_concurrency.py [--concurrency 16,64] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import tempfile
import time
from pathlib import Path


def _serve(delay: float, ready, stop) -> None:
    from frugal_lm.data.teacher.fake_teacher import FakeTeacher

    with FakeTeacher(delay_s=delay) as teacher:
        ready.put(teacher.base_url)
        stop.wait()


def _client_rate(base_url: str, concurrency: int, requests: int) -> float:
    from frugal_lm.data.teacher.client import RetryPolicy, TeacherClient
    from frugal_lm.data.teacher.limits import RateLimiter

    async def run() -> float:
        policy = RetryPolicy(max_retries=0, request_timeout=30)
        async with TeacherClient(base_url, None, policy, RateLimiter(), concurrency) as client:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for index in range(requests):
                queue.put_nowait(index)

            async def worker() -> None:
                while not queue.empty():
                    index = queue.get_nowait()
                    body = {"model": "m", "messages": [{"role": "user", "content": f"q {index}"}], "max_tokens": 8}
                    exchange = await client.complete(body, 16)
                    assert exchange.reply is not None, exchange.reason

            await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the connections
            for index in range(requests):
                queue.put_nowait(index)
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return requests / (time.perf_counter() - start)

    return asyncio.run(run())


def _generate_rate(base_url: str, concurrency: int, requests: int) -> float:
    from frugal_lm.data.teacher.client import RetryPolicy
    from frugal_lm.data.teacher.generate import GenerateSettings, generate

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.jsonl"
        source.write_text("".join(json.dumps({"instruction": f"question {index}"}) + "\n" for index in range(requests)))
        settings = GenerateSettings(
            base_url=base_url,
            model="m",
            inputs=[source],
            out=Path(folder) / "out",
            concurrency=concurrency,
            max_tokens=8,
            policy=RetryPolicy(max_retries=0, request_timeout=30),
        )
        start = time.perf_counter()
        report = generate(settings, None)
        elapsed = time.perf_counter() - start
    assert report.kept == requests, report
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="16,64", help="comma-separated N (default 16,64)")
    parser.add_argument("--delay", type=float, default=0.05, help="server latency in seconds (default 0.05)")
    parser.add_argument("--requests-per-n", type=int, default=50, help="requests per unit of N (default 50)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=_serve, args=(args.delay, ready, stop), daemon=True)
    server.start()
    try:
        base_url = ready.get(timeout=60)
        machine = f"python {platform.python_version()}, {multiprocessing.cpu_count()} CPUs"
        print(f"{machine}; server delay {args.delay * 1e3:g} ms")
        for concurrency in (int(n) for n in args.concurrency.split(",")):
            ideal = concurrency / args.delay
            requests = args.requests_per_n * concurrency
            for label, measure in (("client", _client_rate), ("generate", _generate_rate)):
                rate = measure(base_url, concurrency, requests)
                print(
                    f"N={concurrency:<4} {label:<9} {requests:>6} requests: {rate:8.1f} requests/s, "
                    f"ideal N/delay {ideal:8.1f}, ratio {rate / ideal:.3f}"
                )
    finally:
        stop.set()
        server.join(10)


if __name__ == "__main__":
    main()
