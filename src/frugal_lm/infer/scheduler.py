"""Continuous batching for the HTTP server: one thread owns the Engine, asyncio talks to it.

Design choices:
- Exactly one thread (`frugal-engine`) calls `Engine.add_many/step/release`: the engine's caches
  and RNG state are not thread-safe, and one owner makes every slot's lifetime easy to follow.
  Between decode steps it releases cancelled slots and admits waiting requests into free
  slots, so a new request joins the running batch at the next step (continuous batching)
  instead of waiting for the whole batch to drain.
- Capacity is bounded: at most `max_batch_size` requests decode while `max_queue` more wait.
  `submit` refuses a request beyond that with `QueueFull` (the server answers 503 with
  Retry-After) instead of letting latency and memory grow without limit. A multi-prompt
  request is admitted whole or not at all.
- Text, not tokens, crosses the thread boundary: the engine thread detokenizes incrementally
  (`TextStream`, holding back incomplete UTF-8 and anything that may still become a stop
  string) and cuts stop strings, so a stop string frees the slot at once.
  Events reach the request's asyncio queue via `loop.call_soon_threadsafe`.
- Cancelling (client gone) is cheap and safe from the event loop: a waiting request leaves
  the queue immediately, a running one is flagged and its slot released before the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from frugal_lm.infer.text_stream import TextStream

if TYPE_CHECKING:
    from frugal_lm.infer.engine import Engine, SamplingParams, TokenEvent

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The scheduler holds as many requests as it may; try again later."""


class SchedulerClosed(Exception):
    """The scheduler is shutting down and takes no new requests."""


@dataclass
class TextEvent:
    """What a request's consumer sees: new text, and at the end why it finished."""

    index: int  # which prompt of the request
    text: str = ""  # text produced since the previous event
    finished: bool = False
    finish_reason: str | None = None  # "stop" (EOA or stop string) | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # set when generation failed (finished is then True)


@dataclass
class PromptJob:
    """One prompt to generate for (a request may carry several)."""

    prompt_ids: list[int]
    sampling: SamplingParams
    stop_strings: list[str] = field(default_factory=list)


@dataclass
class _Job:
    index: int
    spec: PromptJob
    group: RequestGroup
    stream: TextStream
    cancelled: bool = False
    completion_tokens: int = 0


class RequestGroup:
    """The asyncio side of one HTTP request: its events, and `cancel()`."""

    def __init__(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop, size: int):
        self.scheduler = scheduler
        self.loop = loop
        self.events: asyncio.Queue[TextEvent | None] = asyncio.Queue()
        self.jobs: list[_Job] = []
        self.unfinished = size
        self.cancelled = False

    def deliver(self, event: TextEvent) -> None:
        """Called from the engine thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            self.cancel_from_thread()

    async def stream(self) -> AsyncIterator[TextEvent]:
        """Events until every prompt has finished, or until the request is cancelled."""
        while self.unfinished and not self.cancelled:
            event = await self.events.get()
            if event is None:  # cancel() woke us up
                return
            if event.finished:
                self.unfinished -= 1
            yield event

    def cancel(self) -> None:
        """Stop generating (the client went away); safe to call twice or after the end."""
        if not self.cancelled and self.unfinished:
            self.cancelled = True
            self.scheduler.cancel(self)
            self.events.put_nowait(None)

    def cancel_from_thread(self) -> None:
        for job in self.jobs:
            job.cancelled = True


class Scheduler:
    """Owns an Engine on a background thread and batches requests into its slots."""

    def __init__(self, engine: Engine, decode: Callable[[list[int]], str], max_queue: int):
        self.engine = engine
        self.decode = decode  # token ids -> text (the model's tokenizer)
        self.max_batch_size = engine.free_slots()
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._waiting: deque[_Job] = deque()
        self._active: dict[int, _Job] = {}  # slot -> job; touched by the engine thread only
        self.active_count = 0  # mirrors len(_active), read under the lock
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="frugal-engine", daemon=True)

    # ---- event-loop side ----------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def load(self) -> tuple[int, int]:
        """(requests decoding, requests waiting)."""
        with self._lock:
            return self.active_count, len(self._waiting)

    def submit(self, prompts: list[PromptJob]) -> RequestGroup:
        """Queue the prompts of one request; raises QueueFull or SchedulerClosed."""
        group = RequestGroup(self, asyncio.get_running_loop(), len(prompts))
        group.jobs = [
            _Job(i, spec, group, TextStream(self.decode, spec.stop_strings)) for i, spec in enumerate(prompts)
        ]
        with self._lock:
            if self._closing:
                raise SchedulerClosed("the server is shutting down")
            if self.active_count + len(self._waiting) + len(prompts) > self.max_batch_size + self.max_queue:
                raise QueueFull(f"the server is at capacity ({self.max_batch_size} decoding, {self.max_queue} waiting)")
            self._waiting.extend(group.jobs)
            self._wakeup.notify()
        return group

    def cancel(self, group: RequestGroup) -> None:
        with self._lock:
            for job in group.jobs:
                job.cancelled = True
            # A waiting job leaves at once, so it stops taking a queue place.
            self._waiting = deque(job for job in self._waiting if not job.cancelled)
            self._wakeup.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is left, and stop the engine thread."""
        with self._lock:
            self._closing = True
            self._wakeup.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- engine thread ------------------------------------------------------------------------

    def _run(self) -> None:
        reason = "the server shut down before this request finished"
        try:
            self._serve()
        except BaseException as error:  # a bug: fail every request rather than leave it hanging
            log.exception("the engine thread failed")
            reason = f"the engine failed: {type(error).__name__}: {error}"
            raise
        finally:
            with self._lock:
                self._closing = True
                leftovers = [*self._waiting, *self._active.values()]
                self._waiting.clear()
            for job in leftovers:
                self._finish(job, error=reason)
            for slot in list(self._active):
                self._retire(slot)

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._active and not self._closing:
                    self._wakeup.wait()
                if self._closing:
                    return
                cancelled = [slot for slot, job in self._active.items() if job.cancelled]
            for slot in cancelled:
                self._retire(slot)
            self._admit()
            if self._active:
                self._step()

    def _admit(self) -> None:
        """Move as many waiting prompts as there are free slots into the engine, prefilled
        together (`Engine.add_many`); if that fails, one by one, so that only the prompt
        at fault fails."""
        with self._lock:
            jobs = [self._waiting.popleft() for _ in range(min(self.engine.free_slots(), len(self._waiting)))]
            self.active_count += len(jobs)  # still counted against capacity while they prefill
        if not jobs:
            return
        try:
            slots = self.engine.add_many([job.spec.prompt_ids for job in jobs], [job.spec.sampling for job in jobs])
        except Exception:  # a bad request must not take the server down, nor its neighbours
            log.exception("engine.add_many failed; admitting its prompts one by one")
            slots = [self._add_alone(job) for job in jobs]
        with self._lock:
            for slot, job in zip(slots, jobs):
                if slot is not None:
                    self._active[slot] = job
            self.active_count = len(self._active)

    def _add_alone(self, job: _Job) -> int | None:
        try:
            return self.engine.add(job.spec.prompt_ids, job.spec.sampling)
        except Exception as error:
            log.exception("engine.add failed")
            self._finish(job, error=f"generation failed: {error}")
            return None

    def _step(self) -> None:
        try:
            for event in self.engine.step():
                self._on_token(event)
        except Exception as error:  # fail the running requests, keep serving the next ones
            log.exception("decoding failed; failing the running requests")
            for slot, job in list(self._active.items()):
                self._retire(slot)
                self._finish(job, error=f"generation failed: {type(error).__name__}: {error}")

    def _on_token(self, event: TokenEvent) -> None:
        job = self._active.get(event.slot)
        if job is None:
            return
        job.completion_tokens += 1  # every event is one generated token, EOA included
        text = "" if event.token_id is None else job.stream.push(event.token_id)
        # Retire before answering: a client that has its answer finds the slot free.
        if job.stream.stopped:
            self._retire(event.slot)
            self._finish(job, text, "stop")
        elif event.finished:
            self._retire(event.slot)
            self._finish(job, text + job.stream.flush(), event.finish_reason or "length")
        elif text and not job.cancelled:
            job.group.deliver(TextEvent(job.index, text))

    def _finish(self, job: _Job, text: str = "", reason: str | None = None, error: str | None = None) -> None:
        if not job.cancelled:
            job.group.deliver(
                TextEvent(job.index, text, True, reason, len(job.spec.prompt_ids), job.completion_tokens, error)
            )

    def _retire(self, slot: int) -> None:
        self.engine.release(slot)
        with self._lock:
            self._active.pop(slot, None)
            self.active_count = len(self._active)
