"""`frugal import hf`: a transformers HrmTextForCausalLM becomes one of our models, bit for bit."""

import json

import pytest
import torch
from safetensors.torch import load_file

from frugal_lm.cli import main
from frugal_lm.errors import FrugalError
from frugal_lm.infer.loading import load_model
from frugal_lm.interop import export_hf, import_hf

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_random(tiny_run, tmp_path_factory, ref):
    """A random HrmTextForCausalLM (non-default cycles, RoPE theta, eps, embedding scale) saved
    with save_pretrained, once whole and once in many small shards."""
    root = tmp_path_factory.mktemp("hf_random")
    model = ref.make_hf_model(root / "single", ref.tokenizer_dir(tiny_run))
    ref.make_hf_model(root / "sharded", ref.tokenizer_dir(tiny_run), max_shard_size="20KB")
    return model, root / "single", root / "sharded"


def test_imported_random_model_gives_transformers_logits(hf_random, tmp_path, ref):
    model, single, _ = hf_random
    assert main(["import", "hf", "--hf-dir", str(single), "--out", str(tmp_path / "ours")]) == 0
    ours = load_model(tmp_path / "ours")
    config = ours.config
    assert (config.h_cycles, config.l_cycles, config.rope_theta, config.norm_eps) == (2, 2, 5e4, 1e-5)
    assert ours.model.embedding_scale == model.config.embedding_scale == 20.0
    examples = ref.encoded_examples(ours.tokenizer)
    with torch.no_grad():
        hf_logits = model(**ref.hf_inputs(examples, ours.tokenizer.special_ids["pad"])).logits
    assert ref.max_logit_difference(ref.our_logits(ours.model, examples), hf_logits, examples) <= 1e-4


def test_sharded_import_equals_single_file_import(hf_random, tmp_path):
    _, single, sharded = hf_random
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 3
    import_hf(single, tmp_path / "a")
    import_hf(sharded, tmp_path / "b")
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_import_writes_only_a_new_or_empty_out_and_never_deletes_a_users_partial_folder(hf_random, tmp_path, capsys):
    _, single, _ = hf_random
    import_hf(single, tmp_path / "ours")
    assert main(["import", "hf", "--hf-dir", str(single), "--out", str(tmp_path / "ours")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "ours: already exists and is not empty" in error
    mine = tmp_path / "new.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FrugalError, match="new.partial exists and was not left by `frugal import hf`"):
        import_hf(single, tmp_path / "new")
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_export_of_import_reproduces_the_tensors_bitwise(hf_random, tmp_path):
    _, single, _ = hf_random
    import_hf(single, tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "back")
    original, back = load_file(single / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert original.keys() == back.keys()
    for name, tensor in original.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name
    before, after = (transformers.AutoConfig.from_pretrained(d) for d in (single, tmp_path / "back"))
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_layers_per_stack",
        "num_attention_heads",
        "head_dim",
        "H_cycles",
        "L_cycles",
        "rms_norm_eps",
        "embedding_scale",
        "rope_parameters",
        "prefix_lm",
        "tie_word_embeddings",
    ):
        assert getattr(after, key) == getattr(before, key), key


def test_fine_tuning_an_imported_model_lowers_the_loss_and_re_exports(hf_random, tiny_run, tmp_path):
    from frugal_lm.config import resolve_run_config
    from frugal_lm.data.mix import mix
    from frugal_lm.data.tokenize import tokenize_sources
    from frugal_lm.train.trainer import train

    _, single, _ = hf_random
    import_hf(single, tmp_path / "imported")
    # A small SFT set, tokenized with the imported model's own tokenizer (as a user would).
    tokenize_sources(
        tmp_path / "imported" / "tokenizer", tmp_path / "tokenized", [tiny_run.parent / "synth" / "train.jsonl"]
    )
    mix(tmp_path / "tokenized", tmp_path / "mix", None, 1, 64, 0)
    # No model.* keys: the architecture (cycles, theta, eps, vocab) comes from the imported config.yaml.
    result = train(
        resolve_run_config(
            None,
            [
                f"data={tmp_path / 'mix'}",
                f"out={tmp_path / 'run'}",
                f"init_from={tmp_path / 'imported'}",
                "steps=12",
                "lr=3e-3",
                "warmup_steps=0",
                "batch_tokens=256",
                "precision=fp32",
            ],
        )
    )
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1, losses
    tuned = load_model(tmp_path / "run", prefer_ema=False)
    assert (tuned.config.h_cycles, tuned.config.l_cycles, tuned.config.rope_theta) == (2, 2, 5e4)
    assert main(["export", "hf", "--model", str(tmp_path / "run"), "--out", str(tmp_path / "re"), "--no-ema"]) == 0
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "re", dtype=torch.float32)
    assert torch.equal(reloaded.lm_head.weight, tuned.model.lm_head.weight)


def test_data_from_another_tokenizer_is_refused_when_fine_tuning(hf_random, tiny_run, tmp_path):
    from frugal_lm.config import resolve_run_config
    from frugal_lm.train.trainer import train

    _, single, _ = hf_random
    import_hf(single, tmp_path / "imported")
    tokenizer = tmp_path / "imported" / "tokenizer" / "tokenizer.json"
    content = json.loads(tokenizer.read_text())
    vocab = content["model"]["vocab"]
    vocab["another token"] = vocab.pop(next(iter(vocab)))  # another mapping of text to ids than the data's
    tokenizer.write_text(json.dumps(content))
    with pytest.raises(FrugalError, match="the data's tokenizer .* differs from init_from's"):
        train(
            resolve_run_config(
                None,
                [
                    f"data={tiny_run.parent / 'mix'}",
                    f"out={tmp_path / 'run'}",
                    f"init_from={tmp_path / 'imported'}",
                    "steps=1",
                ],
            )
        )
    with pytest.raises(FrugalError, match="is a transformers model directory; convert it with"):
        train(
            resolve_run_config(
                None, [f"data={tiny_run.parent / 'mix'}", f"out={tmp_path / 'run'}", f"init_from={single}", "steps=1"]
            )
        )


def test_special_token_mapping_file_for_other_strings(hf_random, tmp_path):
    _, single, _ = hf_random
    mapping = tmp_path / "roles.yaml"
    # Swap two roles: the mapping, not the defaults, decides.
    mapping.write_text(
        "special_tokens: {boq: '<|im_end|>', eoq: '<|im_start|>'}\ncondition_tokens: {direct: '<|quad_end|>'}\n"
    )
    assert (
        main(
            ["import", "hf", "--hf-dir", str(single), "--out", str(tmp_path / "ours"), "--special-tokens", str(mapping)]
        )
        == 0
    )
    tokenizer = load_model(tmp_path / "ours").tokenizer
    vocab = tokenizer.tokenizer.get_vocab()
    assert tokenizer.special_ids["boq"] == vocab["<|im_end|>"] and tokenizer.special_ids["eoq"] == vocab["<|im_start|>"]
    assert tokenizer.condition_ids == {"direct": vocab["<|quad_end|>"]}
    mapping.write_text("special_tokens: {eoa: '<not in vocab>'}\n")
    with pytest.raises(FrugalError, match="special token '<not in vocab>' \\(role eoa\\) is not in the vocabulary"):
        import_hf(single, tmp_path / "bad", mapping)
    mapping.write_text("special_tokens: {bos: '<|im_start|>'}\n")
    with pytest.raises(FrugalError, match="unknown role 'bos'"):
        import_hf(single, tmp_path / "bad", mapping)


def test_model_keys_given_with_init_from_still_win(hf_random, tiny_run, tmp_path):
    """init_from takes the imported architecture, except model.* keys the user set (here one more L cycle,
    which fits the same weights)."""
    from frugal_lm.config import resolve_run_config
    from frugal_lm.train.trainer import train
    from frugal_lm.train.weights import read_model_config

    _, single, _ = hf_random
    import_hf(single, tmp_path / "imported")
    result = train(
        resolve_run_config(
            None,
            [
                f"data={tiny_run.parent / 'mix'}",
                f"out={tmp_path / 'run'}",
                f"init_from={tmp_path / 'imported'}",
                "steps=1",
                "batch_tokens=256",
                "model.l_cycles=4",
                "precision=fp32",
            ],
        )
    )
    config = read_model_config(result.checkpoint)
    assert (config.l_cycles, config.h_cycles, config.rope_theta, config.hidden_size) == (4, 2, 5e4, 32)


def _transformers_tokenizer(tiny_run, directory, **declared):
    """A tokenizer saved by transformers (tokenizer.json + tokenizer_config.json declaring `declared`)
    whose vocabulary has its own bos/eos/pad strings and none of HRM-Text's for those roles."""
    from frugal_lm.data.tokenizer import train_tokenizer

    rows = [json.loads(line) for line in (tiny_run.parent / "synth" / "train.jsonl").read_text().splitlines()]
    ours = train_tokenizer(
        (text for row in rows for text in (row["instruction"], row["response"])),
        vocab_size=300,
        special_tokens={"boq": "<s>", "eoq": "<|im_end|>", "eoa": "</s>", "pad": "<pad>"},
    )
    transformers.PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, **declared).save_pretrained(directory)
    return ours


def test_import_reads_the_special_tokens_the_model_declares(tiny_run, tmp_path, ref, capsys):
    """bos/eos/pad declared by a directory transformers wrote become BOQ/EOA/PAD; EOQ and the
    conditions (which transformers cannot name) keep the HRM-Text defaults."""
    declared = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    ours = _transformers_tokenizer(tiny_run, tmp_path / "tok", **declared)
    model_dir = tmp_path / "model"
    ref.make_hf_model(
        model_dir,
        tmp_path / "tok",
        bos_token_id=ours.special_ids["boq"],
        eos_token_id=ours.special_ids["eoa"],
        pad_token_id=ours.special_ids["pad"],
    )
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (tmp_path / "tok" / name).is_file():
            (model_dir / name).write_bytes((tmp_path / "tok" / name).read_bytes())
    assert main(["import", "hf", "--hf-dir", str(model_dir), "--out", str(tmp_path / "imported")]) == 0
    imported = load_model(tmp_path / "imported").tokenizer
    assert imported.special_ids == ours.special_ids
    assert imported.condition_ids == ours.condition_ids
    # Declared only as ids in config.json (the tokenizer files name no pad): the id is looked up.
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (model_dir / "special_tokens_map.json").unlink(missing_ok=True)
    import_hf(model_dir, tmp_path / "from_ids")
    assert load_model(tmp_path / "from_ids").tokenizer.special_ids["pad"] == ours.special_ids["pad"]


def test_import_refuses_declared_roles_that_share_a_token(tiny_run, tmp_path, ref, capsys):
    """A GPT-2-style declaration (one token for bos and eos) would make BOQ and EOA the same token."""
    ours = _transformers_tokenizer(tiny_run, tmp_path / "tok", bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    ref.make_hf_model(tmp_path / "model", tmp_path / "tok")
    (tmp_path / "model" / "tokenizer_config.json").write_bytes(
        (tmp_path / "tok" / "tokenizer_config.json").read_bytes()
    )
    assert ours.special_ids["eoa"] != ours.special_ids["boq"]
    capsys.readouterr()
    assert main(["import", "hf", "--hf-dir", str(tmp_path / "model"), "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert (
        "roles boq (declared in tokenizer_config.json bos_token) and eoa (declared in tokenizer_config.json "
        "eos_token) are both '</s>'"
    ) in error and "--special-tokens FILE" in error
