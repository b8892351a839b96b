"""`frugal chat`: an interactive terminal session over the engine, streaming each answer.

Design choices:
- The HRM-Text recipe trains on single instruction -> response pairs, so earlier turns are
  folded into one instruction exactly as the server folds a chat request
  (`openai_schema.chat_instruction`: `User: ...` / `Assistant: ...` turns): `frugal chat`
  and `frugal serve` answer the same conversation the same way. `/reset` starts over; when
  the folded conversation no longer fits the context, the oldest turns are left out.
  Settings (condition tags, sampling) persist across messages.
- Commands start with "/" (`/condition cot`, `/temperature 0.7`, `/help`, `/quit`); a
  mistyped command or value prints a one-line error and the session goes on.
- Ctrl-C while typing (or end of input) ends the session cleanly; Ctrl-C while an answer
  streams cancels that answer only and frees its engine slot.
- Text streams as the tokens come, through the server's incremental detokenizer
  (`text_stream.TextStream`): a partial UTF-8 character is held back until it completes, so
  the printed answer is exactly the decoded answer.
- Input and output are injectable (`read_line`, `out`), which is how the tests feed it lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TextIO

from frugal_lm.errors import FrugalError
from frugal_lm.infer.engine import Engine, SamplingParams
from frugal_lm.infer.openai_schema import ChatMessage, chat_instruction
from frugal_lm.infer.text_stream import TextStream

HELP = """commands:
  /condition TAGS       condition tags for the next answers, comma-separated (e.g. cot or direct,noisy)
  /temperature T        0 = greedy (default), > 0 samples
  /top-p P  /top-k K    sampling filters (1.0 and 0 = off)
  /max-new-tokens N     answer length limit
  /seed S               seed for sampling (`/seed none` for a fresh one per answer)
  /settings             show the current settings
  /reset                forget the conversation so far (the next message starts a new one)
  /help                 this text
  /quit                 leave (so do Ctrl-C at the prompt and Ctrl-D)
Anything else is sent to the model, with the earlier turns folded into the instruction as `frugal serve`
does; Ctrl-C while it answers cancels the answer."""


def stream_tokens(engine: Engine, prompt_ids: list[int], sampling: SamplingParams) -> Iterator[int | str]:
    """Prefill now (errors surface here), then yield each generated token id and finally
    the finish reason. The slot is freed however the stream ends: finished, closed early
    or interrupted."""
    slot = engine.add(prompt_ids, sampling)
    return _slot_stream(engine, slot)


def _slot_stream(engine: Engine, slot: int) -> Iterator[int | str]:
    try:
        while True:
            for event in engine.step():
                if event.slot != slot:
                    continue
                if event.token_id is not None:
                    yield event.token_id
                if event.finished:
                    yield event.finish_reason
                    return
    finally:
        engine.release(slot)


class ChatSession:
    def __init__(
        self,
        engine: Engine,
        sampling: SamplingParams,
        conditions: tuple[str, ...] = ("direct",),
        read_line: Callable[[str], str] = input,
        out: TextIO | None = None,
        model: str | None = None,
    ):
        self.engine, self.sampling, self.conditions = engine, sampling, conditions
        self.read_line = read_line
        self.out = out or sys.stdout
        self.model = model  # named in the banner
        self.turns: list[tuple[str, str]] = []  # (user message, answer) so far

    def say(self, text: str = "", end: str = "\n") -> None:
        print(text, end=end, file=self.out, flush=True)

    def run(self) -> int:
        loaded = f" with {self.model}" if self.model else ""
        self.say(f"frugal chat{loaded}: type a message, /help for commands, /quit to leave")
        while True:
            try:
                line = self.read_line("> ")
            except (EOFError, KeyboardInterrupt):
                self.say()
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
                continue
            self.answer(line)

    def instruction(self, message: str, turns: list[tuple[str, str]]) -> str:
        """The conversation as the server folds it: earlier turns, then `message`."""
        messages = [
            ChatMessage(role=role, content=text)
            for user, answer in turns
            for role, text in (("user", user), ("assistant", answer))
        ]
        return chat_instruction([*messages, ChatMessage(role="user", content=message)])

    def prompt_ids(self, message: str) -> list[int]:
        """The folded prompt's ids, leaving out the oldest turns while it does not fit the
        context (the engine refuses a message that does not fit alone)."""
        for first in range(len(self.turns) + 1):
            ids = self.engine.encode_prompt(self.instruction(message, self.turns[first:]), self.conditions)
            if len(ids) <= self.engine.max_seq_len:
                break
        return ids

    def answer(self, message: str) -> None:
        stream = None
        try:
            try:
                stream = stream_tokens(self.engine, self.prompt_ids(message), self.sampling)
            except FrugalError as error:
                self.say(f"error: {error}")
                return
            text = TextStream(self.engine.tokenizer.decode)
            for item in stream:
                if isinstance(item, str):  # the finish reason
                    self.say(text.flush() + ("" if item == "stop" else " [length limit]"))
                    self.turns.append((message, text.text))
                    return
                self.say(text.push(item), end="")
        except KeyboardInterrupt:
            if stream is not None:
                stream.close()  # frees the slot
            self.say(" [cancelled]")

    def command(self, line: str) -> bool:
        """Apply one /command; False means quit."""
        name, _, value = line.partition(" ")
        value = value.strip()
        try:
            if name in ("/quit", "/exit"):
                return False
            if name == "/help":
                self.say(HELP)
            elif name == "/settings":
                self.say(self.describe())
            elif name == "/reset":
                self.turns = []
                self.say("conversation reset")
            elif name == "/condition":
                tags = tuple(tag.strip() for tag in value.split(",") if tag.strip())
                self.engine.encode_prompt("", tags)  # validates the tags
                self.conditions = tags
                self.say(f"condition: {','.join(tags)}")
            elif name in SETTINGS:
                field, parse = SETTINGS[name]
                sampling = replace(self.sampling, **{field: parse(value)})
                sampling.validate()
                self.sampling = sampling
                self.say(self.describe())
            else:
                self.say(f"error: unknown command {name}; /help lists them")
        except FrugalError as error:
            self.say(f"error: {error}")
        except ValueError:
            kind = "a whole number" if SETTINGS[name][1] is not float else "a number"
            problem = f"{value!r} is not {kind}" if value else "needs a value"
            self.say(f"error: {name} {problem}, e.g. {EXAMPLES.get(name, name + ' 1')}")
        return True

    def describe(self) -> str:
        s = self.sampling
        return (
            f"condition={','.join(self.conditions)} temperature={s.temperature} top_p={s.top_p} "
            f"top_k={s.top_k} max_new_tokens={s.max_new_tokens} seed={s.seed}"
        )


def _seed(value: str) -> int | None:
    return None if value.lower() == "none" else int(value)


SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "/temperature": ("temperature", float),
    "/top-p": ("top_p", float),
    "/top-k": ("top_k", int),
    "/max-new-tokens": ("max_new_tokens", int),
    "/seed": ("seed", _seed),
}
EXAMPLES = {
    "/temperature": "/temperature 0.7",
    "/top-p": "/top-p 0.9",
    "/top-k": "/top-k 40",
    "/max-new-tokens": "/max-new-tokens 128",
    "/seed": "/seed 0",
}
