"""Evaluation: benchmark runners, the lm-eval-harness adapter, decontamination.

Layering: evals sits above infer (it drives the inference `Engine` for generation and the
model's forward pass for log-likelihoods) and below demo and cli. Modules:

- `results`: per-sample records and task results, written as results.json, a markdown
  table and per-sample JSONL.
- `synthetic`: the built-in synthetic held-out split (`score_synthetic`), the number the demo
  reports.
- `datasets`: readers for the public benchmarks' own file layouts, from a local directory.
- `extract`, `drop_metric`: answer extraction and scoring rules.
- `loglikelihood`: multiple choice by the conditional log-likelihood of each option under
  the PrefixLM mask.
- `tasks`, `runner`: prompts, shots and scoring modes per task; `frugal eval`.
- `lm_eval_adapter`: `lm_eval --model frugal`.
- `decontaminate`: n-gram overlap between training sources and benchmark test sets.
"""
