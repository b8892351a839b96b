"""`frugal export hf`: our trained model, loaded by transformers, computes the same thing."""

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file

from frugal_lm.cli import main
from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError
from frugal_lm.files import read_output_marker
from frugal_lm.infer.loading import load_model
from frugal_lm.interop import export_hf
from frugal_lm.model import AttentionLayout
from frugal_lm.train.checkpoint import latest_checkpoint

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_model(exported):
    return transformers.AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval()


def test_transformers_gives_our_logits_on_a_padded_prefix_lm_batch(tiny_run, hf_model, ref):
    ours = load_model(tiny_run)  # EMA weights, as exported
    examples = ref.encoded_examples(ours.tokenizer)
    assert len({len(i) + len(r) for i, r in examples}) == len(examples)  # different lengths: padding matters
    with torch.no_grad():
        hf_logits = hf_model(**ref.hf_inputs(examples, ours.tokenizer.special_ids["pad"])).logits
    assert ref.max_logit_difference(ref.our_logits(ours.model, examples), hf_logits, examples) <= 1e-4
    # token_type_ids matter: without them transformers attends causally over the instruction.
    causal = ref.hf_inputs(examples, ours.tokenizer.special_ids["pad"])
    causal.pop("token_type_ids")
    with torch.no_grad():
        causal_logits = hf_model(**causal).logits
    assert ref.max_logit_difference(ref.our_logits(ours.model, examples), causal_logits, examples) > 1e-3


def _our_greedy(model, instruction, n_new):
    """Plain greedy decoding with our model's full forward pass each step (no cache): the reference."""
    sequence = list(instruction)
    for _ in range(n_new):
        ids = torch.tensor([sequence])
        layout = AttentionLayout.from_lengths([[(len(instruction), len(sequence) - len(instruction))]], len(sequence))
        with torch.no_grad():
            logits = model(ids, torch.arange(len(sequence))[None], layout)
        sequence.append(int(logits[0, -1].argmax()))
    return sequence[len(instruction) :]


def test_transformers_generate_matches_our_greedy_decoding(tiny_run, hf_model, ref):
    ours = load_model(tiny_run)
    prompts = [instruction for instruction, _ in ref.encoded_examples(ours.tokenizer)]
    inputs = ref.hf_inputs([(p, []) for p in prompts], ours.tokenizer.special_ids["pad"])
    inputs.pop("position_ids")  # generate derives them from the attention mask
    # Generate all 32 tokens even past an EOA, so every position is compared.
    with torch.no_grad():
        generated = hf_model.generate(
            **inputs, max_new_tokens=32, do_sample=False, eos_token_id=None, min_new_tokens=32
        )
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    assert new_tokens.shape == (3, 32)
    for row, prompt in enumerate(prompts):
        assert new_tokens[row].tolist() == _our_greedy(ours.model, prompt, 32), row


def test_export_files_config_and_generation_config(tiny_run, exported):
    ours = load_model(tiny_run)
    config = transformers.AutoConfig.from_pretrained(exported)
    assert config.model_type == "hrm_text" and config.prefix_lm and not config.tie_word_embeddings
    assert config.num_layers_per_stack == ours.config.layers_per_stack
    assert config.num_hidden_layers == ours.config.layers_per_stack * ours.config.stack_passes
    assert config.embedding_scale == ours.model.embedding_scale
    assert config.intermediate_size == ours.config.intermediate_size
    generation = transformers.GenerationConfig.from_pretrained(exported)
    assert generation.eos_token_id == ours.tokenizer.special_ids["eoa"]
    assert generation.pad_token_id == ours.tokenizer.special_ids["pad"]
    assert json.loads((exported / "frugal_export.json").read_text())["weights"] == "ema"
    ema = load_file(latest_checkpoint(tiny_run) / "ema.safetensors")
    exported_weights = load_file(exported / "model.safetensors")
    assert torch.equal(exported_weights["model.z_L_init"], ema["z_L_init"])
    assert torch.equal(exported_weights["lm_head.weight"], ema["lm_head.weight"])


def test_export_is_the_on_disk_layout_save_pretrained_writes(hf_model, exported, tmp_path):
    """Fused gqkv / gate_up projections, as in released hrm_text checkpoints: bitwise what
    transformers itself writes for the model it loaded from our export."""
    hf_model.save_pretrained(tmp_path / "resaved")
    ours, theirs = load_file(exported / "model.safetensors"), load_file(tmp_path / "resaved" / "model.safetensors")
    assert "model.L_module.layers.0.attn.gqkv_proj.weight" in ours
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_no_ema_exports_the_raw_weights_and_our_loader_reads_an_export(tiny_run, exported, tmp_path):
    assert main(["export", "hf", "--model", str(tiny_run), "--out", str(tmp_path / "raw"), "--no-ema"]) == 0
    raw = load_file(latest_checkpoint(tiny_run) / "model.safetensors")
    assert torch.equal(load_file(tmp_path / "raw" / "model.safetensors")["lm_head.weight"], raw["lm_head.weight"])
    # --model EXPORTED_DIR: our loader reads the transformers layout back to the same model.
    from_export, from_run = load_model(exported), load_model(tiny_run)
    assert from_export.tokenizer.special_ids == from_run.tokenizer.special_ids
    assert from_export.tokenizer.condition_ids == from_run.tokenizer.condition_ids
    for name, tensor in from_run.model.state_dict().items():
        assert torch.equal(from_export.model.state_dict()[name], tensor), name


def test_autotokenizer_encodes_our_ids_and_renders_our_prompt(tiny_run, exported, ref):
    ours = load_model(tiny_run).tokenizer
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    for text in ["12+34=46", "reverse hello world please", "  spaces\nand lines ", "<|im_end|> inside"]:
        plain = ours.tokenizer.encode(text, add_special_tokens=False).ids
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == plain
        # With special tokens (transformers' default), a text is an instruction under <direct>.
        assert hf_tokenizer(text)["input_ids"] == ours.encode_records([Record(text, "", ("direct",))])[0][0]
    assert hf_tokenizer.eos_token_id == ours.special_ids["eoa"]
    assert hf_tokenizer.pad_token_id == ours.special_ids["pad"]
    assert hf_tokenizer.bos_token_id == ours.special_ids["boq"]
    for record, (instruction, response) in zip(ref.records, ref.encoded_examples(ours)):
        messages = [{"role": "user", "content": record.instruction}]
        prompt = hf_tokenizer.apply_chat_template(messages, condition=record.conditions[0], tokenize=True)
        assert list(prompt["input_ids"]) == instruction
        full = hf_tokenizer.apply_chat_template(
            messages + [{"role": "assistant", "content": record.response}],
            condition=record.conditions[0],
            tokenize=True,
        )
        assert list(full["input_ids"]) == instruction + response
    assert hf_tokenizer.decode(ours.tokenizer.encode("12+34=46").ids) == "12+34=46"
    # A pair is the training layout: instruction typed 1, response + EOA typed 0.
    instruction, response = ours.encode_records([ref.records[0]])[0]
    pair = hf_tokenizer(ref.records[0].instruction, ref.records[0].response)
    assert pair["input_ids"] == instruction + response
    assert pair["token_type_ids"] == [1] * len(instruction) + [0] * len(response)
    several = Record("2+2=", "4", ("cot", "noisy"))
    prompt = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": several.instruction}], condition="cot,noisy", tokenize=True
    )
    assert list(prompt["input_ids"]) == ours.encode_records([several])[0][0]
    with pytest.raises(Exception, match="unknown condition chatty; known: direct, cot, noisy, synth"):
        hf_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], condition="chatty", tokenize=True)


def _fake_run_with(tiny_run, tmp_path, **model_updates):
    """A copy of the tiny run's checkpoint with config.yaml's model section changed."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(latest_checkpoint(tiny_run), checkpoint, ignore=shutil.ignore_patterns("train_state"))
    config = yaml.safe_load((checkpoint / "config.yaml").read_text())
    config["model"].update(model_updates)
    (checkpoint / "config.yaml").write_text(yaml.safe_dump(config))
    return checkpoint


def test_refuses_what_hrm_text_cannot_express(tiny_run, tmp_path, capsys):
    with pytest.raises(FrugalError, match="net=transformer: the transformers hrm_text format holds only HRM"):
        export_hf(_fake_run_with(tiny_run, tmp_path, net="transformer"), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    assert main(["export", "hf", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "no such model directory" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("n_kv_heads", 1), ("attention_gate", False)])
def test_export_refuses_attention_hrm_text_cannot_express_in_one_line(tiny_run, tmp_path, capsys, key, value):
    model_dir = _fake_run_with(tiny_run, tmp_path, **{key: value})
    assert main(["export", "hf", "--model", str(model_dir), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{key}=" in error and "hrm_text" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_export_refuses_a_mixture_of_experts_in_one_line(tiny_run, tmp_path, capsys):
    model_dir = _fake_run_with(tiny_run, tmp_path, moe={"experts": 4, "intermediate_size": 32})
    assert main(["export", "hf", "--model", str(model_dir), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "model.moe.experts=4" in error and "hrm_text" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_refuses_to_overwrite_and_to_export_an_export(tiny_run, exported, tmp_path):
    assert read_output_marker(exported)["command"] == "frugal export hf"
    with pytest.raises(FrugalError, match="already exists and is not empty; `frugal export hf` replaces nothing"):
        export_hf(tiny_run, exported)  # not even its own earlier export
    with pytest.raises(FrugalError, match="already a transformers model directory"):
        export_hf(exported, tmp_path / "again")


def test_a_users_folder_named_like_the_staging_folder_is_refused_not_deleted(tiny_run, tmp_path):
    mine = tmp_path / "hf.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(FrugalError, match="hf.partial exists and was not left by `frugal export hf`"):
        export_hf(tiny_run, tmp_path / "hf")
    assert (mine / "notes.txt").read_text() == "mine" and not (tmp_path / "hf").exists()


def test_our_engine_serving_the_export_stops_where_transformers_stops(exported, hf_model, ref):
    """--model EXPORTED_DIR serves like a run: the engine's greedy answers equal transformers'
    generate, which stops at EOA (generation_config's EOS) the same way."""
    from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams

    loaded = load_model(exported)
    engine = Engine(loaded, max_batch_size=3)
    requests = [
        GenerationRequest(record.instruction, record.conditions, SamplingParams(max_new_tokens=32))
        for record in ref.records
    ]
    results = engine.generate(requests)
    eoa = loaded.tokenizer.special_ids["eoa"]
    for request, result in zip(requests, results):
        prompt = engine.encode_prompt(request.prompt, request.conditions)
        with torch.no_grad():
            instruction = torch.ones(1, len(prompt), dtype=torch.long)
            output = hf_model.generate(
                torch.tensor([prompt]), token_type_ids=instruction, max_new_tokens=32, do_sample=False
            )
        generated = output[0, len(prompt) :].tolist()
        stopped = eoa in generated
        assert result.token_ids == (generated[: generated.index(eoa)] if stopped else generated)
        assert result.finish_reason == ("stop" if stopped else "length")


PROMPTS = ["12+34=", "reverse hello world please", "7"]


def _frugal_generate(model_dir, capsys, *prompts, condition="direct"):
    """(text, generated token count) per prompt, from the `frugal generate` command line (greedy)."""
    arguments = [argument for prompt in prompts for argument in ("--prompt", prompt)]
    assert (
        main(["generate", "--model", str(model_dir), "--max-new-tokens", "24", "--condition", condition, *arguments])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(row["text"], row["tokens"]) for row in rows]


def _answers(hf_tokenizer, inputs, output):
    """(text, token count) per row of a transformers `generate` output, cut at the first EOA."""
    answers = []
    for row in output[:, inputs["input_ids"].shape[1] :].tolist():
        if hf_tokenizer.eos_token_id in row:
            row = row[: row.index(hf_tokenizer.eos_token_id)]
        answers.append((hf_tokenizer.decode(row, skip_special_tokens=True), len(row)))
    return answers


def test_autotokenizer_and_generate_answer_exactly_as_frugal_generate(tiny_run, exported, hf_model, capsys):
    """The by-the-book transformers path, a padded batch: tok(prompts) marks each instruction with
    token_type_ids == 1 (PrefixLM), so generate's greedy answers are frugal generate's."""
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    inputs = hf_tokenizer(PROMPTS, padding=True, return_tensors="pt")
    assert inputs["token_type_ids"].tolist() == inputs["attention_mask"].tolist()  # every prompt token: instruction
    with torch.no_grad():
        output = hf_model.generate(**inputs, max_new_tokens=24)
    assert _answers(hf_tokenizer, inputs, output) == _frugal_generate(tiny_run, capsys, *PROMPTS)


def test_apply_chat_template_return_dict_answers_as_frugal_generate(exported, hf_model, capsys):
    """apply_chat_template(..., return_dict=True) feeds generate the instruction mask too, with a condition."""
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    for prompt in PROMPTS[:2]:
        inputs = hf_tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            condition="cot",
            add_generation_prompt=True,
            return_dict=True,
            return_tensors="pt",
        )
        assert inputs["token_type_ids"].bool().all()
        with torch.no_grad():
            output = hf_model.generate(**inputs, max_new_tokens=24)
        assert _answers(hf_tokenizer, inputs, output) == _frugal_generate(exported, capsys, prompt, condition="cot")


def test_text_generation_pipeline_answers_as_frugal_generate_given_the_type_ids(exported, capsys):
    """transformers' text-generation pipeline passes generate only input_ids and attention_mask
    (5.24), so the instruction's token_type_ids go in as a generate argument (README)."""
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    generator = transformers.pipeline("text-generation", model=str(exported), dtype=torch.float32)
    prompt = PROMPTS[0]
    types = hf_tokenizer(prompt, return_tensors="pt")["token_type_ids"]
    answer = generator(prompt, token_type_ids=types, max_new_tokens=24, return_full_text=False)
    assert answer[0]["generated_text"] == _frugal_generate(exported, capsys, prompt)[0][0]
