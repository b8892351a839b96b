"""Conversations (OpenAI `messages`, ShareGPT `conversations`) -> one example per assistant turn.

Each assistant turn becomes an example whose instruction is the whole conversation before it,
rendered by `chat_template.render_chat` (the function `frugal serve` renders a chat request
with), and whose response is the turn's text; system prompts are kept. `--turns first|last`
keeps only the first or last assistant turn.

A turn that cannot be rendered as it would be served is skipped, never silently: it comes back
as a `Turn` with `skipped` set and a reason whose first word is one of `SKIP_CATEGORIES`:

- `tool`: the turn calls a tool (`tool_calls`, `function_call`, ShareGPT `function_call`), or the
  conversation before it holds a tool call or a tool's result (`tool`/`function`/`observation`);
- `non-text`: the turn or the conversation before it has a content part that is not text (an
  image, audio, a file); text parts of one message are joined as serving joins them;
- `no-prompt`: no user message comes before the turn (a greeting that opens a chat);
- `weight`: OpenAI's fine-tuning format marks the turn `weight: 0`, not to be learned;
- `turns`: not selected by `--turns first|last`.

A conversation that is not a list of messages, has a message of unknown role or without text,
or does not end with an assistant turn is a bad row (one reason, no examples).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from frugal_lm.data.chat_template import render_chat
from frugal_lm.data.formats import MESSAGES, ends_with_final_answer

SKIP_CATEGORIES = ("tool", "non-text", "no-prompt", "weight", "turns")
ROLES = {
    "system": "system",
    "developer": "developer",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "tool": "tool",
    "function": "tool",
    "ipython": "tool",
    "observation": "tool",
    "function_call": "tool-call",  # ShareGPT: the assistant calling a tool
}
TOOL_ROLES = ("tool", "tool-call")
ASSISTANT_ROLES = ("assistant", "tool-call")


@dataclass(frozen=True)
class Message:
    role: str
    """system, developer, user, assistant, tool (a tool's result) or tool-call."""
    text: str
    non_text: str | None = None
    """The type of a non-text content part, if the message has one."""
    calls_tool: bool = False
    weight: Any = None


@dataclass(frozen=True)
class Turn:
    """One assistant turn: its record fields, or why it is skipped."""

    number: int
    fields: dict | None
    reason: str | None = None
    skipped: bool = False


def parse_conversation(row: dict, style: str) -> list[Message] | str:
    """The messages of a `messages` (OpenAI) or `sharegpt` row, or why they are unusable."""
    key = "messages" if style == MESSAGES else "conversations"
    raw = row.get(key)
    if raw is None:
        return f"missing field {key!r}"
    if not isinstance(raw, list) or not raw:
        return f"field {key!r} must be a non-empty list of messages, got {type(raw).__name__}"
    messages = []
    for index, item in enumerate(raw, start=1):
        message = _parse_message(item, style)
        if isinstance(message, str):
            return f"{key} message {index}: {message}"
        messages.append(message)
    return messages


def _parse_message(item: Any, style: str) -> Message | str:
    if not isinstance(item, dict):
        return f"expected an object, got {type(item).__name__}"
    role_key = "role" if style == MESSAGES or "from" not in item else "from"
    role = ROLES.get(str(item.get(role_key)).lower())
    if role is None:
        return f"unknown role {item.get(role_key)!r}; known: {', '.join(sorted(set(ROLES)))}"
    content = item.get("content") if style == MESSAGES or "value" not in item else item.get("value")
    calls_tool = bool(item.get("tool_calls") or item.get("function_call")) or role == "tool-call"
    text, non_text = _content_text(content)
    if text is None and not calls_tool:
        return f"{role} content must be text or a list of text parts, got {type(content).__name__}"
    return Message(role, text or "", non_text, calls_tool, item.get("weight"))


def _content_text(content: Any) -> tuple[str | None, str | None]:
    """(text, type of a non-text part) of a message's content: text parts joined with nothing
    between them, as `frugal serve` joins them (`ChatMessage.text`)."""
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        return None, None
    texts, non_text = [], None
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            non_text = non_text or (str(part.get("type")) if isinstance(part, dict) else type(part).__name__)
    return "".join(texts), non_text


def conversation_turns(
    messages: list[Message], turns: str = "all", first_target: int = 0, open_ended: bool = False
) -> Iterator[Turn] | str:
    """A Turn for every assistant message from index `first_target` on (earlier ones are context
    only, as in a conversational prompt/completion row), or why the conversation is bad. With
    `open_ended` (prompt-only reading, `ReadOptions.require_response=False`), a conversation that
    ends before an answer gives one more turn, the prompt to answer, whose response is ""."""
    ends_open = messages[-1].role not in ASSISTANT_ROLES
    if ends_open and not open_ended:
        return f"conversation does not end with an assistant turn (its last message is from {messages[-1].role})"
    targets = [i for i, m in enumerate(messages) if i >= first_target and m.role in ASSISTANT_ROLES]
    if ends_open:
        targets.append(len(messages))  # the answer still to be written
    return _turns(messages, targets, turns)


def _turns(messages: list[Message], targets: list[int], turns: str) -> Iterator[Turn]:
    for number, index in enumerate(targets, start=1):
        chosen = turns == "all" or (turns == "first" and number == 1) or (turns == "last" and number == len(targets))
        if not chosen:
            yield Turn(number, None, f"turns: not selected by --turns {turns}", skipped=True)
            continue
        prefix, answer = messages[:index], messages[index] if index < len(messages) else None
        skip = _skip_reason(prefix, answer)
        if skip is not None:
            yield Turn(number, None, skip, skipped=True)
            continue
        response = answer.text if answer is not None else ""
        fields = {"instruction": render_chat([(m.role, m.text) for m in prefix]), "response": response}
        if ends_with_final_answer(response):
            fields["condition"] = "cot"
        yield Turn(number, fields)


def _skip_reason(prefix: list[Message], answer: Message | None) -> str | None:
    """Why the assistant turn `answer` (None: one still to be written) after `prefix` cannot be an
    example, or None."""
    if answer is not None and answer.calls_tool:
        return "tool: the assistant turn calls a tool"
    if any(m.role in TOOL_ROLES or m.calls_tool for m in prefix):
        return "tool: the conversation before it holds a tool call or result"
    non_text = next((m.non_text for m in [*prefix, *([answer] if answer else [])] if m.non_text), None)
    if non_text is not None:
        return f"non-text: a {non_text!r} content part"
    if answer is not None and answer.weight == 0:
        return "weight: marked weight 0 (not to be learned)"
    if not any(m.role == "user" for m in prefix):
        return "no-prompt: no user message before it"
    return None
