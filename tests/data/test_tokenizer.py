import json

import pytest

from frugal_lm.data.records import Record
from frugal_lm.data.synth import FAMILIES, generate
from frugal_lm.data.tokenizer import load_tokenizer, train_tokenizer
from frugal_lm.errors import FrugalError


def corpus():
    for problem in generate(list(FAMILIES), 300, seed=0, heldout=False):
        yield problem.instruction
        yield problem.response


def test_trained_tokenizer_lays_out_examples_and_round_trips(tmp_path):
    tokenizer = train_tokenizer(corpus(), vocab_size=400)
    assert tokenizer.vocab_size <= 400
    record = Record("What is 12 + 30?", "42", ("cot", "noisy"))
    ((instruction, response),) = tokenizer.encode_records([record])
    special, conditions = tokenizer.special_ids, tokenizer.condition_ids
    assert instruction[:3] == [special["boq"], conditions["cot"], conditions["noisy"]]
    assert instruction[-1] == special["eoq"] and response[-1] == special["eoa"]
    assert tokenizer.decode(instruction) == "What is 12 + 30?" and tokenizer.decode(response) == "42"
    tokenizer.save(tmp_path)
    reloaded = load_tokenizer(tmp_path)
    assert reloaded.encode_records([record]) == [(instruction, response)]
    info = json.loads((tmp_path / "tokenizer_info.json").read_text())
    assert (
        info["special_tokens"]["eoa"] == "<|box_end|>" and info["condition_tokens"]["direct"] == "<|object_ref_start|>"
    )


def test_existing_tokenizer_with_a_role_mapping(tmp_path):
    tokenizer = train_tokenizer(corpus(), vocab_size=400)
    tokenizer.tokenizer.save(str(tmp_path / "tokenizer.json"))  # no tokenizer_info.json: from elsewhere
    mapped = load_tokenizer(
        tmp_path,
        special_tokens={"boq": "<|im_start|>", "eoq": "<|im_end|>", "eoa": "<|im_end|>", "pad": "<|endoftext|>"},
    )
    assert mapped.special_ids["eoa"] == mapped.special_ids["eoq"]
    with pytest.raises(FrugalError, match="special token '<missing>' \\(role eoa\\) is not in the vocabulary"):
        load_tokenizer(tmp_path, special_tokens={"boq": "<|im_start|>", "eoq": "<|im_end|>", "eoa": "<missing>"})


def test_bad_sizes_and_files(tmp_path):
    with pytest.raises(FrugalError, match="too small"):
        train_tokenizer(iter(["a"]), vocab_size=100)
    with pytest.raises(FrugalError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{nope")
    with pytest.raises(FrugalError, match="not a valid tokenizers file"):
        load_tokenizer(tmp_path)


def test_cli_trains_from_record_files(tmp_path, capsys):
    from frugal_lm.cli import main
    from frugal_lm.data.synth import write_synthetic

    paths = write_synthetic(tmp_path / "synth", ["addition", "reversal"], 200, 10, seed=0)
    with open(paths["train"], "a") as handle:
        handle.write("{broken\n")
        handle.write('{"instruction": "\\udfff", "response": "ok"}\n')  # a lone surrogate: no tokenizer takes it
    assert main(["data", "tokenizer", "--vocab-size", "320", "--out", str(tmp_path / "tok"), str(paths["train"])]) == 0
    assert "2 bad rows ignored" in capsys.readouterr().out
    assert load_tokenizer(tmp_path / "tok").vocab_size <= 320


def test_tokenizers_that_give_the_same_ids_count_as_the_same(tmp_path):
    from frugal_lm.data.tokenizer import encodes_alike

    train_tokenizer(corpus(), vocab_size=300).save(tmp_path / "a")
    original = json.loads((tmp_path / "a" / "tokenizer.json").read_text())
    (tmp_path / "b").mkdir()
    exported = {
        **original,
        "post_processor": {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}},
    }  # what an export adds
    (tmp_path / "b" / "tokenizer.json").write_text(json.dumps(exported))
    assert encodes_alike(tmp_path / "a" / "tokenizer.json", tmp_path / "b" / "tokenizer.json")
    vocab = dict(original["model"]["vocab"])
    first = next(iter(vocab))
    vocab[first + "x"] = vocab.pop(first)
    (tmp_path / "b" / "tokenizer.json").write_text(
        json.dumps({**original, "model": {**original["model"], "vocab": vocab}})
    )
    assert not encodes_alike(tmp_path / "a" / "tokenizer.json", tmp_path / "b" / "tokenizer.json")
