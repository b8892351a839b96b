import json

import pytest

from frugal_lm.cli import main
from frugal_lm.data.answers import extract_number
from frugal_lm.data.synth import write_synthetic
from frugal_lm.errors import FrugalError
from frugal_lm.evals.runner import EvalRunner, EvalSettings, parse_conditions, parse_tasks
from frugal_lm.evals.synthetic import score_synthetic
from frugal_lm.infer.loading import load_model

from .test_loglikelihood import hand_logprob

CHOICE_TASKS = "arc_challenge,arc_easy,boolq,mmlu,hellaswag,winogrande"


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run)


def test_choice_tasks_through_the_cli(tiny_run, loaded, benchmark_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_run),
                "--tasks",
                CHOICE_TASKS,
                "--data-dir",
                str(benchmark_dir),
                "--out",
                str(out),
                "--batch-size",
                "3",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())["results"]
    assert list(results) == CHOICE_TASKS.split(",")
    assert results["hellaswag"]["metric"] == "acc_norm" and results["boolq"]["metric"] == "acc"
    for task in results:
        samples = [json.loads(line) for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]
        assert results[task]["n"] == len(samples) > 0
        for sample in samples:
            logprobs = sample["extra"]["logprobs"]
            chosen = max(range(len(logprobs)), key=logprobs.__getitem__)
            assert sample["correct"] == (chosen == sample["extra"]["gold_index"])
        acc = sum(s["extra"]["acc"] for s in samples) / len(samples)
        assert results[task]["metrics"]["acc"]["value"] == pytest.approx(acc)
    # one option's stored score against the hand-computed log-softmax of the full logits
    sample = json.loads((out / "samples_boolq.jsonl").read_text().splitlines()[0])
    from frugal_lm.data.records import Record

    instruction, response = loaded.tokenizer.encode_records([Record(sample["prompt"], "yes", ("direct",))])[0]
    assert sample["extra"]["logprobs"][1] == pytest.approx(
        hand_logprob(loaded.model, instruction, response)[0], abs=1e-4
    )
    table = (out / "results.md").read_text()
    assert "| hellaswag | acc_norm |" in table and table == capsys.readouterr().out


def test_few_shot_prompts_use_the_dev_split_of_the_same_subject(loaded, benchmark_dir):
    settings = EvalSettings(["mmlu"], benchmark_dir, shots=1)
    result = EvalRunner(loaded, settings, progress=False).run()[0]
    first = result.samples[0].prompt  # elementary_mathematics question, its dev shot is 3 + 3
    assert first.startswith("The following is a question about elementary mathematics.\nWhat is 3 + 3?\nAnswer: 6")
    assert first.endswith("What is 2 + 2?")


def test_generation_tasks_extract_and_score(loaded, benchmark_dir):
    settings = EvalSettings(["gsm8k", "drop", "math"], benchmark_dir, limit=2, max_new_tokens=6, batch_size=2)
    results = {r.task: r for r in EvalRunner(loaded, settings, progress=False).run()}
    from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams

    engine = Engine(loaded, max_batch_size=1)
    for result in results.values():
        assert len(result.samples) == 2
        direct = engine.generate(
            [GenerationRequest(s.prompt, ("direct",), SamplingParams(max_new_tokens=6)) for s in result.samples]
        )
        assert [s.output for s in result.samples] == [d.text for d in direct]  # greedy, batch-independent
    for sample in results["gsm8k"].samples:
        assert sample.extracted == extract_number(sample.output)
    assert set(results["drop"].metrics) == {"f1", "em"} and results["drop"].primary == "f1"


def test_synthetic_task_reproduces_score_synthetic(tiny_run, loaded, tmp_path):
    data = tmp_path / "synth"
    write_synthetic(data, ["addition", "reversal"], rows=5, heldout_rows=6, seed=1)
    out = tmp_path / "out"
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_run),
                "--tasks",
                "synthetic",
                "--data-dir",
                str(data),
                "--out",
                str(out),
                "--max-new-tokens",
                "8",
            ]
        )
        == 0
    )
    from frugal_lm.infer.engine import Engine

    direct = score_synthetic(Engine(loaded), data / "heldout.jsonl", max_new_tokens=8)
    reported = json.loads((out / "results.json").read_text())["results"]["synthetic"]
    assert reported["value"] == direct.value and reported["n"] == 6
    assert reported["metrics"]["exact_match/addition"]["value"] == direct.metrics["exact_match/addition"].value
    samples = [json.loads(line) for line in (out / "samples_synthetic.jsonl").read_text().splitlines()]
    assert [s["output"] for s in samples] == [s.output for s in direct.samples]


def test_user_mistakes(tiny_run, benchmark_dir, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_run), "--tasks", "gsm8k", "--data-dir", str(tmp_path)]) == 2
    assert "gsm8k: no test file in" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_run), "--tasks", "gsm8k,squad", "--data-dir", str(tmp_path)]) == 2
    assert "unknown task 'squad'" in capsys.readouterr().err
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_run),
                "--tasks",
                "boolq",
                "--data-dir",
                str(benchmark_dir),
                "--condition",
                "boolq=chatty",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "unknown tag 'chatty'" in capsys.readouterr().err
    assert (
        main(["eval", "--model", str(tiny_run), "--tasks", "boolq", "--data-dir", str(benchmark_dir), "--shots", "1"])
        == 2
    )
    assert "boolq: no few-shot (train/dev) file" in capsys.readouterr().err


def test_parse_tasks_and_conditions():
    assert parse_tasks("gsm8k, boolq") == ["gsm8k", "boolq"]
    with pytest.raises(FrugalError, match="twice"):
        parse_tasks("boolq,boolq")
    assert parse_conditions(["cot", "gsm8k=cot,noisy"], ["gsm8k"]) == {"*": ("cot",), "gsm8k": ("cot", "noisy")}
    with pytest.raises(FrugalError, match="not in --tasks"):
        parse_conditions(["mmlu=cot"], ["gsm8k"])
