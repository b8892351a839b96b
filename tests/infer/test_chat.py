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


def run(engine, lines, sampling=None):
    out = io.StringIO()
    code = ChatSession(engine, sampling or SamplingParams(max_new_tokens=8), read_line=scripted(lines), out=out).run()
    return code, out.getvalue()


def test_messages_are_answered_like_generate_and_commands_change_settings(engine):
    code, text = run(engine, ["12+7=", "/condition cot", "12+7=", "/temperature 0.5", "/top-k 3", "/settings",
                              "/quit", "never read"])
    assert code == 0
    expected = {condition: engine.generate([GenerationRequest("12+7=", (condition,),
                                                              SamplingParams(max_new_tokens=8))])[0].text
                for condition in ("direct", "cot")}
    lines = text.split("\n")  # not splitlines: an untrained model's text may hold form feeds
    assert lines[1] in (expected["direct"], expected["direct"] + " [length limit]")
    assert lines[2] == "condition: cot"
    assert lines[3] in (expected["cot"], expected["cot"] + " [length limit]")
    assert "condition=cot temperature=0.5 top_p=1.0 top_k=3" in lines[-2]
    assert engine.free_slots() == 1


def test_bad_commands_and_values_keep_the_session_going(engine):
    code, text = run(engine, ["/condition nope", "/temperature hot", "/top-p 2", "/frobnicate", "/help"])
    assert code == 0
    assert "unknown condition tag 'nope'" in text
    assert "/temperature needs a value" in text
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
    expected = engine.generate([GenerationRequest("3+4=", sampling=SamplingParams(max_new_tokens=6))])[0].text
    assert text.split("\n")[-3] in (expected, expected + " [length limit]")


def test_stream_frees_the_slot_when_closed_early(engine):
    stream = stream_tokens(engine, engine.encode_prompt("12+7="), SamplingParams(max_new_tokens=5))
    assert isinstance(next(stream), int)
    assert engine.free_slots() == 0
    stream.close()
    assert engine.free_slots() == 1
