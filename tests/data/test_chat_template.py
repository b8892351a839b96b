from frugal_lm.data.chat_template import render_chat


def test_render_chat_rules():
    assert render_chat([("user", "2+2=")]) == "2+2="
    assert render_chat([("system", "Be brief."), ("user", "2+2=")]) == "Be brief.\n\n2+2="
    chat = [("system", "S"), ("user", "a"), ("assistant", "b"), ("developer", "D"), ("user", "c")]
    assert render_chat(chat) == "S\n\nD\n\nUser: a\n\nAssistant: b\n\nUser: c"


def test_serving_renders_a_chat_with_the_same_function():
    from frugal_lm.infer.openai_schema import ChatMessage, chat_instruction

    chat = [("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")]
    assert chat_instruction([ChatMessage(role=r, content=t) for r, t in chat]) == render_chat(chat)


def test_a_system_message_after_the_question_keeps_the_question():
    assert render_chat([("user", "hi"), ("system", "be brief")]) == "be brief\n\nhi"
