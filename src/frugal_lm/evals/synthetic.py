"""Score a model on the synthetic held-out split (`frugal data synth` -> heldout.jsonl).

API:

    from frugal_lm.infer.engine import Engine
    from frugal_lm.infer.loading import load_model
    from frugal_lm.evals.synthetic import score_synthetic

    result = score_synthetic(Engine(load_model("runs/demo")), "runs/demo/data/heldout.jsonl")
    result.value                                   # mean exact match over all samples
    result.metrics["exact_match/addition"].value   # per family
    result.samples[0]                              # SampleRecord(prompt, output, gold, correct, ...)

Design choices:
- The prompt is exactly the training layout of the record: its instruction with its own
  condition tags (`direct` for the built-in tasks), so the score measures the task the model
  was trained on; `conditions=` overrides the tags for condition ablations.
- Greedy decoding through the engine's batched `generate`: the engine guarantees a greedy
  result does not depend on the batch, so the score does not depend on `batch_size`.
- Scoring is the task's own checker (`frugal_lm.data.synth.check`): exact match of the final
  answer after trimming whitespace. Under the `cot` condition the final answer is what follows
  the answer marker of the worked solution (a missing marker is wrong), and the gold is the
  record's final answer, not its worked solution; otherwise it is the whole output.
- `exact_match` is the mean over all samples (micro); per-family means come beside it as
  `exact_match/<family>`. `frugal eval --tasks synthetic` calls this same function, so it
  reproduces the number the demo reports from the same file and model.
- `majority_baselines` is the score to beat: always answering a family's most common
  training answer. Counting answers are small numbers, so guessing scores ~28% there;
  a model's counting score means nothing until it clears that.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from frugal_lm.data.records import Record, read_rows
from frugal_lm.data.synth import Problem, check, final_answer
from frugal_lm.errors import FrugalError
from frugal_lm.evals.results import SampleRecord, TaskResult, mean_metric

MAX_ANSWER_TOKENS = {"direct": 32, "cot": 176}
"""Least generation limit by answer format: the longest synthetic response is 23 characters
answered directly (8 sorted two-digit numbers) and about 150 as a worked multiplication."""
ANSWER_MARGIN_TOKENS = 16
"""Beyond the longest gold response of the file (in characters, at least its tokens): an
answer that runs past this is wrong whatever comes after, so generation stops there. Worked
expressions run to ~470 characters: a fixed cap cut a third of them before their answer."""
UNCATEGORISED = "uncategorised"


def read_heldout(path: Path | str, limit: int | None = None) -> list[Record]:
    """The records of a synth-layout JSONL (instruction/response/condition/category), in file
    order; the first `limit` when given. A bad row is an error naming its file:line."""
    path = Path(path)
    if not path.is_file():
        raise FrugalError(
            f"{path}: no such held-out file (write one with `frugal data synth --out DIR`, "
            f"which creates DIR/heldout.jsonl)"
        )
    records = []
    for row in read_rows(path):
        if limit is not None and len(records) >= limit:
            break
        if row.record is None:
            raise FrugalError(f"{row.where}: {row.reason}")
        records.append(row.record)
    if not records:
        raise FrugalError(f"{path}: no records")
    return records


def as_problem(record: Record) -> Problem:
    return Problem(
        record.category or UNCATEGORISED,
        record.instruction,
        record.response,
        "cot" if "cot" in record.conditions else "direct",
    )


def score_outputs(records: list[Record], prompts: list[str], outputs: list[str], task: str = "synthetic") -> TaskResult:
    """Check each output against its record's response; overall and per-family exact match."""
    samples, by_family = [], defaultdict(list)
    for index, (record, prompt, output) in enumerate(zip(records, prompts, outputs, strict=True)):
        problem = as_problem(record)
        correct = check(problem, output)
        samples.append(
            SampleRecord(
                index,
                prompt,
                output,
                final_answer(problem, output) or "",
                problem.answer,
                correct,
                {"family": problem.family, "conditions": list(record.conditions)},
            )
        )
        by_family[problem.family].append(float(correct))
    metrics = {"exact_match": mean_metric([float(s.correct) for s in samples])}
    for family in sorted(by_family):
        metrics[f"exact_match/{family}"] = mean_metric(by_family[family])
    return TaskResult(task, "exact_match", metrics, samples)


def score_synthetic(
    engine,
    heldout_path: Path | str,
    limit: int | None = None,
    conditions: tuple[str, ...] | None = None,
    max_new_tokens: int | None = None,
    progress: bool = False,
) -> TaskResult:
    """Greedy-generate an answer for every held-out record with `engine` (a
    `frugal_lm.infer.engine.Engine`) and score it with the synthetic checkers."""
    from frugal_lm.infer.engine import GenerationRequest, SamplingParams

    records = read_heldout(heldout_path, limit)
    if max_new_tokens is None:  # room for the longest answer in the file
        max_new_tokens = max(
            max(MAX_ANSWER_TOKENS[as_problem(record).condition], len(record.response) + ANSWER_MARGIN_TOKENS)
            for record in records
        )
    sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    requests = [GenerationRequest(record.instruction, conditions or record.conditions, sampling) for record in records]
    results = engine.generate(requests, progress=progress)
    return score_outputs(records, [r.instruction for r in records], [r.text for r in results])


def majority_baselines(train: list[Record], heldout: list[Record]) -> dict[str, float]:
    """Per family: the held-out exact match of always answering that family's most common
    training final answer (0 for a family absent from training)."""
    answers: dict[str, Counter] = defaultdict(Counter)
    for problem in map(as_problem, train):
        answers[problem.family][problem.answer] += 1
    hits: dict[str, list[float]] = defaultdict(list)
    for problem in map(as_problem, heldout):
        guess = answers[problem.family].most_common(1)[0][0] if answers[problem.family] else None
        hits[problem.family].append(float(problem.answer == guess))
    return {family: sum(values) / len(values) for family, values in sorted(hits.items())}
