"""OpenAI-compatible request and response bodies for `frugal serve` (pydantic).

Design choices:
- Requests are validated strictly (`strict=True`, `extra="forbid"`): a string where a number
  belongs, or a field we do not know, is a 400 naming the field, never coerced or silently
  ignored. Fields OpenAI defines but we cannot honour (`n > 1`, `logprobs`, `echo`, penalties,
  tools, ...) are accepted only at their neutral value, so a client that does not rely on them
  works unchanged and one that does is told so.
- frugal-lm models are trained on instruction -> response pairs, not on a chat template, so
  `chat_instruction` turns a message list into an instruction by the one rule that training
  data goes through too (`data.chat_template.render_chat`). The condition tag (`direct`,
  `cot`, ...) travels in an extra field `condition`, comma-separated as in the data format,
  default `direct`.
- Text fields are `Text`: valid Unicode only. JSON may carry a lone surrogate ("\\udfff"),
  which no tokenizer (and no UTF-8 encoder) accepts; refused here it is a 400 naming the field,
  not a 500 from deep inside tokenization.
- Length limits that depend on the model (prompt longer than the context, `max_tokens` beyond
  what is left of it) are checked by the server after tokenization, not here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_serializer

from frugal_lm.data.chat_template import render_chat

MAX_STOP_STRINGS = 16
# Below the context (which the server checks); this bound only keeps a typo like 1e12 out.
MAX_TOKENS_LIMIT = 1 << 20


def _valid_unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"not valid Unicode text: a lone surrogate U+{ord(text[error.start]):04X} at character {error.start}"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class StrictBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(StrictBody):
    include_usage: bool = False


class SamplingFields(StrictBody):
    """Fields shared by completions and chat completions."""

    model: Text
    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0  # extension (vLLM spelling); 0 = off
    seed: Annotated[int, Field(ge=-(1 << 63), lt=1 << 64)] | None = None  # what torch.Generator takes
    stop: Text | list[Text] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    condition: Text = "direct"  # extension: comma-separated condition tags
    user: Text | None = None  # accepted for compatibility; only an end-user label
    # Sent by common OpenAI clients by default; they label or route a request and change no
    # token, so they are accepted and ignored rather than refused.
    metadata: dict[str, Text] | None = None
    store: bool | None = None
    service_tier: Text | None = None
    prompt_cache_key: Text | None = None
    safety_identifier: Text | None = None
    # OpenAI fields accepted only at their neutral value (checked in `unsupported_field`).
    n: int = 1
    logprobs: bool | int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> list[str]:
        strings = [stop] if isinstance(stop, str) else list(stop or [])
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not s for s in strings):
            raise ValueError("stop strings must not be empty")
        return strings

    @field_validator("condition")
    @classmethod
    def _condition_tags(cls, condition: str) -> str:
        if not condition_tags(condition):
            raise ValueError("needs at least one condition tag, e.g. 'direct' or 'cot'")
        return condition

    @property
    def stop_strings(self) -> list[str]:
        return list(self.stop or [])  # a given value is a list after the validator; the default is None

    @property
    def conditions(self) -> tuple[str, ...]:
        return condition_tags(self.condition)

    def unsupported_field(self) -> tuple[str, str] | None:
        """(field, message) for the first field set to a value this server cannot honour."""
        if self.n != 1:
            return "n", "only n=1 is supported; send separate requests for more samples"
        if self.logprobs not in (None, False, 0):
            return "logprobs", "logprobs are not supported"
        if self.presence_penalty != 0.0 or self.frequency_penalty != 0.0:
            field = "presence_penalty" if self.presence_penalty != 0.0 else "frequency_penalty"
            return field, "presence and frequency penalties are not supported"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported"
        return None


TokenIds = Annotated[list[Annotated[int, Field(strict=True)]], Field(min_length=1)]


class CompletionRequest(SamplingFields):
    """POST /v1/completions. The prompt is the instruction, as text or as the token ids of
    its text (the server adds BOQ, the condition tokens and EOQ either way); a list of
    prompts gives one choice per prompt. OpenAI's four shapes: a string, a list of strings,
    a list of token ids, a list of lists of token ids."""

    prompt: (
        Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]
    )
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_shape(cls, prompt: object) -> object:
        if isinstance(prompt, list) and prompt:
            kinds = {
                str
                if isinstance(item, str)
                else list
                if isinstance(item, list)
                else int
                if isinstance(item, int) and not isinstance(item, bool)
                else None
                for item in prompt
            }
            if len(kinds) != 1 or None in kinds:
                raise ValueError(
                    "must be a string, a list of strings, a list of token ids or a list of lists of token ids"
                )
        return prompt

    @property
    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or the token ids of the text."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if isinstance(self.prompt[0], int):
            return [list(self.prompt)]  # type: ignore[arg-type]
        return list(self.prompt)  # type: ignore[arg-type]

    def unsupported_field(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported"
        if self.best_of not in (None, 1):
            return "best_of", "only best_of=1 is supported"
        if self.suffix:
            return "suffix", "suffix (insertion) is not supported"
        return super().unsupported_field()


class TextPart(StrictBody):
    type: Literal["text"]
    text: Text


class ChatMessage(StrictBody):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)] | None = None
    tools: list[dict] | None = None
    response_format: dict | None = None
    parallel_tool_calls: bool | None = None  # no tools are ever called, so it changes nothing
    tool_choice: Literal["none", "auto"] | None = None  # "required" or a named tool cannot be honoured
    top_logprobs: Annotated[int, Field(ge=0)] | None = None  # neutral at 0 (checked below)

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError("the last message must come from the user (the model answers it)")
        return messages

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def unsupported_field(self) -> tuple[str, str] | None:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            return "max_completion_tokens", "give max_tokens or max_completion_tokens, not both"
        if self.tools:
            return "tools", "tool calls are not supported"
        if self.top_logprobs:
            return "top_logprobs", "logprobs are not supported"
        if self.response_format and self.response_format.get("type") != "text":
            return "response_format", "only response_format {'type': 'text'} is supported"
        return super().unsupported_field()

    @property
    def instruction(self) -> str:
        return chat_instruction(self.messages)


def condition_tags(condition: str) -> tuple[str, ...]:
    return tuple(tag.strip() for tag in condition.split(",") if tag.strip())


def chat_instruction(messages: list[ChatMessage]) -> str:
    """The instruction a chat becomes (the model was trained on single instructions), by
    `data.chat_template.render_chat`, the function training data goes through too: a lone user
    message verbatim; otherwise system/developer messages first, then `User: text` /
    `Assistant: text` turns, separated by blank lines."""
    return render_chat([(message.role, message.text) for message in messages])


# ---- responses -------------------------------------------------------------------------------

FinishReason = Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _present_fields_only(self, handler) -> dict:
        # OpenAI's deltas carry only what changed: the last one is `{}`.
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "frugal-lm"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail
