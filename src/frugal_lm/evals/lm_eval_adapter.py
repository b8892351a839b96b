"""lm-eval-harness adapter: the model as lm-eval's `frugal` model type.

Use:
    python -m frugal_lm.evals.lm_eval_cli --model frugal --model_args model=RUN_DIR --tasks arc_easy
    # or, in Python: import frugal_lm.evals.lm_eval_adapter, then
    # lm_eval.simple_evaluate(model="frugal", model_args="model=RUN_DIR", tasks=[...])

Importing this module registers the model with lm-eval's registry. lm-eval 0.4.13 finds models
only in its own `lm_eval.models` table (no entry-point plugins), so plain `lm_eval --model
frugal` cannot see a model from another package; `python -m frugal_lm.evals.lm_eval_cli`
takes exactly lm_eval's arguments and registers the model first.

model_args: `model=DIR` (run, checkpoint or exported dir), `condition=direct` (tags joined
with `+`, e.g. `cot+noisy`, since lm-eval splits model_args on commas). Batch size and device
come from lm_eval's own `--batch_size` and `--device` (its default device `cuda` falls back to
the CPU, with a warning, where there is no GPU, as lm-eval's HF model does).

Mapping of lm-eval's requests onto the PrefixLM layout:
- loglikelihood(context, continuation): context is the instruction (BOQ + conditions +
  context + EOQ, bidirectional), continuation the response, scored causally without EOA
  (the harness asks for a prefix of an answer, not a complete one). Leading whitespace of
  the continuation is dropped: the instruction/response boundary already separates them, and
  responses are trained without it.
- loglikelihood_rolling(text): the text is the response of an empty instruction; longer texts
  are cut into windows, each scored with as much preceding text as fits as its instruction,
  so every token is predicted exactly once.
- generate_until(context, gen_kwargs): the engine's batched generation (greedy unless
  do_sample), cut at the first stop string; the model also stops at EOA.
"""

from __future__ import annotations

import warnings
from pathlib import Path

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError:  # pragma: no cover - the hint is the point
    from frugal_lm.errors import FrugalError

    raise FrugalError("the lm-eval adapter needs lm-eval: pip install 'frugal-lm[lm-eval]'") from None

from tqdm import tqdm

from frugal_lm.evals.loglikelihood import fit_to_context, score_responses


@register_model("frugal")
class FrugalLM(LM):
    def __init__(
        self,
        model: str,
        condition: str = "direct",
        device: str | None = "cpu",
        batch_size: int | str | None = 8,
        max_batch_size: int | None = None,
        **unused,
    ) -> None:
        super().__init__()
        from frugal_lm.infer.loading import load_model

        self.loaded = load_model(Path(model), _usable_device(device))
        self.conditions = tuple(tag for tag in str(condition).split("+") if tag)
        self.batch_size_value = int(batch_size) if str(batch_size).isdigit() else 8
        self._engine = None
        tokenizer = self.loaded.tokenizer
        self.engine.encode_prompt("", self.conditions)  # unknown tags fail here, with the known ones named
        self.text_tokenizer = tokenizer.tokenizer
        self.head = [tokenizer.special_ids["boq"], *(tokenizer.condition_ids[t] for t in self.conditions)]
        self.eoq = tokenizer.special_ids["eoq"]
        self.max_len = self.loaded.config.max_seq_len

    @property
    def engine(self):
        if self._engine is None:
            from frugal_lm.infer.engine import Engine

            self._engine = Engine(self.loaded, max_batch_size=self.batch_size_value)
        return self._engine

    def _tokens(self, text: str) -> list[int]:
        return self.text_tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        scorable = [i for i, (_, response) in enumerate(pairs) if response]
        scores = score_responses(
            self.loaded.model,
            [pairs[i] for i in scorable],
            self.loaded.tokenizer.special_ids["pad"],
            self.batch_size_value,
        )
        results = [(0.0, True)] * len(pairs)  # an empty continuation has probability 1
        for index, score in zip(scorable, scores):
            results[index] = (score.logprob, score.is_greedy)
        return results

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            response = self._tokens(continuation.lstrip() or continuation)
            instruction = [*self.head, *self._tokens(context), self.eoq]
            pairs.append(fit_to_context(instruction, response, self.max_len, keep_head=len(self.head)))
        return self._score(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        budget = self.max_len - len(self.head)  # context + response tokens that fit beside BOQ..EOQ
        step = max(1, budget // 2)
        for request in tqdm(requests, desc="rolling log-likelihood", disable=disable_tqdm):
            tokens = self._tokens(request.args[0])
            pairs = []
            for start in range(0, len(tokens), step):
                chunk = tokens[start : start + step]
                context = tokens[max(0, start - (budget - len(chunk))) : start]
                pairs.append(([*self.head, *context, self.eoq], chunk))
            results.append(sum(logprob for logprob, _ in self._score(pairs)))
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from frugal_lm.evals.runner import fit_prompt
        from frugal_lm.infer.engine import GenerationRequest, SamplingParams

        prepared, stops = [], []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.get("until") or []
            stops.append([until] if isinstance(until, str) else list(until))
            max_new_tokens = int(gen_kwargs.get("max_gen_toks", 256))
            temperature = float(gen_kwargs.get("temperature", 0.0)) if gen_kwargs.get("do_sample") else 0.0
            prompt, _ = fit_prompt(self.engine, context, self.conditions, max_new_tokens)
            prepared.append(
                GenerationRequest(
                    prompt, self.conditions, SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
                )
            )
        outputs = self.engine.generate(prepared, progress=not disable_tqdm)
        return [cut_at_stops(output.text, stop) for output, stop in zip(outputs, stops)]

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.weights_path.parent)


def _usable_device(device: str | None) -> str:
    """lm-eval's CLI passes `cuda` by default; like its own HF model, fall back to the CPU
    (with a warning) where there is no CUDA device."""
    import torch

    if not device or (device.startswith("cuda") and not torch.cuda.is_available()):
        if device:
            warnings.warn(f"device {device!r} is not available here; using the CPU", stacklevel=3)
        return "cpu"
    return device


def cut_at_stops(text: str, stops: list[str]) -> str:
    """The text before the earliest stop string."""
    cut = len(text)
    for stop in stops:
        if stop and (position := text.find(stop)) >= 0:
            cut = min(cut, position)
    return text[:cut]
