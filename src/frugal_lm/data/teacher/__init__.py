"""Data from a teacher: `frugal data generate` asks an OpenAI-compatible endpoint for responses.

- `client`: the async HTTP client (retries with backoff and jitter, Retry-After, timeouts).
- `limits`: request and token rate limits (token buckets).
- `prompts`: the prompt of a row (`--template`, `--system`) and the parsing of a reply into records.
- `verify`: `--verify final-answer|json`.
- `store`: the append-only output files, the work already done, and `run.json`.
- `generate`: the run loop (a pool of workers, the dollar budget, the progress bar).
- `report`: counts, tokens and dollars, `report.json`.

It is data-layer code: it imports nothing from infer or evals.
"""
