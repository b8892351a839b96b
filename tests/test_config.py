import pytest
from pydantic import ValidationError

from frugal_lm.config import ModelConfig, load_model_config, parse_overrides, resolve_run_config
from frugal_lm.errors import FrugalError


def test_layers_resolve_in_order(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("preset: B\nlr: 0.001\nmodel:\n  vocab_size: 1000\n")
    config = resolve_run_config(recipe, ["lr=3e-4", "model.hidden_size=256", "net=transformer", "resume=true"])
    assert config.preset == "B" and config.net == "transformer" and config.model.net == "transformer"
    assert config.lr == 3e-4 and config.resume is True
    assert (config.model.hidden_size, config.model.n_layers, config.model.vocab_size) == (256, 12, 1000)


def test_model_keys_given_are_the_users_not_the_presets(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("net: transformer\nmodel:\n  h_cycles: 1\n")
    config = resolve_run_config(recipe, ["model.l_cycles=3", "lr=1e-3"])
    assert config.model_keys_given == {"h_cycles", "l_cycles", "net"}
    assert config.model_copy(update={"steps": 5}).model_keys_given == config.model_keys_given
    assert resolve_run_config(None, ["lr=1e-3"]).model_keys_given == frozenset()


def test_a_preset_names_its_net_and_an_explicit_net_wins():
    config = resolve_run_config(None, ["preset=grok1"])
    assert config.model.net == "transformer" and config.model.moe.experts == 8
    assert "net" not in config.model_keys_given
    hrm = resolve_run_config(None, ["preset=grok1", "net=hrm"])
    assert hrm.model.net == "hrm" and hrm.model.stack_passes == 8 and hrm.model.n_kv_heads == 8
    assert load_model_config("grok1").net == "transformer" and load_model_config("XL").net == "hrm"
    assert load_model_config("grok1", "universal").net == "universal"


def test_nested_overrides_merge_into_the_presets_section():
    config = resolve_run_config(None, ["preset=grok1", "model.moe.top_k=1"])
    assert (config.model.moe.experts, config.model.moe.top_k, config.model.moe.intermediate_size) == (8, 1, 32768)
    assert load_model_config("grok1", moe={"top_k": 1}).moe.experts == 8


def test_derived_sizes():
    config = load_model_config("XL")
    assert (config.head_dim, config.layers_per_stack, config.stack_passes) == (128, 16, 8)
    assert config.intermediate_size == 4096  # round_up(round(4 * 1536 * 2/3), 256)
    assert load_model_config("tiny").intermediate_size == 512
    assert load_model_config("B", "transformer").stack_passes == 1
    assert load_model_config("B", "universal").stack_passes == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.hiden_size=3"], "unknown key 'model.hiden_size'; allowed: attention_backend"),
        (["lrate=1"], "unknown key 'lrate'; allowed: activation_checkpointing, batch_tokens"),
        (["lr=fast"], "bad value for 'lr' \\('fast'\\)"),
        (
            ["model.attention_backend=xformers"],
            "bad value for 'model.attention_backend'.*'auto', 'sdpa', 'flex' or 'fa3'",
        ),
        (["preset=XS"], "unknown preset 'XS'; allowed: B, L, XL, XXL, grok1, grok1-1t, tiny"),
        (["net=rnn"], "unknown net 'rnn'; allowed: hrm, transformer, universal"),
        (["model.n_heads=3"], "invalid model: hidden_size \\(128\\) must be a multiple of n_heads \\(3\\)"),
        (["model.n_layers=3"], "n_layers must be even"),
        (["lr"], "not of the form key=value"),
    ],
)
def test_bad_keys_and_values_are_named(overrides, message):
    with pytest.raises(FrugalError, match=message):
        resolve_run_config(None, overrides)


def test_bad_recipe_files(tmp_path):
    with pytest.raises(FrugalError, match="missing.yaml: no such file, nor a packaged recipe"):
        resolve_run_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: 1\nmodel: [\n")
    with pytest.raises(FrugalError, match="broken.yaml:3: not valid YAML"):
        resolve_run_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- lr\n")
    with pytest.raises(FrugalError, match="mapping"):
        resolve_run_config(listing)


def test_parse_overrides_nests_and_types_values():
    assert parse_overrides(["a=1", "b.c=true", "b.d=x", "e=[1, 2]"]) == {
        "a": 1,
        "b": {"c": True, "d": "x"},
        "e": [1, 2],
    }


def test_config_is_validated_on_assignment():
    config = load_model_config("tiny")
    with pytest.raises(ValidationError):
        config.attention_backend = "nope"
    assert isinstance(config, ModelConfig)


def test_packaged_recipes_resolve_by_name():
    sft = resolve_run_config("sft", ["init_from=runs/base"])
    assert (sft.lr, sft.ema_decay, sft.model.bp_warmup_fraction) == (3e-5, 0.999, 0.0)
    pretrain = resolve_run_config("pretrain")
    assert pretrain.preset == "XL" and pretrain.model.hidden_size == 1536


@pytest.mark.parametrize(
    "override, named",
    [
        ("steps=0", "steps must be >= 1"),
        ("epochs=0", "epochs must be >= 1"),
        ("betas=[2,3]", "betas must each be in [0, 1)"),
        ("ema_decay=5", "ema_decay must be in [0, 1)"),
        ("weight_decay=-5", "weight_decay must be >= 0"),
        ("grad_clip=-1", "grad_clip must be > 0"),
        ("model.expansion=0", "expansion must be a finite number > 0"),
        ("model.norm_eps=-1", "norm_eps must be a finite number > 0"),
        ("model.max_seq_len=1000000000", "max_seq_len must be <= 1,048,576"),
        ("lr=.nan", "need lr > 0"),
    ],
)
def test_training_settings_out_of_range_are_one_line_errors(override, named, capsys):
    from frugal_lm.cli import main

    assert main(["config", override]) == 2
    error = capsys.readouterr().err
    assert named in error and len(error.strip().splitlines()) == 1 and "Traceback" not in error


def test_the_command_lines_run_length_replaces_the_recipes():
    assert resolve_run_config("sft", ["steps=5"]).steps == 5
    assert resolve_run_config("sft", ["steps=5"]).epochs is None


def test_an_unknown_recipe_lists_the_packaged_ones():
    with pytest.raises(FrugalError, match=r"--config nope: no such file, nor a packaged recipe \(recipes: demo, "):
        resolve_run_config("nope", [])


def test_one_logger_needs_no_list():
    assert resolve_run_config(None, ["loggers=tensorboard"]).loggers == ["tensorboard"]


def test_config_counts_parameters_on_the_datas_vocabulary(tmp_path, write_mixed_set, capsys):
    from frugal_lm.cli import main

    data = write_mixed_set(tmp_path / "mix")  # vocab 1280
    assert main(["config", "preset=tiny", f"data={data}"]) == 0
    assert "vocab_size: 1280" in capsys.readouterr().out


def test_train_help_lists_every_packaged_recipe(capsys):
    from frugal_lm.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "demo, demo-depth, pretrain, sft" in " ".join(capsys.readouterr().out.split())
