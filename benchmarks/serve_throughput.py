"""What serving over HTTP costs: `frugal serve`'s app vs the engine's offline `generate`.

One run, same machine, same engine settings (slots = --batch-size), same prompts, greedy:
- offline: `Engine.generate` on all prompts (continuous batching in one Python loop);
- server: the same prompts as concurrent HTTP requests (httpx, all sent at once) to the
  OpenAI-compatible app on a real uvicorn (loopback), non-streaming; then once more streaming,
  for the time to the first token.
Tokens per second count generated tokens (EOA included) over the wall time of the whole
batch of requests. The ratio server/offline is the price of HTTP, JSON, the scheduler thread
and incremental detokenization. Both sides must produce the same texts (exit 1 if not).

The model is randomly initialised (throughput does not depend on training), with a tokenizer
trained on the synthetic tasks, which also give the prompts.

    PYTHONPATH=src python benchmarks/serve_throughput.py [--hidden 256] [--layers-per-stack 2] \
        [--vocab 8192] [--requests 32] [--batch-size 8] [--new-tokens 32] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import threading
import time

import httpx
import torch

from frugal_lm.config import load_model_config
from frugal_lm.data.synth import generate as synthetic_problems
from frugal_lm.data.tokenizer import train_tokenizer
from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.http_server import bind_socket, uvicorn_server
from frugal_lm.infer.loading import LoadedModel
from frugal_lm.infer.server import create_app
from frugal_lm.model import build_model


def offline(engine: Engine, prompts: list[str], new_tokens: int) -> tuple[list[str], int, float]:
    requests = [GenerationRequest(p, sampling=SamplingParams(max_new_tokens=new_tokens)) for p in prompts]
    start = time.perf_counter()
    results = engine.generate(requests)
    elapsed = time.perf_counter() - start
    tokens = sum(len(r.token_ids) + (r.finish_reason == "stop") for r in results)
    return [r.text for r in results], tokens, elapsed


async def over_http(url: str, prompts: list[str], new_tokens: int, stream: bool):
    """(texts, generated tokens, wall seconds, seconds to each request's first text)."""
    limits = httpx.Limits(max_connections=len(prompts))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(prompt: str):
            body = {"model": "bench", "prompt": prompt, "max_tokens": new_tokens, "temperature": 0}
            sent = time.perf_counter()
            if not stream:
                reply = (await client.post("/v1/completions", json=body)).json()
                return reply["choices"][0]["text"], reply["usage"]["completion_tokens"], None
            first, pieces, usage = None, [], 0
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            async with client.stream("POST", "/v1/completions", json=body) as reply:
                async for line in reply.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = httpx.Response(200, content=line[6:]).json()
                    if chunk.get("usage"):
                        usage = chunk["usage"]["completion_tokens"]
                    for choice in chunk["choices"]:
                        if choice["text"] and first is None:
                            first = time.perf_counter() - sent
                        pieces.append(choice["text"])
            return "".join(pieces), usage, first

        start = time.perf_counter()
        answers = await asyncio.gather(*(one(p) for p in prompts))
        elapsed = time.perf_counter() - start
    return [a[0] for a in answers], sum(a[1] for a in answers), elapsed, [a[2] for a in answers if a[2] is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers-per-stack", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="engine slots on both sides")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as generate_throughput)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    problems = list(synthetic_problems(["addition", "sorting", "reversal", "expression"], 2000, 0, False))
    tokenizer = train_tokenizer(
        (t for p in problems for t in (p.instruction, p.response)), vocab_size=min(args.vocab, 1024)
    )
    config = load_model_config(
        "tiny",
        "hrm",
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        n_heads=args.heads,
        n_layers=2 * args.layers_per_stack,
        max_seq_len=256,
    )
    loaded = LoadedModel(build_model(config).eval(), config, tokenizer, weights_path=None)  # type: ignore[arg-type]
    prompts = [p.instruction for p in problems[: args.requests]]

    offline_engine = Engine(loaded, max_batch_size=args.batch_size)
    app = create_app(Engine(loaded, max_batch_size=args.batch_size), "bench", max_queue=args.requests)
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn_server(app, sock, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"# HRM hidden {args.hidden}, {args.layers_per_stack}+{args.layers_per_stack} layers, vocab {args.vocab}; "
        f"{args.requests} requests, {args.batch_size} slots, {args.new_tokens} new tokens, greedy, fp32"
    )
    best = {"offline": (0.0, None), "server": (0.0, None), "server, streaming": (0.0, None)}
    first_token_seconds: list[float] = []
    for attempt in range(args.repeats + 1):  # the first round warms up; labels alternate
        runs = {
            "offline": lambda: offline(offline_engine, prompts, args.new_tokens) + ([],),
            "server": lambda: asyncio.run(over_http(url, prompts, args.new_tokens, False)),
            "server, streaming": lambda: asyncio.run(over_http(url, prompts, args.new_tokens, True)),
        }
        for label, run in runs.items():
            texts, tokens, elapsed, firsts = run()
            if attempt and tokens / elapsed > best[label][0]:
                best[label] = (tokens / elapsed, texts)
                if firsts:
                    first_token_seconds = firsts
    server.should_exit = True
    thread.join(30)

    reference = best["offline"][1]
    all_agree = True
    for label, (rate, texts) in best.items():
        agree = sum(a == b for a, b in zip(texts, reference))
        all_agree &= agree == len(prompts)
        print(
            f"  {label:<18} {rate:9.1f} tokens/s  ratio {rate / best['offline'][0]:.2f}x  "
            f"identical texts {agree}/{len(prompts)}"
        )
    quantiles = statistics.quantiles(first_token_seconds, n=10)
    print(
        f"  streaming time to first text: median {statistics.median(first_token_seconds) * 1000:.0f} ms, "
        f"p90 {quantiles[-1] * 1000:.0f} ms (all {len(prompts)} requests sent at once)"
    )
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
