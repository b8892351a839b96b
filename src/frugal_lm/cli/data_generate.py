"""`frugal data generate`: the CLI of data/teacher (responses from an OpenAI-compatible endpoint)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from frugal_lm.errors import FrugalError

PARSERS = ("text", "lines", "json", "qa-pairs")  # data.teacher.prompts.PARSERS, without importing it here
VERIFY_MODES = ("final-answer", "json")


def _check_numbers(args: argparse.Namespace) -> None:
    checks = [
        (args.concurrency >= 1, "--concurrency must be >= 1"),
        (args.samples >= 1, "--samples must be >= 1"),
        (args.max_tokens >= 1, "--max-tokens must be >= 1"),
        (args.max_retries >= 0, "--max-retries must be >= 0"),
        (args.request_timeout > 0, "--request-timeout must be > 0"),
        (
            args.retry_base_delay >= 0 and args.retry_max_delay >= 0,
            "--retry-base-delay and --retry-max-delay must be >= 0",
        ),
        (0 <= args.temperature <= 2, "--temperature must be in 0..2"),
        (0 < args.top_p <= 1, "--top-p must be in (0, 1]"),
        (args.price_in >= 0 and args.price_out >= 0, "--price-in and --price-out must be >= 0"),
        (args.max_dollars is None or args.max_dollars >= 0, "--max-dollars must be >= 0"),
        (args.requests_per_minute is None or args.requests_per_minute > 0, "--requests-per-minute must be > 0"),
        (args.tokens_per_minute is None or args.tokens_per_minute > 0, "--tokens-per-minute must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise FrugalError(message)
    if not args.base_url.startswith(("http://", "https://")):
        raise FrugalError(f"--base-url {args.base_url}: must start with http:// or https://")
    missing = [source for source in args.inputs if not source.exists()]
    if missing:
        raise FrugalError(f"{missing[0]}: no such file")


def _data_generate_command(args: argparse.Namespace) -> int:
    from frugal_lm.cli.data import reader_options
    from frugal_lm.data.teacher.client import RetryPolicy
    from frugal_lm.data.teacher.generate import GenerateSettings, generate
    from frugal_lm.data.teacher.prompts import read_system

    _check_numbers(args)
    api_key = os.environ.get(args.api_key_env) or None  # a local server (vLLM, frugal serve) needs none
    settings = GenerateSettings(
        base_url=args.base_url,
        model=args.model,
        inputs=list(args.inputs),
        out=args.out,
        read_options=reader_options(args, require_response=False),
        system=read_system(args.system),
        template=args.template,
        parse=args.parse,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        samples=args.samples,
        verify=args.verify,
        concurrency=args.concurrency,
        requests_per_minute=args.requests_per_minute,
        tokens_per_minute=args.tokens_per_minute,
        policy=RetryPolicy(
            max_retries=args.max_retries,
            base_delay=args.retry_base_delay,
            max_delay=args.retry_max_delay,
            request_timeout=args.request_timeout,
            keep_truncated=args.keep_truncated,
        ),
        price_in=args.price_in,
        price_out=args.price_out,
        max_dollars=args.max_dollars,
        resume=args.resume,
        retry_failed=args.retry_failed,
        api_key_env=args.api_key_env,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    )
    report = generate(settings, api_key)
    retries = ", ".join(f"{cause} {count:,}" for cause, count in report.retries.items()) or "none"
    print(
        f"{report.units:,} units: kept {report.kept:,} ({report.records:,} records), rejected {report.rejected:,}, "
        f"failed {report.failed:,}, pending {report.pending:,}; retries {retries}; "
        f"{report.tokens_in:,} tokens in, {report.tokens_out:,} out, ${report.dollars:,.4f} -> {args.out}/records.jsonl"
        + (f"; {report.bad_input_rows:,} bad input rows not asked" if report.bad_input_rows else "")
    )
    if report.stopped == "max-dollars":
        print(f"stopped at --max-dollars {args.max_dollars:g}: raise it and add --resume to ask the rest")
    return 0


def register_generate(data: argparse._SubParsersAction) -> None:
    """Add `generate` to the `frugal data` group."""
    from frugal_lm.cli.data import add_reader_arguments

    generate = data.add_parser(
        "generate",
        help="ask an OpenAI-compatible endpoint (a teacher) for responses to your rows",
        description="For each row of INPUT (any format `frugal data` reads; the instruction is the prompt) ask "
        "the teacher at --base-url for a response and write canonical records (condition including synth) to "
        "OUT/records.jsonl; replies failing --verify or --parse go to OUT/rejected.jsonl, requests failing after "
        "their retries to OUT/failed.jsonl, with reasons; counts, retries, tokens and dollars to OUT/report.json. "
        "Output is append-only and each outcome written whole: a killed run continues with --resume, asking only "
        "what has no outcome yet.",
    )
    generate.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    generate.add_argument("--base-url", required=True, help="the API root, e.g. http://127.0.0.1:8000/v1")
    generate.add_argument("--model", required=True, help="the teacher's model name at that endpoint")
    generate.add_argument(
        "--out",
        type=Path,
        required=True,
        help="new or empty directory; an earlier run there is continued with --resume, never replaced",
    )
    generate.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable holding the API key (default OPENAI_API_KEY; never written anywhere)",
    )
    prompt = generate.add_argument_group("prompt and sampling")
    prompt.add_argument("--system", metavar="TEXT|@FILE", help="system message of every request")
    prompt.add_argument(
        "--template",
        type=Path,
        metavar="FILE",
        help="prompt template over the row's fields: $instruction, $response, ${any_field}; $$ is a dollar",
    )
    prompt.add_argument(
        "--parse",
        choices=PARSERS,
        default="text",
        help="text (default): the reply is the response; qa-pairs: 'Q: ... A: ...' blocks; json: objects with "
        "instruction/question and response/answer; lines: each line a new prompt (empty response) for a second run",
    )
    prompt.add_argument("--temperature", type=float, default=0.7, help="default 0.7")
    prompt.add_argument("--top-p", type=float, default=1.0, help="default 1.0")
    prompt.add_argument("--max-tokens", type=int, default=1024, help="reply length limit (default 1024)")
    prompt.add_argument("--samples", type=int, default=1, metavar="K", help="replies asked per row (default 1)")
    prompt.add_argument(
        "--keep-truncated",
        action="store_true",
        help="keep replies cut at --max-tokens (finish_reason length, marked in the record); by default they are "
        "retried, then failed",
    )
    check = generate.add_argument_group("verification")
    check.add_argument(
        "--verify",
        choices=VERIFY_MODES,
        help="final-answer: keep a reply only if its final answer (after ####, else boxed, else its last number) "
        "equals the row's known answer (its response; rows without one are rejected unasked); json: keep only "
        "replies that parse as JSON",
    )
    client = generate.add_argument_group("client")
    client.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    client.add_argument("--requests-per-minute", type=float, metavar="N", help="rate limit (default none)")
    client.add_argument("--tokens-per-minute", type=float, metavar="N", help="rate limit (default none)")
    client.add_argument(
        "--max-retries", type=int, default=6, help="retries of a request on 429, 5xx, timeout, ... (default 6)"
    )
    client.add_argument(
        "--request-timeout", type=float, default=120.0, metavar="S", help="seconds per request (default 120)"
    )
    client.add_argument(
        "--retry-base-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="first backoff bound, doubled each retry, full jitter; a Retry-After header wins (default 1)",
    )
    client.add_argument("--retry-max-delay", type=float, default=60.0, metavar="S", help="backoff cap (default 60)")
    client.add_argument("--seed", type=int, default=0, help="seed of the backoff jitter")
    cost = generate.add_argument_group("cost and resuming")
    cost.add_argument("--price-in", type=float, default=0.0, metavar="USD", help="dollars per million prompt tokens")
    cost.add_argument(
        "--price-out", type=float, default=0.0, metavar="USD", help="dollars per million completion tokens"
    )
    cost.add_argument(
        "--max-dollars",
        type=float,
        metavar="USD",
        help="stop starting requests once the run (earlier resumed runs included) has spent this much",
    )
    cost.add_argument("--resume", action="store_true", help="continue the run in --out (same parameters)")
    cost.add_argument("--retry-failed", action="store_true", help="with --resume: ask failed units again too")
    add_reader_arguments(generate)
    generate.set_defaults(handler=_data_generate_command)
