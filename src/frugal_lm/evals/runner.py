"""`frugal eval`: run benchmark tasks on one model and write the results.

Design choices:
- One model load per run; generation tasks share one `Engine` (batched greedy decoding with
  continuous batching), choice tasks run batched forward passes (`loglikelihood`). Both use
  `batch_size`.
- The synthetic task is `frugal_lm.evals.synthetic.score_synthetic` on DIR/heldout.jsonl
  (as `frugal data synth --out DIR` writes it), called exactly as the demo calls it, so the
  two numbers agree. It is always zero-shot: it measures the task the model was trained on.
- Prompts that do not fit the model's context keep their tail (the question itself comes
  last) and leave room for the answer; such samples are flagged `truncated_prompt` in the
  per-sample records, never dropped.
- `--condition` takes `TAGS` (every task) or `TASK=TAGS`, TAGS comma-separated; tags are
  checked against the model's tokenizer before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError
from frugal_lm.evals.datasets import AnswerItem, ChoiceItem, load_items
from frugal_lm.evals.loglikelihood import fit_to_context, score_responses
from frugal_lm.evals.results import SampleRecord, TaskResult, mean_metric
from frugal_lm.evals.synthetic import score_synthetic
from frugal_lm.evals.tasks import ALL_TASKS, SYNTHETIC, TASKS, TaskSpec, build_instruction, pick_shots
from frugal_lm.infer.loading import LoadedModel

DEFAULT_CONDITIONS = ("direct",)


@dataclass
class EvalSettings:
    tasks: list[str]
    data_dir: Path
    limit: int | None = None
    shots: int = 0
    conditions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # task (or "*") -> tags
    batch_size: int = 8
    max_new_tokens: int | None = None  # None: each task's own default

    def conditions_for(self, task: str) -> tuple[str, ...] | None:
        """The tags asked for `task`, or None when the user asked for none."""
        return self.conditions.get(task, self.conditions.get("*"))


def parse_tasks(text: str) -> list[str]:
    tasks = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in tasks if name not in ALL_TASKS]
    if unknown or not tasks:
        raise FrugalError(f"unknown task {unknown[0] if unknown else text!r}; allowed: {', '.join(ALL_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise FrugalError(f"--tasks names a task twice: {text}")
    return tasks


def parse_conditions(values: list[str], tasks: list[str]) -> dict[str, tuple[str, ...]]:
    """`["cot"]` -> {"*": ("cot",)}; `["gsm8k=cot,noisy"]` -> {"gsm8k": ("cot", "noisy")}."""
    conditions = {}
    for value in values:
        task, _, tags = value.rpartition("=")
        task = task.strip() or "*"
        if task != "*" and task not in tasks:
            raise FrugalError(f"--condition {value!r}: task {task!r} is not in --tasks ({', '.join(tasks)})")
        parsed = tuple(tag.strip() for tag in tags.split(",") if tag.strip())
        if not parsed:
            raise FrugalError(f"--condition {value!r}: no condition tags")
        conditions[task] = parsed
    return conditions


def synthetic_heldout_path(data_dir: Path) -> Path:
    for candidate in (data_dir / "heldout.jsonl", data_dir / "synthetic" / "heldout.jsonl"):
        if candidate.is_file():
            return candidate
    raise FrugalError(
        f"synthetic: no held-out file at {data_dir / 'heldout.jsonl'} or "
        f"{data_dir / 'synthetic' / 'heldout.jsonl'} (write one with `frugal data synth --out DIR`)"
    )


def fit_prompt(engine, prompt: str, conditions: tuple[str, ...], max_new_tokens: int) -> tuple[str, bool]:
    """(prompt, truncated): the prompt's tail when it leaves no room for an answer in the
    engine's context (room kept: `max_new_tokens`, at most a quarter of the context)."""
    ids = engine.encode_prompt(prompt, conditions)
    room = engine.max_seq_len - min(max_new_tokens, engine.max_seq_len // 4)
    if len(ids) <= room:
        return prompt, False
    text_ids = ids[1 + len(conditions) : -1]
    keep = max(room - 2 - len(conditions), 1)
    return engine.tokenizer.decode(text_ids[-keep:]), True


class EvalRunner:
    def __init__(self, loaded: LoadedModel, settings: EvalSettings, progress: bool = True):
        self.loaded, self.settings, self.progress = loaded, settings, progress
        self._engine = None
        known = loaded.tokenizer.condition_ids
        for task, tags in settings.conditions.items():
            for tag in tags:
                if tag not in known:
                    raise FrugalError(
                        f"--condition: unknown tag {tag!r} for {task if task != '*' else 'all tasks'}; "
                        f"this model's tokenizer knows {', '.join(sorted(known))}"
                    )

    @property
    def engine(self):
        if self._engine is None:
            from frugal_lm.infer.engine import Engine

            self._engine = Engine(self.loaded, max_batch_size=self.settings.batch_size)
        return self._engine

    def run(self) -> list[TaskResult]:
        # Read every data file first: a missing file fails the run before any model time is spent.
        inputs = {task: self._items(task) for task in self.settings.tasks if task != SYNTHETIC}
        heldout = synthetic_heldout_path(self.settings.data_dir) if SYNTHETIC in self.settings.tasks else None
        results = []
        for task in self.settings.tasks:
            if task == SYNTHETIC:
                results.append(
                    score_synthetic(
                        self.engine,
                        heldout,
                        self.settings.limit,
                        self.settings.conditions_for(task),
                        self.settings.max_new_tokens,
                        progress=self.progress,
                    )
                )
                continue
            spec = TASKS[task]
            items, instructions = inputs[task]
            conditions = self.settings.conditions_for(task) or DEFAULT_CONDITIONS
            if spec.mode == "choice":
                results.append(self._choice(spec, items, instructions, conditions))
            else:
                results.append(self._generate(spec, items, instructions, conditions))
        return results

    def _items(self, task: str) -> tuple[list, list[str]]:
        items = load_items(task, self.settings.data_dir, "test", self.settings.limit)
        pool = load_items(task, self.settings.data_dir, "fewshot") if self.settings.shots else []
        spec = TASKS[task]
        return items, [build_instruction(spec, item, pick_shots(item, pool, self.settings.shots)) for item in items]

    def _choice(
        self, spec: TaskSpec, items: list[ChoiceItem], instructions: list[str], conditions: tuple[str, ...]
    ) -> TaskResult:
        tokenizer, max_len = self.loaded.tokenizer, self.loaded.config.max_seq_len
        records = [
            Record(instruction, option, conditions)
            for item, instruction in zip(items, instructions)
            for option in item.options
        ]
        encoded = tokenizer.encode_records(records)
        pairs = [
            fit_to_context(instruction_ids, response_ids, max_len, keep_head=1 + len(conditions))
            for instruction_ids, response_ids in encoded
        ]
        truncated = [len(fitted[0]) < len(original[0]) for fitted, original in zip(pairs, encoded)]
        scores = score_responses(
            self.loaded.model, pairs, tokenizer.special_ids["pad"], self.settings.batch_size, self.progress
        )
        samples, start = [], 0
        for index, (item, instruction) in enumerate(zip(items, instructions)):
            count = len(item.options)
            logprobs = [score.logprob for score in scores[start : start + count]]
            normalized = [lp / max(len(option), 1) for lp, option in zip(logprobs, item.options)]
            chosen = max(range(count), key=logprobs.__getitem__)
            chosen_norm = max(range(count), key=normalized.__getitem__)
            samples.append(
                SampleRecord(
                    index,
                    instruction,
                    item.options[chosen],
                    str(chosen),
                    item.options[item.label],
                    chosen == item.label,
                    {
                        "where": item.where,
                        "gold_index": item.label,
                        "logprobs": logprobs,
                        "acc": float(chosen == item.label),
                        "acc_norm": float(chosen_norm == item.label),
                        "truncated_prompt": any(truncated[start : start + count]),
                    },
                )
            )
            start += count
        metrics = {name: mean_metric([s.extra[name] for s in samples]) for name in spec.metrics}
        return TaskResult(spec.name, spec.primary, metrics, samples)

    def _generate(
        self, spec: TaskSpec, items: list[AnswerItem], instructions: list[str], conditions: tuple[str, ...]
    ) -> TaskResult:
        from frugal_lm.infer.engine import GenerationRequest, SamplingParams

        max_new_tokens = self.settings.max_new_tokens or spec.max_new_tokens
        sampling = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        fitted = [fit_prompt(self.engine, instruction, conditions, max_new_tokens) for instruction in instructions]
        outputs = self.engine.generate(
            [GenerationRequest(prompt, conditions, sampling) for prompt, _ in fitted], progress=self.progress
        )
        samples = []
        for index, (item, (prompt, truncated), output) in enumerate(zip(items, fitted, outputs)):
            judgement = spec.judge(item, output.text)
            gold = " | ".join(", ".join(spans) for spans in item.answers)
            samples.append(
                SampleRecord(
                    index,
                    prompt,
                    output.text,
                    judgement.extracted,
                    gold,
                    judgement.scores[spec.primary] == 1.0,
                    {
                        "where": item.where,
                        **judgement.scores,
                        "truncated_prompt": truncated,
                        "finish_reason": output.finish_reason,
                    },
                )
            )
        metrics = {name: mean_metric([s.extra[name] for s in samples]) for name in spec.metrics}
        return TaskResult(spec.name, spec.primary, metrics, samples)
