"""A multi-turn chat file, as users hold it (ShareGPT), trains a model whose `frugal serve`
answer to each chat prefix is the response it was trained on: the readers' rendering of a
conversation and the server's are the same function, so a model sees in training exactly what
it is served. The chats share user turns and differ only in their system prompt or history,
so a server that rendered the context differently (dropped the system prompt, the earlier
turns or their labels) would get answers wrong."""

import json

import openai

from frugal_lm.cli import main

CHATS = [
    [
        ("system", "You answer in one short line."),
        ("human", "Name a fruit."),
        ("gpt", "A ripe pear."),
        ("human", "And a colour?"),
        ("gpt", "Deep teal."),
    ],
    [("human", "Name a fruit."), ("gpt", "Two plums."), ("human", "And a colour?"), ("gpt", "Bright red.")],
    [("human", "Count to three."), ("gpt", "1 2 3"), ("human", "And a colour?"), ("gpt", "Pale gold.")],
]
ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def test_a_chat_file_trains_what_frugal_serve_answers_to_the_same_chat_prefix(tmp_path, monkeypatch, serving, capsys):
    monkeypatch.chdir(tmp_path)
    rows = [{"conversations": [{"from": who, "value": text} for who, text in chat]} for chat in CHATS]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    commands = [
        ["data", "tokenizer", "--vocab-size", "300", "--out", "tok", "chats.jsonl"],
        ["data", "tokenize", "--tokenizer", "tok", "--out", "tokenized", "chats.jsonl"],
        ["data", "mix", "--tokenized", "tokenized", "--out", "mix", "--epochs", "150", "--context", "128"],
        # fp32 and no EMA: the raw weights that memorised the six turns are the ones served.
        ["train", "--config", "demo", "data=mix", "out=run", "steps=150", "batch_tokens=512", "warmup_steps=5"]
        + ["lr=3e-3", "ema_decay=null", "precision=fp32"],
    ]
    for command in commands:
        assert main(command) == 0, command
    printed = capsys.readouterr()
    assert "sharegpt" in printed.out + printed.err  # detected, and named in the output

    with serving(tmp_path / "run") as url:
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        for chat in CHATS:
            for turn, (who, trained) in enumerate(chat):
                if who != "gpt":
                    continue
                messages = [{"role": ROLES[role], "content": text} for role, text in chat[:turn]]
                reply = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=24)
                assert reply.choices[0].message.content == trained, (messages, reply.choices[0].message.content)
