"""The adapter exercised through lm-eval itself, on local tasks defined from JSONL files."""

import json

import pytest

from frugal_lm.infer.loading import load_model

from .test_loglikelihood import hand_logprob

lm_eval = pytest.importorskip("lm_eval")

MC_DOCS = [
    {"question": "What is 2 + 2?", "choices": ["4", "5", "22"], "label": 0},
    {"question": "Reverse the string: abc", "choices": ["cba", "abc"], "label": 0},
    {"question": "What is 10 + 1?", "choices": ["11", "101", "9"], "label": 2},
]
TEXT_DOCS = [{"text": "What is 12 + 30? 42"}, {"text": "Reverse the string: hello olleh"}]

TASKS_YAML = """
task: frugal_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
---
task: frugal_local_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {text}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
---
task: frugal_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {mc}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{choices[label]}}}}"
generation_kwargs:
  until: ["9"]
  max_gen_toks: 5
metric_list:
  - metric: exact_match
"""


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in MC_DOCS))
    (tmp_path / "text.jsonl").write_text("".join(json.dumps(d) + "\n" for d in TEXT_DOCS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for index, block in enumerate(
        TASKS_YAML.format(mc=tmp_path / "mc.jsonl", text=tmp_path / "text.jsonl").split("---")
    ):
        (tasks / f"task_{index}.yaml").write_text(block)
    return tasks


def test_simple_evaluate_scores_match_hand_computation(tiny_run, task_dir):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import frugal_lm.evals.lm_eval_adapter  # noqa: F401  registers "frugal"

    output = simple_evaluate(
        model="frugal",
        model_args=f"model={tiny_run}",
        batch_size=2,
        tasks=["frugal_local_mc", "frugal_local_rolling", "frugal_local_gen"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
    )
    loaded = load_model(tiny_run)
    tokenizer = loaded.tokenizer
    special, direct = tokenizer.special_ids, tokenizer.condition_ids["direct"]

    def tokens(text):
        return tokenizer.tokenizer.encode(text, add_special_tokens=False).ids

    correct = []
    for sample in sorted(output["samples"]["frugal_local_mc"], key=lambda s: s["doc_id"]):
        doc = MC_DOCS[sample["doc_id"]]
        instruction = [special["boq"], direct, *tokens(doc["question"]), special["eoq"]]
        expected = [hand_logprob(loaded.model, instruction, tokens(choice))[0] for choice in doc["choices"]]
        got = [response[0][0] for response in sample["resps"]]
        assert got == pytest.approx(expected, abs=1e-4)
        correct.append(max(range(len(expected)), key=expected.__getitem__) == doc["label"])
    assert output["results"]["frugal_local_mc"]["acc,none"] == pytest.approx(sum(correct) / len(correct))

    for sample in output["samples"]["frugal_local_rolling"]:
        text = TEXT_DOCS[sample["doc_id"]]["text"]
        expected = hand_logprob(loaded.model, [special["boq"], direct, special["eoq"]], tokens(text))[0]
        assert sample["resps"][0][0] == pytest.approx(expected, abs=1e-4)

    from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams

    engine = Engine(loaded)
    for sample in output["samples"]["frugal_local_gen"]:
        direct_output = engine.generate(
            [GenerationRequest(MC_DOCS[sample["doc_id"]]["question"], ("direct",), SamplingParams(max_new_tokens=5))]
        )[0].text
        assert sample["resps"][0][0] == direct_output.split("9")[0]


def test_rolling_windows_predict_every_token_once(tiny_run):
    """A text longer than the context is cut into windows; their sum must equal the sum of
    per-window hand computations with the preceding text as instruction."""
    import frugal_lm.evals.lm_eval_adapter as adapter

    model = adapter.FrugalLM(model=str(tiny_run), batch_size=4)
    tokens = model._tokens("Reverse the string: abcdefghij " * 12)
    assert len(tokens) > model.max_len
    text = model.text_tokenizer.decode(tokens)
    assert model._tokens(text) == tokens

    class Request:
        args = (text,)

    total = model.loglikelihood_rolling([Request()], disable_tqdm=True)[0]
    budget = model.max_len - len(model.head)
    step = budget // 2
    expected, covered = 0.0, []
    for start in range(0, len(tokens), step):
        chunk = tokens[start : start + step]
        context = tokens[max(0, start - (budget - len(chunk))) : start]
        instruction = [*model.head, *context, model.eoq]
        assert len(instruction) + len(chunk) - 1 <= model.max_len
        expected += hand_logprob(model.loaded.model, instruction, chunk)[0]
        covered += chunk
    assert covered == tokens and total == pytest.approx(expected, abs=1e-3)


def test_cut_at_stops():
    from frugal_lm.evals.lm_eval_adapter import cut_at_stops

    assert cut_at_stops("42\n\nQuestion: next", ["\n\n", "Question:"]) == "42"
    assert cut_at_stops("42", []) == "42" and cut_at_stops("a.b", ["", "."]) == "a"


@pytest.mark.slow
def test_lm_eval_command_line_with_the_frugal_model(tiny_run, task_dir, tmp_path):
    """lm_eval's own CLI (through the registering wrapper), as a user runs it (~1 min: the CLI
    indexes all of lm-eval's built-in tasks)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "lm_eval_out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "frugal_lm.evals.lm_eval_cli",
            "--model",
            "frugal",
            "--model_args",
            f"model={tiny_run}",
            "--tasks",
            "frugal_local_mc",
            "--include_path",
            str(task_dir),
            "--device",
            "cpu",
            "--output_path",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "|frugal_local_mc|" in completed.stdout.replace(" ", "")
    assert list(out.rglob("results_*.json"))
