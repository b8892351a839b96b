"""`frugal serve`: the model behind an OpenAI-compatible HTTP API (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from frugal_lm.cli.infer import add_decode_step_arguments, add_device_arguments, chosen_precision, engine_options
from frugal_lm.errors import FrugalError

DESCRIPTION = """\
Serve a model over HTTP with OpenAI's API, so the `openai` client, curl and OpenAI-compatible
tools work unchanged. Endpoints: POST /v1/completions, POST /v1/chat/completions (both with
"stream": true for Server-Sent Events), GET /v1/models, GET /health (load and capacity).

Requests: `model` must be the served name (--model-name). The prompt, or the chat turned into
one instruction (a lone user message verbatim; otherwise system text first, then the turns as
"User: ..." / "Assistant: ..."), is wrapped in the training layout with the condition tags
of the extra field "condition" (comma-separated, default "direct"; e.g. "cot").
Sampling: temperature (default 1.0, 0 = greedy), top_p, top_k (extra field), seed, stop
(up to 16 strings; the text is cut before one, finish_reason "stop"), max_tokens (default:
the rest of the context). n, logprobs, penalties and tools are not supported (400).

Scheduling: one engine thread decodes up to --max-batch-size requests at once (continuous
batching: a request joins at the next step); up to --max-queue more wait, beyond that the
server answers 503 with Retry-After. A request with more prompts than both together can
hold is a 400 (it could never be served). A client that disconnects frees its slot. Ctrl-C
lets running requests finish, then exits.

Limits per client: a body over --max-body-bytes is a 413; a request whose head or body takes
longer than --request-timeout to arrive is closed (408 for a slow body); idle keep-alive
connections close after --keep-alive-timeout; headers over --max-header-bytes are a 400;
beyond --max-connections open connections, new requests get 503 at once.
"""


def _serve_command(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise FrugalError(f"--port must be in 0..65535, got {args.port}")
    if args.max_batch_size < 1:
        raise FrugalError(f"--max-batch-size must be >= 1, got {args.max_batch_size}")
    if args.max_queue < 0:
        raise FrugalError(f"--max-queue must be >= 0, got {args.max_queue}")
    for flag in ("max_body_bytes", "max_header_bytes", "max_connections", "request_timeout", "keep_alive_timeout"):
        if getattr(args, flag) <= 0:
            raise FrugalError(f"--{flag.replace('_', '-')} must be > 0, got {getattr(args, flag)}")
    if not args.model.is_dir():
        raise FrugalError(f"--model {args.model}: no such directory")

    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.http_limits import HttpLimits
    from frugal_lm.infer.http_server import bind_socket, uvicorn_server
    from frugal_lm.infer.loading import default_model_name, load_model
    from frugal_lm.infer.server import create_app
    from frugal_lm.runtime import resolve_device

    device = resolve_device(args.device)
    sock = bind_socket(args.host, args.port)  # before loading: a taken port fails fast
    try:
        loaded = load_model(args.model, device=device, prefer_ema=not args.no_ema, dtype=chosen_precision(args, device))
        engine = Engine(
            loaded, max_batch_size=args.max_batch_size, max_seq_len=args.max_seq_len, **engine_options(args)
        )
        if engine.cuda_graphs or args.warm_up:
            started = time.monotonic()
            built = engine.warm_up()
            print(
                f"built the decode step of {built} (batch, context) buckets in {time.monotonic() - started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        model_name = args.model_name or default_model_name(args.model)
        limits = HttpLimits(
            max_body_bytes=args.max_body_bytes,
            request_timeout_s=args.request_timeout,
            keep_alive_s=args.keep_alive_timeout,
            max_header_bytes=args.max_header_bytes,
            max_connections=args.max_connections,
        )
        app = create_app(engine, model_name, max_queue=args.max_queue, limits=limits)
        host, port = sock.getsockname()[:2]
        print(
            f"serving {model_name!r} ({loaded.weights_path}) on http://{host}:{port}/v1 "
            f"[{device}, {loaded.precision}, batch {args.max_batch_size}, "
            f"queue {args.max_queue}, context {engine.max_seq_len}]",
            flush=True,
        )
        try:
            uvicorn_server(app, sock, args.log_level, limits).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown
            pass
    finally:
        sock.close()
    print("frugal serve: stopped", flush=True)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from frugal_lm.infer.http_limits import HttpLimits  # light: no torch

    serve = commands.add_parser(
        "serve",
        help="OpenAI-compatible HTTP server (completions, chat, streaming)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--model",
        type=Path,
        required=True,
        metavar="DIR",
        help="training run directory (latest checkpoint, EMA weights), checkpoint directory "
        "or exported model directory",
    )
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes "
        "the server to the network, without authentication)",
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--model-name",
        metavar="NAME",
        help="the name clients pass as `model` (default: the model directory's name; a run named run takes "
        "its parent's, a checkpoint is RUN-stepN)",
    )
    serve.add_argument(
        "--max-batch-size",
        type=int,
        default=8,
        metavar="N",
        help="requests decoded together; each holds a KV cache of the context (default 8)",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=64,
        metavar="N",
        help="requests that may wait for a free slot; more get 503 (default 64)",
    )
    defaults = HttpLimits()
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=defaults.max_body_bytes,
        metavar="N",
        help=f"largest request body; larger ones get 413 (default {defaults.max_body_bytes:,})",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=defaults.request_timeout_s,
        metavar="S",
        help=f"seconds a client has to send a request's head, and again its body "
        f"(default {defaults.request_timeout_s:g})",
    )
    serve.add_argument(
        "--keep-alive-timeout",
        type=int,
        default=defaults.keep_alive_s,
        metavar="S",
        help=f"idle keep-alive connections close after S seconds (default {defaults.keep_alive_s})",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        default=defaults.max_header_bytes,
        metavar="N",
        help=f"largest request head (default {defaults.max_header_bytes:,})",
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help=f"open connections at once; beyond, new requests get 503 (default {defaults.max_connections})",
    )
    serve.add_argument(
        "--max-seq-len",
        type=int,
        metavar="T",
        help="context per request, prompt + answer (default: the model's max_seq_len)",
    )
    add_device_arguments(serve)
    add_decode_step_arguments(serve)
    serve.add_argument(
        "--warm-up",
        action="store_true",
        help="with --compile: compile the decode step of every batch and context bucket before serving "
        "(minutes on a CPU) instead of at the first request that needs each; done always with CUDA graphs",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="uvicorn's log level (debug adds one line per request)",
    )
    serve.set_defaults(handler=_serve_command)
