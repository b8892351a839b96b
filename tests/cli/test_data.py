"""`frugal data` commands' messages."""

import json

from frugal_lm.cli import main


def test_a_tokenizer_smaller_than_asked_for_says_the_data_saturated_it(tmp_path, capsys):
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"instruction": f"add {i} and {i}", "response": str(2 * i)}) + "\n" for i in range(20))
    )
    assert main(["data", "tokenizer", "--vocab-size", "32768", "--out", str(tmp_path / "tok"), str(records)]) == 0
    out = capsys.readouterr().out
    assert "-token byte-level BPE" in out
    assert "(asked for 32,768: every word in the data is already a single token, so nothing is left to merge" in out


def _chat(*texts):
    roles = ["human", "gpt"] * len(texts)
    return {"conversations": [{"from": role, "value": text} for role, text in zip(roles, texts)]}


def test_validate_names_each_files_format_and_counts(tmp_path, capsys):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": f"say {i}", "input": "", "output": str(i)} for i in range(5)]))
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps(_chat("a", "b", "c", "d")) + "\n" + json.dumps(_chat("a", "b", "c")) + "\n")
    assert main(["data", "validate", str(alpaca)]) == 0
    assert capsys.readouterr().err == f"{alpaca}: format alpaca, 5 good rows, 0 bad rows\n"
    assert main(["data", "validate", "--turns", "last", str(alpaca), str(chats)]) == 1
    captured = capsys.readouterr()
    assert (
        captured.out == f"{chats}:2: conversation does not end with an assistant turn (its last message is from user)\n"
    )
    assert captured.err.splitlines() == [
        f"{alpaca}: format alpaca, 5 good rows, 0 bad rows",
        f"{chats}: format sharegpt, 1 good rows, 1 bad rows, 1 turns skipped (turns 1)",
        "all files: 6 good rows, 1 bad rows, 1 turns skipped (turns 1)",
    ]


def test_a_bad_map_is_one_line(tmp_path, capsys):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"q": "a", "a": "b"}) + "\n")
    assert main(["data", "validate", "--map", "instruction:q", str(path)]) == 2
    assert capsys.readouterr().err == (
        "frugal data: error: --map instruction:q: 'instruction:q' is not KEY=FIELD (e.g. instruction=question)\n"
    )
    assert main(["data", "validate", "--map", "instruction=q,response=a", str(path)]) == 0


def test_tokenize_reads_any_format_and_records_how(tmp_path, capsys):
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(_chat(f"q{i}", f"a{i}", f"r{i}", f"s{i}")) + "\n" for i in range(4)))
    tok, out = tmp_path / "tok", tmp_path / "out"
    assert main(["data", "tokenizer", "--vocab-size", "300", "--out", str(tok), str(chats)]) == 0
    assert f"from {chats} (sharegpt)" in capsys.readouterr().out
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), str(chats)]) == 0
    assert "tokenized, format sharegpt, 8 rows" in capsys.readouterr().out
    [folder] = [p for p in out.iterdir() if p.name.startswith("chats-")]
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["source_format"], meta["rows"], meta["skipped"]) == ("sharegpt", 8, {})
    assert meta["reader"]["turns"] == "all"
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), str(chats)]) == 0
    assert ": unchanged, format sharegpt" in capsys.readouterr().out
    # Other reader options are another reading of the source: it is tokenized again.
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), "--turns", "first", str(chats)]) == 0
    assert "tokenized, format sharegpt, 4 rows" in capsys.readouterr().out
    assert json.loads((folder / "meta.json").read_text())["skipped"] == {"turns": 4}


def test_tokenize_stops_at_or_quarantines_an_unanswered_conversation(tmp_path, capsys):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps(_chat("q", "a")) + "\n" + json.dumps(_chat("q", "a", "r")) + "\n")
    tok, out = tmp_path / "tok", tmp_path / "out"
    assert main(["data", "tokenizer", "--vocab-size", "300", "--out", str(tok), str(chats)]) == 0
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), str(chats)]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"frugal data: error: {chats}:2: conversation does not end with an assistant turn (its last message is "
        "from user) (use --on-error skip to quarantine bad rows)"
    )
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), "--on-error", "skip", str(chats)]) == 0
    [folder] = [p for p in out.iterdir() if p.name.startswith("chats-")]
    [rejected] = map(json.loads, (folder / "rejected.jsonl").read_text().splitlines())
    assert rejected["where"] == f"{chats}:2" and rejected["row"] == _chat("q", "a", "r")


def test_a_tokenized_chat_turn_is_what_serve_encodes_for_its_prefix(tmp_path):
    """Training and serving render a chat the same way, down to the token ids: the instruction
    tokens `frugal data tokenize` stores for each assistant turn are the prompt tokens the server
    builds for a chat request holding the conversation before that turn."""
    from types import SimpleNamespace

    import numpy as np

    from frugal_lm.data.tokenizer import load_tokenizer
    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.openai_schema import ChatCompletionRequest

    chat = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": [{"type": "text", "text": "And of "}, {"type": "text", "text": "grass?"}]},
        {"role": "assistant", "content": "Green."},
    ]
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": chat}) + "\n")
    tok, out = tmp_path / "tok", tmp_path / "out"
    assert main(["data", "tokenizer", "--vocab-size", "300", "--out", str(tok), str(chats)]) == 0
    assert main(["data", "tokenize", "--tokenizer", str(tok), "--out", str(out), str(chats)]) == 0
    [folder] = [p for p in out.iterdir() if p.name.startswith("chats-")]
    tokens = np.load(folder / "tokens.npy")
    starts, lengths = np.load(folder / "inst_start.npy"), np.load(folder / "inst_len.npy")
    stored = [tokens[start : start + length].tolist() for start, length in zip(starts, lengths)]
    engine = SimpleNamespace(tokenizer=load_tokenizer(tok))  # encode_prompt needs only the tokenizer
    served = [
        Engine.encode_prompt(engine, ChatCompletionRequest(model="m", messages=chat[:end]).instruction, ("direct",))
        for end in (2, 4)
    ]
    assert stored == served
