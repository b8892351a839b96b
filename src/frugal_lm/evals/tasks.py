"""What each benchmark asks and how its answers are judged: prompts, shots, scoring mode.

Two scoring modes:
- `choice` (MMLU, ARC, HellaSwag, WinoGrande, BoolQ): every option is scored as the
  *response* to the question under the PrefixLM mask, including the closing EOA, so the
  score is the probability that the model answers exactly this option and stops. Metrics:
  `acc` (highest total log-likelihood) and `acc_norm` (log-likelihood per character of the
  option, the length normalisation lm-eval uses, so long options are not penalised for
  their length). HellaSwag reports acc_norm first, as is customary.
- `generate` (GSM8K, MATH, DROP): greedy generation through the engine, then the task's
  answer extraction (`extract`, `drop_metric`).

Prompts: the question alone is the instruction (zero-shot), the way an instruction-tuned
model meets it. With k shots, k solved examples from the train/dev split ("<question>
\\nAnswer: <answer>", separated by blank lines) precede the question inside the same
instruction; shots are the first k of that split (MMLU: of the same subject), so runs are
reproducible without a seed. Condition tags default to `direct` for every task and can be
changed per task (e.g. `cot` for GSM8K on a model trained with chain-of-thought data).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from frugal_lm.data.answers import extract_number, math_verify_match, numbers_match
from frugal_lm.evals.datasets import AnswerItem, ChoiceItem, Item
from frugal_lm.evals.drop_metric import best_em_f1


@dataclass(frozen=True)
class Judgement:
    extracted: str | None
    scores: dict[str, float]  # metric name -> this sample's value (1/0 or F1)


def _mmlu_question(item: ChoiceItem) -> str:
    subject = (item.subject or "").replace("_", " ")
    header = f"The following is a question about {subject}.\n" if subject else ""
    return f"{header}{item.context}"


def _winogrande_question(item: ChoiceItem) -> str:
    return f"Fill in the blank (_): {item.context}"


def _judge_gsm8k(item: AnswerItem, output: str) -> Judgement:
    extracted = extract_number(output)
    return Judgement(extracted, {"exact_match": float(numbers_match(item.answers[0][0], extracted))})


def _judge_math(item: AnswerItem, output: str) -> Judgement:
    extracted, correct = math_verify_match(item.answers[0][0], output)
    return Judgement(extracted, {"exact_match": float(correct)})


def _judge_drop(item: AnswerItem, output: str) -> Judgement:
    # The answer is the first line: models trained to stop may still run on after it.
    answer = output.strip().split("\n")[0].strip()
    exact, f1 = best_em_f1(answer, item.answers)
    return Judgement(answer, {"em": exact, "f1": f1})


@dataclass(frozen=True)
class TaskSpec:
    name: str
    mode: Literal["choice", "generate"]
    primary: str
    format_question: Callable[[Item], str]
    judge: Callable[[AnswerItem, str], Judgement] | None = None
    max_new_tokens: int = 0

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric the task reports, its primary one first."""
        names = (
            ("acc", "acc_norm") if self.mode == "choice" else ("em", "f1") if self.name == "drop" else ("exact_match",)
        )
        return (self.primary, *(name for name in names if name != self.primary))


def _plain(item: Item) -> str:
    return item.context if isinstance(item, ChoiceItem) else item.question


TASKS: dict[str, TaskSpec] = {
    "gsm8k": TaskSpec("gsm8k", "generate", "exact_match", _plain, _judge_gsm8k, 256),
    "math": TaskSpec("math", "generate", "exact_match", _plain, _judge_math, 512),
    "drop": TaskSpec("drop", "generate", "f1", _plain, _judge_drop, 64),
    "mmlu": TaskSpec("mmlu", "choice", "acc", _mmlu_question),
    "arc_challenge": TaskSpec("arc_challenge", "choice", "acc", _plain),
    "arc_easy": TaskSpec("arc_easy", "choice", "acc", _plain),
    "hellaswag": TaskSpec("hellaswag", "choice", "acc_norm", _plain),
    "winogrande": TaskSpec("winogrande", "choice", "acc", _winogrande_question),
    "boolq": TaskSpec("boolq", "choice", "acc", _plain),
}
SYNTHETIC = "synthetic"
ALL_TASKS = (*TASKS, SYNTHETIC)


def shot_answer(item: Item) -> str:
    return item.options[item.label] if isinstance(item, ChoiceItem) else item.demonstration


def pick_shots(item: Item, pool: list[Item], shots: int) -> list[Item]:
    """The first `shots` pool items (for MMLU: of the item's subject when it has one)."""
    if isinstance(item, ChoiceItem) and item.subject is not None:
        same_subject = [shot for shot in pool if isinstance(shot, ChoiceItem) and shot.subject == item.subject]
        if same_subject:
            pool = same_subject
    return pool[:shots]


def build_instruction(task: TaskSpec, item: Item, shots: list[Item]) -> str:
    demonstrations = [f"{task.format_question(shot)}\nAnswer: {shot_answer(shot)}" for shot in shots]
    return "\n\n".join([*demonstrations, task.format_question(item)])
