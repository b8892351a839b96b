import pytest

from frugal_lm.data.conversations import SKIP_CATEGORIES, conversation_turns, parse_conversation


def turns_of(row, style="messages", **options):
    messages = parse_conversation(row, style)
    assert not isinstance(messages, str), messages
    turns = conversation_turns(messages, **options)
    return turns if isinstance(turns, str) else list(turns)


def chat(*pairs, **extra):
    return {"messages": [{"role": role, "content": content, **extra} for role, content in pairs]}


def test_text_parts_are_joined_as_serving_joins_them():
    row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    row["messages"].append({"role": "assistant", "content": "c"})
    [turn] = turns_of(row)
    assert turn.fields == {"instruction": "ab", "response": "c"}


@pytest.mark.parametrize(
    "messages, category",
    [
        (
            [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function"}]},
            ],
            "tool",
        ),
        (
            [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "a cat"},
            ],
            "non-text",
        ),
        ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "hi"}], "no-prompt"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}], "weight"),
    ],
)
def test_turns_that_cannot_be_served_as_rendered_are_skipped_with_a_category(messages, category):
    [turn] = turns_of({"messages": messages})
    assert turn.skipped and turn.fields is None and turn.reason.split(":")[0] == category
    assert category in SKIP_CATEGORIES


def test_a_turn_after_a_tool_result_is_skipped_too():
    row = {
        "conversations": [
            {"from": "human", "value": "weather?"},
            {"from": "function_call", "value": '{"name": "weather"}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "It is sunny."},
        ]
    }
    turns = turns_of(row, "sharegpt")
    assert [t.reason for t in turns] == [
        "tool: the assistant turn calls a tool",
        "tool: the conversation before it holds a tool call or result",
    ]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"messages": "hi"}, "field 'messages' must be a non-empty list of messages, got str"),
        ({"messages": []}, "field 'messages' must be a non-empty list of messages, got list"),
        ({}, "missing field 'messages'"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages message 1: unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages message 1: user content must be text"),
    ],
)
def test_bad_conversations(row, reason):
    result = parse_conversation(row, "messages")
    assert isinstance(result, str) and result.startswith(reason)


def test_a_conversation_must_end_with_an_assistant_turn_unless_it_is_read_as_prompts():
    row = chat(("user", "a"), ("assistant", "b"), ("user", "c"))
    assert turns_of(row) == "conversation does not end with an assistant turn (its last message is from user)"
    first, last = turns_of(row, open_ended=True)
    assert first.fields["response"] == "b"
    assert last.number == 2 and last.fields == {"instruction": "User: a\n\nAssistant: b\n\nUser: c", "response": ""}
