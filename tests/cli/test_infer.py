import io
import json

import pytest
import torch

from frugal_lm.cli import main
from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.loading import load_model


@pytest.fixture(scope="module")
def engine(tiny_run):
    return Engine(load_model(tiny_run))


def expected(engine, prompt, condition=("direct",), max_new_tokens=6):
    return engine.generate([GenerationRequest(prompt, condition, SamplingParams(max_new_tokens=max_new_tokens))])[0]


def test_generate_prompts_print_jsonl(tiny_run, engine, capsys):
    code = main(
        [
            "generate",
            "--model",
            str(tiny_run),
            "--prompt",
            "12+7=",
            "--prompt",
            "3+4=",
            "--condition",
            "cot",
            "--max-new-tokens",
            "6",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["prompt"] for row in rows] == ["12+7=", "3+4="]
    for row in rows:
        result = expected(engine, row["prompt"], ("cot",))
        assert row == {
            "prompt": row["prompt"],
            "condition": "cot",
            "text": result.text,
            "finish_reason": result.finish_reason,
            "tokens": len(result.token_ids),
            "prompt_tokens": result.prompt_tokens,
        }


def test_generate_dtype_runs_the_model_in_that_precision(tiny_run, engine_constructions, capsys):
    for dtype in ("bf16", "int8", "auto"):
        assert (
            main(
                [
                    "generate",
                    "--model",
                    str(tiny_run),
                    "--prompt",
                    "12+7=",
                    "--max-new-tokens",
                    "3",
                    "--device",
                    "cpu",
                    "--dtype",
                    dtype,
                ]
            )
            == 0
        )
        assert json.loads(capsys.readouterr().out)["tokens"] >= 1
    assert [precision for precision, _ in engine_constructions] == ["bf16", "int8", "fp32"]  # auto: fp32 on a CPU


def test_generate_prompts_file_to_out(tiny_run, engine, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "12+7="}\n\n{"instruction": "abc", "condition": "cot,noisy"}\n')
    out = tmp_path / "out" / "gen.jsonl"
    args = [
        "generate",
        "--model",
        str(tiny_run),
        "--prompts-file",
        str(prompts),
        "--max-new-tokens",
        "6",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(row["prompt"], row["condition"]) for row in rows] == [("12+7=", "direct"), ("abc", "cot,noisy")]
    assert rows[1]["text"] == expected(engine, "abc", ("cot", "noisy")).text
    assert main(args) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": 3}', 'field "prompt"'),
        ("{oops", "not valid JSON"),
        ('{"prompt": "x", "condition": "cto"}', "unknown condition tag 'cto'"),
    ],
)
def test_generate_bad_prompts_file_names_the_line(tiny_run, tmp_path, capsys, line, message):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n' + line + "\n")
    code = main(["generate", "--model", str(tiny_run), "--prompts-file", str(prompts)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    if "condition" not in message:
        assert f"{prompts}:2:" in err


def test_generate_bad_values_are_one_line_errors(tiny_run, capsys):
    assert main(["generate", "--model", str(tiny_run), "--prompt", "x", "--top-p", "0"]) == 2
    assert "top_p must be in (0, 1]" in capsys.readouterr().err
    assert main(["generate", "--model", str(tiny_run / "nope"), "--prompt", "x"]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_chat_reads_stdin_until_quit(tiny_run, engine, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("12+7=\n/condition synth\n/settings\n/quit\n"))
    assert main(["chat", "--model", str(tiny_run), "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert expected(engine, "12+7=").text in out
    assert "condition=synth" in out


def test_chat_ends_cleanly_at_end_of_input(tiny_run, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("/help\n"))
    assert main(["chat", "--model", str(tiny_run)]) == 0
    assert "/quit" in capsys.readouterr().out


def test_generate_compile_flag_reaches_the_engine(tiny_run, engine_constructions, capsys):
    assert main(["generate", "--model", str(tiny_run), "--prompt", "1+1=", "--max-new-tokens", "2", "--compile"]) == 0
    assert main(["generate", "--model", str(tiny_run), "--prompt", "1+1=", "--max-new-tokens", "2"]) == 0
    assert [compiled for _, compiled in engine_constructions] == [True, False]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize(
    "command", [["generate", "--prompt", "1+1="], ["eval", "--tasks", "synthetic", "--data-dir", "."]]
)
def test_device_cuda_without_a_gpu_is_one_line_error(tiny_run, command, capsys):
    assert main([*command, "--model", str(tiny_run), "--device", "cuda"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no CUDA GPU" in error


@pytest.mark.parametrize("flags, weights", [([], "ema.safetensors"), (["--no-ema"], "model.safetensors")])
def test_no_ema_picks_the_raw_weights_for_every_inference_command(tiny_run, monkeypatch, capsys, flags, weights):
    import frugal_lm.infer.engine as engine_module

    loaded_from = []
    original = engine_module.Engine.__init__

    def recording_init(self, loaded, *args, **kwargs):
        loaded_from.append(loaded.weights_path.name)
        original(self, loaded, *args, **kwargs)

    monkeypatch.setattr(engine_module.Engine, "__init__", recording_init)
    assert main(["generate", "--model", str(tiny_run), "--prompt", "1+1=", "--max-new-tokens", "2", *flags]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    assert main(["chat", "--model", str(tiny_run), *flags]) == 0
    assert loaded_from == [weights, weights]


def test_eval_no_ema_scores_the_raw_weights(tiny_run, tmp_path):
    for flags, weights in (([], "ema.safetensors"), (["--no-ema"], "model.safetensors")):
        assert (
            main(
                [
                    "eval",
                    "--model",
                    str(tiny_run),
                    "--tasks",
                    "synthetic",
                    "--data-dir",
                    str(tiny_run.parent / "synth"),
                    "--limit",
                    "1",
                    "--out",
                    str(tmp_path / "eval"),
                    *flags,
                ]
            )
            == 0
        )
        assert json.loads((tmp_path / "eval" / "results.json").read_text())["config"]["weights"].endswith(weights)


def test_cuda_graphs_without_a_gpu_is_a_one_line_error(tiny_run, capsys):
    args = ["generate", "--model", str(tiny_run), "--prompt", "1+1=", "--device", "cpu", "--cuda-graphs"]
    assert main(args) != 0
    assert "CUDA graphs need a GPU" in capsys.readouterr().err


def test_bf16_on_a_cpu_without_bf16_instructions_is_noted(tiny_run, engine_constructions, capsys, monkeypatch):
    import frugal_lm.infer.loading as loading

    args = ["generate", "--model", str(tiny_run), "--prompt", "1+1=", "--max-new-tokens", "1", "--device", "cpu"]
    for native in (True, False):
        monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda native=native: native)
        assert main([*args, "--dtype", "int8"]) == 0
        noted = "this CPU has no instructions for" in capsys.readouterr().err
        assert noted == (not native)


def test_an_moe_checkpoint_generates_chats_and_evaluates(tiny_moe_run, tmp_path, monkeypatch, capsys):
    """A tiny HRM with experts, trained 2 steps: the KV-cache engine routes every decoded token
    as recomputing the whole sequence does, and generate, chat and eval run it."""
    from frugal_lm.model import AttentionLayout

    engine = Engine(load_model(tiny_moe_run))
    result = expected(engine, "12+7=", max_new_tokens=8)
    prompt_ids = engine.encode_prompt("12+7=")
    sequence = list(prompt_ids)
    with torch.no_grad():
        for token in result.token_ids:
            T, P = len(sequence), len(prompt_ids)
            layout = AttentionLayout.from_lengths([[(P, T - P)]], T)
            logits = engine.model(torch.tensor([sequence]), torch.arange(T)[None], layout)[0, -1]
            assert int(logits.argmax()) == token
            sequence.append(token)

    assert main(["generate", "--model", str(tiny_moe_run), "--prompt", "12+7=", "--max-new-tokens", "8"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == result.text
    monkeypatch.setattr("sys.stdin", io.StringIO("12+7=\n/quit\n"))
    assert main(["chat", "--model", str(tiny_moe_run), "--max-new-tokens", "8"]) == 0
    assert result.text in capsys.readouterr().out
    eval_args = ["--tasks", "synthetic", "--data-dir", str(tiny_moe_run.parent / "synth"), "--limit", "2"]
    assert main(["eval", "--model", str(tiny_moe_run), *eval_args, "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "results.json").is_file()
