"""The one rule that turns a chat into an instruction, shared by training data and serving.

frugal-lm models are trained on instruction -> response pairs, not on a chat template. A
conversation in the training data (`data.conversations`) and a chat request to `frugal serve`
(`infer.openai_schema.chat_instruction`) both become an instruction through `render_chat`, so a
model sees in training exactly the text it will be served.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLE_LABELS = {"user": "User", "assistant": "Assistant"}
PREAMBLE_ROLES = ("system", "developer")
CHAT_ROLES = (*PREAMBLE_ROLES, *ROLE_LABELS)


def render_chat(messages: Sequence[tuple[str, str]]) -> str:
    """The instruction that a chat, given as (role, text) pairs, becomes:

    - a lone message is the instruction verbatim, exactly as in single-turn training data;
    - otherwise system/developer messages come first, verbatim, then every user/assistant
      turn as `User: text` / `Assistant: text` (the last one is the user's new question),
      all separated by blank lines; with one user/assistant turn only, it has no label.
    """
    if len(messages) == 1:
        return messages[0][1]
    preamble = [text for role, text in messages if role in PREAMBLE_ROLES]
    turns = [f"{ROLE_LABELS[role]}: {text}" for role, text in messages if role in ROLE_LABELS]
    if len(turns) == 1:  # system prompt + one question: no labels needed
        turns = [next(text for role, text in messages if role in ROLE_LABELS)]
    return "\n\n".join([*preamble, *turns])
