"""Request bodies: the chat -> instruction rule, and what strict validation accepts."""

import pytest
from pydantic import ValidationError

from frugal_lm.infer.openai_schema import ChatCompletionRequest, ChatMessage, CompletionRequest, chat_instruction


def messages(*pairs):
    return [ChatMessage(role=role, content=content) for role, content in pairs]


def test_lone_user_message_is_the_instruction_verbatim():
    assert chat_instruction(messages(("user", "2+2="))) == "2+2="


def test_system_prompt_goes_first_without_labels_for_one_question():
    assert chat_instruction(messages(("system", "Be brief."), ("user", "2+2="))) == "Be brief.\n\n2+2="


def test_history_is_labelled_turn_by_turn():
    chat = messages(("system", "S"), ("user", "a"), ("assistant", "b"), ("developer", "D"), ("user", "c"))
    assert chat_instruction(chat) == "S\n\nD\n\nUser: a\n\nAssistant: b\n\nUser: c"


def test_text_parts_are_joined():
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "ab"}, {"type": "text", "text": "cd"}]}],
        }
    )
    assert request.instruction == "abcd"


def test_defaults_and_normalisation():
    request = CompletionRequest.model_validate({"model": "m", "prompt": "p"})
    assert (request.temperature, request.top_p, request.top_k, request.conditions) == (1.0, 1.0, 0, ("direct",))
    assert request.stop_strings == [] and request.prompts == ["p"] and request.unsupported_field() is None
    request = CompletionRequest.model_validate(
        {"model": "m", "prompt": ["a", "b"], "stop": "x", "condition": "cot, noisy", "temperature": 0}
    )
    assert request.stop_strings == ["x"] and request.prompts == ["a", "b"]
    assert request.conditions == ("cot", "noisy") and request.temperature == 0.0
    assert CompletionRequest.model_validate({"model": "m", "prompt": [5, 6]}).prompts == [[5, 6]]
    assert CompletionRequest.model_validate({"model": "m", "prompt": [[5], [6, 7]]}).prompts == [[5], [6, 7]]


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "p", "temperature": "0.5"},  # no string -> number coercion
        {"prompt": "p", "max_tokens": 2.0},
        {"prompt": "p", "stream": "yes"},
        {"prompt": "p", "seed": 1 << 64},
        {"prompt": "p", "stop": ["a"] * 17},
        {"prompt": "p", "condition": " , "},
        {"prompt": []},
        {"prompt": "p", "unknown_field": 1},
    ],
)
def test_invalid_completion_bodies(body):
    with pytest.raises(ValidationError):
        CompletionRequest.model_validate({"model": "m", **body})


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": "p", "n": 3}, "n"),
        ({"prompt": "p", "logprobs": 2}, "logprobs"),
        ({"prompt": "p", "best_of": 2}, "best_of"),
        ({"prompt": "p", "presence_penalty": 0.5}, "presence_penalty"),
        ({"prompt": "p", "logit_bias": {"1": 2.0}}, "logit_bias"),
    ],
)
def test_unsupported_options_are_named(body, field):
    assert CompletionRequest.model_validate({"model": "m", **body}).unsupported_field()[0] == field


def test_chat_max_tokens_spellings():
    base = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    assert ChatCompletionRequest.model_validate({**base, "max_completion_tokens": 5}).requested_max_tokens == 5
    assert ChatCompletionRequest.model_validate({**base, "max_tokens": 4}).requested_max_tokens == 4
    both = ChatCompletionRequest.model_validate({**base, "max_tokens": 4, "max_completion_tokens": 5})
    assert both.unsupported_field()[0] == "max_completion_tokens"
    with pytest.raises(ValidationError, match="last message"):
        ChatCompletionRequest.model_validate({**base, "messages": [{"role": "system", "content": "s"}]})


def test_fields_openai_clients_send_by_default_are_accepted_and_change_nothing():
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "2+2="}],
        "parallel_tool_calls": True,
        "metadata": {"run": "a"},
        "store": False,
        "service_tier": "auto",
        "tool_choice": "none",
        "top_logprobs": 0,
        "prompt_cache_key": "k",
        "safety_identifier": "u1",
    }
    request = ChatCompletionRequest.model_validate(body)
    assert request.unsupported_field() is None and request.instruction == "2+2="
    completion = CompletionRequest.model_validate({"model": "m", "prompt": "2+2=", "metadata": {}, "store": True})
    assert completion.unsupported_field() is None
    assert ChatCompletionRequest.model_validate({**body, "top_logprobs": 3}).unsupported_field()[0] == "top_logprobs"
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({**body, "tool_choice": "required"})
