import io

import pytest

from frugal_lm.infer.chat import ChatSession, stream_tokens
from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.loading import load_model


@pytest.fixture(scope="module")
def engine(tiny_run):
    return Engine(load_model(tiny_run), max_batch_size=1)


def scripted(lines):
    """A read_line that returns `lines` in order; an exception instance is raised instead."""
    remaining = list(lines)

    def read_line(prompt):
        if not remaining:
            raise EOFError
        line = remaining.pop(0)
        if isinstance(line, BaseException):
            raise line
        return line

    return read_line


def shown(result):
    """How chat prints a finished answer: its text, and a note when a limit cut it."""
    return result.text + ("" if result.finish_reason == "stop" else " [length limit]")


def run(engine, lines, sampling=None):
    out = io.StringIO()
    code = ChatSession(engine, sampling or SamplingParams(max_new_tokens=8), read_line=scripted(lines), out=out).run()
    return code, out.getvalue()


def test_messages_are_answered_like_generate_and_commands_change_settings(engine):
    code, text = run(
        engine,
        [
            "12+7=",
            "/reset",
            "/condition cot",
            "12+7=",
            "/temperature 0.5",
            "/top-k 3",
            "/settings",
            "/quit",
            "never read",
        ],
    )
    assert code == 0
    expected = {
        condition: shown(
            engine.generate([GenerationRequest("12+7=", (condition,), SamplingParams(max_new_tokens=8))])[0]
        )
        for condition in ("direct", "cot")
    }
    lines = text.split("\n")  # not splitlines: an untrained model's text may hold form feeds
    assert lines[1] == expected["direct"]
    assert lines[2] == "conversation reset"
    assert lines[3] == "condition: cot"
    assert lines[4] == expected["cot"]
    assert "condition=cot temperature=0.5 top_p=1.0 top_k=3" in lines[-2]
    assert engine.free_slots() == 1


def test_bad_commands_and_values_keep_the_session_going(engine):
    code, text = run(engine, ["/condition nope", "/temperature hot", "/top-p 2", "/frobnicate", "/help"])
    assert code == 0
    assert "unknown condition tag 'nope'" in text
    assert "/temperature 'hot' is not a number, e.g. /temperature 0.7" in text
    assert "top_p must be in (0, 1]" in text
    assert "unknown command /frobnicate" in text
    assert "/max-new-tokens N" in text  # the help text


def test_ctrl_c_at_the_prompt_exits_cleanly(engine):
    code, text = run(engine, ["/settings", KeyboardInterrupt(), "/settings"])
    assert code == 0 and text.count("condition=") == 1


def test_ctrl_c_during_an_answer_cancels_it_and_frees_the_slot(engine, monkeypatch):
    real_step, calls = engine.step, []

    def interrupted_step():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_step()

    monkeypatch.setattr(engine, "step", interrupted_step)
    code, text = run(engine, ["12+7=", "3+4="], SamplingParams(max_new_tokens=6))
    monkeypatch.undo()
    assert code == 0 and "[cancelled]" in text
    assert engine.free_slots() == 1
    # The next message was answered normally after the cancelled one.
    expected = engine.generate([GenerationRequest("3+4=", sampling=SamplingParams(max_new_tokens=6))])[0]
    assert text.split("\n")[-3] == shown(expected)


def test_stream_frees_the_slot_when_closed_early(engine):
    stream = stream_tokens(engine, engine.encode_prompt("12+7="), SamplingParams(max_new_tokens=5))
    assert isinstance(next(stream), int)
    assert engine.free_slots() == 0
    stream.close()
    assert engine.free_slots() == 1


def test_later_messages_carry_the_conversation_folded_as_the_server_folds_it(engine):
    from frugal_lm.infer.openai_schema import ChatMessage, chat_instruction

    out = io.StringIO()
    session = ChatSession(
        engine,
        SamplingParams(max_new_tokens=6),
        read_line=scripted(["12+7=", "and 3+4="]),
        out=out,
        model="tiny (ema.safetensors)",
    )
    assert session.run() == 0
    first, second = (turn[1] for turn in session.turns)
    folded = chat_instruction(
        [
            ChatMessage(role="user", content="12+7="),
            ChatMessage(role="assistant", content=first),
            ChatMessage(role="user", content="and 3+4="),
        ]
    )
    assert folded == f"User: 12+7=\n\nAssistant: {first}\n\nUser: and 3+4="
    assert second == engine.generate([GenerationRequest(folded, ("direct",), SamplingParams(max_new_tokens=6))])[0].text
    assert out.getvalue().startswith("frugal chat with tiny (ema.safetensors): type a message")


def test_a_conversation_longer_than_the_context_leaves_out_the_oldest_turns(engine):
    session = ChatSession(engine, SamplingParams(max_new_tokens=2), out=io.StringIO())
    session.turns = [("x" * 400, "y")] * 3 + [("recent", "answer")]  # each old turn alone overflows 64 tokens
    prompt = engine.encode_prompt(session.instruction("now?", session.turns[-1:]), ("direct",))
    assert session.prompt_ids("now?") == prompt


def test_whole_number_settings_say_so(engine):
    code, text = run(engine, ["/top-k 2.5", "/seed x", "/max-new-tokens"])
    assert "/top-k '2.5' is not a whole number" in text and "/seed 'x' is not a whole number" in text
    assert "/max-new-tokens needs a value" in text
