"""OpenAI-compatible HTTP server (FastAPI): /v1/completions, /v1/chat/completions, /v1/models, /health.

Design choices:
- The app is a thin layer over `Scheduler` (one engine thread, continuous batching, bounded
  queue). Handlers validate, tokenize (in the threadpool, off the event loop), submit and
  then only await events; nothing here touches the engine's slots.
- Every failure a client can cause is answered in OpenAI's error shape (`api_errors.py`)
  `{"error": {"message", "type", "param", "code"}}`: 400 for malformed JSON, wrong types,
  unknown fields, unsupported options, text that is not valid Unicode, prompts that do not
  fit the context, `max_tokens` beyond what is left of it and more prompts in one request
  than the server can ever hold at once; 404 for an unknown model or route; 413 for a body
  over `--max-body-bytes`, 408 for a request that does not arrive within
  `--request-timeout` (`http_limits.py`); 503 with Retry-After when the queue is full right
  now. A client's mistake never reaches the engine thread.
- Cheap checks come before expensive ones: a request's prompt count and each prompt's length
  are checked before any token id is looked at or any text tokenized.
- `max_tokens` defaults to what is left of the context: generation ends at EOA anyway, and
  a short hidden default (OpenAI's 16 for completions) would silently truncate answers.
  `temperature` defaults to 1.0 as in OpenAI's API; send 0 for greedy decoding.
- A client that disconnects, while waiting or while streaming, cancels its request: a
  watcher task per request listens for `http.disconnect` and the scheduler frees the slot
  before the next decode step.
- The routes, error handlers and SSE chunkers are module-level functions that read the
  shared `ServerState` from `app.state.server`; `create_app` only wires them together.
- Streaming is Server-Sent Events in OpenAI's chunk format, ending with `data: [DONE]`; an
  error after the stream started is sent as an `{"error": ...}` event before `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from frugal_lm.errors import FrugalError
from frugal_lm.infer.api_errors import EXCEPTION_HANDLERS, ApiError
from frugal_lm.infer.engine import Engine, InvalidTokenId, SamplingParams
from frugal_lm.infer.http_limits import BodyLimit, HttpLimits
from frugal_lm.infer.openai_schema import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
)
from frugal_lm.infer.scheduler import PromptJob, QueueFull, RequestGroup, Scheduler, SchedulerClosed, TextEvent

__all__ = ["ApiError", "ServerState", "create_app"]

RETRY_AFTER_SECONDS = 1


@dataclass
class Finished:
    """One prompt's outcome, collected from its events."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class ServerState:
    """What the handlers share: the engine (for tokenizing and limits) and the scheduler."""

    def __init__(self, engine: Engine, model_name: str, max_queue: int):
        self.engine = engine
        self.model_name = model_name
        self.created = int(time.time())
        self.context = engine.max_seq_len
        self.scheduler = Scheduler(engine, engine.tokenizer.decode, max_queue)
        # A prompt of more characters than this cannot fit the context, whatever its tokens:
        # rejecting it before tokenizing keeps a huge body from stalling the server. The factor 4
        # leaves room for normalizers that merge characters (NFC) in imported tokenizers.
        tokenizer = engine.tokenizer
        longest_token = max(len(tokenizer.decode([i])) for i in range(tokenizer.vocab_size))
        self.max_prompt_chars = 4 * max(longest_token, 1) * self.context
        self.watchers: set[asyncio.Task] = set()

    def check_model(self, model: str) -> None:
        if model != self.model_name:
            raise ApiError(
                404,
                f"model {model!r} does not exist; this server serves {self.model_name!r}",
                "model",
                "model_not_found",
            )

    def prepare(
        self, body: SamplingFields, instructions: list[str | list[int]], max_tokens: int | None, prompt_field: str
    ) -> list[PromptJob]:
        """Validated, tokenized jobs (runs in the threadpool); an instruction is text or the
        token ids of its text; `prompt_field` names the instructions' source in errors
        ("prompt" or "messages")."""
        self.check_model(body.model)
        unsupported = body.unsupported_field()
        if unsupported is not None:
            raise ApiError(400, unsupported[1], unsupported[0], "unsupported_parameter")
        capacity = self.scheduler.max_batch_size + self.scheduler.max_queue
        if len(instructions) > capacity:
            raise ApiError(
                400,
                f"{len(instructions)} prompts in one request; this server holds at most {capacity} "
                f"at once ({self.scheduler.max_batch_size} decoding + {self.scheduler.max_queue} "
                f"waiting): send them in smaller requests",
                prompt_field,
                "too_many_prompts",
            )
        for instruction in instructions:  # every size check before any tokenizing
            if isinstance(instruction, list) and len(instruction) + 2 >= self.context:  # + BOQ, EOQ
                raise self._too_long(f"{len(instruction)} tokens", prompt_field)
            if isinstance(instruction, str) and len(instruction) > self.max_prompt_chars:
                raise self._too_long(f"more than {self.max_prompt_chars:,} characters", prompt_field)
        jobs = []
        for instruction in instructions:
            try:
                prompt_ids = self.engine.encode_prompt(instruction, body.conditions)
            except InvalidTokenId as error:
                raise ApiError(400, str(error), prompt_field, "invalid_token_id") from None
            except FrugalError as error:
                raise ApiError(400, str(error), "condition", "invalid_condition") from None
            room = self.context - len(prompt_ids)
            if room < 1:
                raise self._too_long(f"{len(prompt_ids)} tokens", prompt_field)
            if max_tokens is not None and max_tokens > room:
                raise ApiError(
                    400,
                    f"max_tokens={max_tokens} is more than the context allows: the model's "
                    f"context is {self.context} tokens and the prompt takes {len(prompt_ids)}, "
                    f"leaving {room}",
                    "max_tokens",
                    "context_length_exceeded",
                )
            sampling = SamplingParams(
                max_new_tokens=max_tokens or room,
                temperature=body.temperature,
                top_p=body.top_p,
                top_k=body.top_k,
                seed=body.seed,
            )
            jobs.append(PromptJob(prompt_ids, sampling, body.stop_strings))
        return jobs

    def _too_long(self, size: str, prompt_field: str) -> ApiError:
        return ApiError(
            400,
            f"the prompt ({size}) does not fit the model's context of {self.context} tokens with room for an answer",
            prompt_field,
            "context_length_exceeded",
        )

    def submit(self, jobs: list[PromptJob], request: Request) -> RequestGroup:
        try:
            group = self.scheduler.submit(jobs)
        except QueueFull as error:
            raise ApiError(
                503,
                f"{error}; retry in a moment",
                None,
                "queue_full",
                "server_overloaded",
                {"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        except SchedulerClosed as error:
            raise ApiError(
                503, str(error), None, "shutting_down", "server_error", {"Retry-After": str(RETRY_AFTER_SECONDS)}
            ) from None
        watcher = asyncio.create_task(_cancel_on_disconnect(request, group))
        self.watchers.add(watcher)
        watcher.add_done_callback(self.watchers.discard)
        return group


async def _cancel_on_disconnect(request: Request, group: RequestGroup) -> None:
    """Cancel `group` when the client goes away. Once the response is complete the server
    reports a disconnect too, and cancelling a finished group is a no-op."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            group.cancel()
            return


async def _collect(group: RequestGroup) -> list[Finished]:
    texts: dict[int, list[str]] = {}
    finished: dict[int, Finished] = {}
    try:
        async for event in group.stream():
            if event.error:
                raise ApiError(500, event.error, kind="server_error", code="generation_failed")
            texts.setdefault(event.index, []).append(event.text)
            if event.finished:
                finished[event.index] = Finished(
                    "".join(texts[event.index]), event.finish_reason, event.prompt_tokens, event.completion_tokens
                )
    finally:
        group.cancel()  # no-op when every prompt finished; frees the slots otherwise
    if len(finished) < len(group.jobs):  # cancelled: the client is gone, nobody reads this
        raise ApiError(499, "the client closed the request", kind="client_closed_request")
    return [finished[i] for i in sorted(finished)]


def _usage(prompt_tokens: int, completion_tokens: int) -> Usage:
    return Usage(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _sse_stream(group: RequestGroup, chunks) -> AsyncIterator[str]:
    """Events -> SSE lines via `chunks` (a per-endpoint formatter), then [DONE]."""
    try:
        async for line in chunks(group.stream()):
            yield line
    except ApiError as error:
        yield _sse(json.loads(error.response().body))
    finally:
        group.cancel()
    yield "data: [DONE]\n\n"


def create_app(engine: Engine, model_name: str, max_queue: int = 64, limits: HttpLimits = HttpLimits()) -> FastAPI:
    """The ASGI app serving `engine` as `model_name`; the engine thread runs for the app's lifespan.
    `limits` gives the body size and body timeout (the connection limits are uvicorn's, `uvicorn_server`)."""
    state = ServerState(engine, model_name, max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.scheduler.start()
        yield
        await run_in_threadpool(state.scheduler.close)

    app = FastAPI(title="frugal-lm", summary="OpenAI-compatible API for a frugal-lm model", lifespan=lifespan)
    app.state.server = state
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout_s=limits.request_timeout_s)
    for kind, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(kind, handler)
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    app.add_api_route("/v1/completions", completions, methods=["POST"], response_model=None)
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"], response_model=None)
    return app


def _state(request: Request) -> ServerState:
    return request.app.state.server


# ---- routes --------------------------------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    """Liveness plus load (requests decoding and waiting), capacity, and how the model runs."""
    state = _state(request)
    scheduler = state.scheduler
    active, queued = scheduler.load()
    body = {
        "status": "ok" if scheduler.alive else "error",
        "model": state.model_name,
        "active": active,
        "queued": queued,
        "max_batch_size": scheduler.max_batch_size,
        "max_queue": scheduler.max_queue,
        "context": state.context,
        # How the model runs, so a client can tell which configuration answers it.
        "device": str(state.engine.device),
        "dtype": state.engine.precision,
        "compiled": state.engine.compiled,
        "cuda_graphs": state.engine.cuda_graphs,
    }
    return JSONResponse(body, status_code=200 if scheduler.alive else 503)


def _model_card(state: ServerState) -> ModelCard:
    return ModelCard(id=state.model_name, created=state.created, max_model_len=state.context)


async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_model_card(_state(request))])


async def get_model(model_id: str, request: Request) -> ModelCard:
    state = _state(request)
    state.check_model(model_id)
    return _model_card(state)


@dataclass(frozen=True)
class _Reply:
    """What every chunk and response of one request repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> _Reply:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)


async def completions(body: CompletionRequest, request: Request) -> Response:
    state = _state(request)
    jobs = await run_in_threadpool(state.prepare, body, body.prompts, body.max_tokens, "prompt")
    group = state.submit(jobs, request)
    reply = _Reply.new("cmpl", state.model_name)
    if body.stream:
        return _event_stream(group, partial(_completion_chunks, reply=reply, include_usage=_wants_usage(body)))
    results = await _collect(group)
    return JSONResponse(
        CompletionResponse(
            id=reply.id,
            created=reply.created,
            model=reply.model,
            choices=[
                CompletionChoice(index=i, text=r.text, finish_reason=r.finish_reason) for i, r in enumerate(results)
            ],
            usage=_usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)),
        ).model_dump()
    )


async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = _state(request)
    jobs = await run_in_threadpool(state.prepare, body, [body.instruction], body.requested_max_tokens, "messages")
    group = state.submit(jobs, request)
    reply = _Reply.new("chatcmpl", state.model_name)
    if body.stream:
        return _event_stream(group, partial(_chat_chunks, reply=reply, include_usage=_wants_usage(body)))
    (result,) = await _collect(group)
    return JSONResponse(
        ChatCompletionResponse(
            id=reply.id,
            created=reply.created,
            model=reply.model,
            choices=[
                ChatChoice(index=0, message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)
            ],
            usage=_usage(result.prompt_tokens, result.completion_tokens),
        ).model_dump()
    )


# ---- streaming -----------------------------------------------------------------------------------


def _wants_usage(body: SamplingFields) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


def _completion_chunk(reply: _Reply, index: int, text: str, reason: str | None) -> dict:
    choice = CompletionChoice(index=index, text=text, finish_reason=reason)
    return CompletionResponse(id=reply.id, created=reply.created, model=reply.model, choices=[choice]).model_dump(
        exclude={"usage"}
    )


async def _completion_chunks(
    events: AsyncIterator[TextEvent], reply: _Reply, include_usage: bool
) -> AsyncIterator[str]:
    """/v1/completions events as SSE chunks: one per piece of text, usage over all prompts last."""
    prompt_tokens = completion_tokens = 0
    async for event in events:
        _raise_if_failed(event)
        if event.text or event.finished:
            yield _sse(_completion_chunk(reply, event.index, event.text, event.finish_reason))
        prompt_tokens += event.prompt_tokens
        completion_tokens += event.completion_tokens
    if include_usage:
        yield _sse(
            {
                **_completion_chunk(reply, 0, "", None),
                "choices": [],
                "usage": _usage(prompt_tokens, completion_tokens).model_dump(),
            }
        )


def _chat_chunk(reply: _Reply, delta: ChatDelta | None, reason: str | None = None, usage: Usage | None = None) -> dict:
    choices = [] if delta is None else [ChatChunkChoice(index=0, delta=delta, finish_reason=reason)]
    return ChatCompletionChunk(
        id=reply.id, created=reply.created, model=reply.model, choices=choices, usage=usage
    ).model_dump(exclude={"usage"} if usage is None else None)


async def _chat_chunks(events: AsyncIterator[TextEvent], reply: _Reply, include_usage: bool) -> AsyncIterator[str]:
    """/v1/chat/completions events as SSE chunks: the role first, then content deltas, the
    finish reason, and usage when asked for and the answer finished."""
    usage = None  # stays None when the client goes away before the end
    yield _sse(_chat_chunk(reply, ChatDelta(role="assistant", content="")))
    async for event in events:
        _raise_if_failed(event)
        if event.text:
            yield _sse(_chat_chunk(reply, ChatDelta(content=event.text)))
        if event.finished:
            yield _sse(_chat_chunk(reply, ChatDelta(), event.finish_reason))
            usage = _usage(event.prompt_tokens, event.completion_tokens)
    if usage is not None and include_usage:
        yield _sse(_chat_chunk(reply, None, usage=usage))


def _raise_if_failed(event: TextEvent) -> None:
    if event.error:
        raise ApiError(500, event.error, kind="server_error", code="generation_failed")


def _event_stream(group: RequestGroup, chunks) -> StreamingResponse:
    return StreamingResponse(
        _sse_stream(group, chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
