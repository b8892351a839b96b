"""The run loop of `frugal data generate`: every unit of work (row x sample) asked once, written once.

Design choices:
- Two passes over the inputs: the first counts the units and checks every row before anything is
  spent (a `--template` field a row lacks is a one-line error naming it); the second feeds a
  bounded queue that `--concurrency` workers drain, so memory stays flat however large the input.
- A unit already finished in OUT (kept, rejected, or failed unless `--retry-failed`) is skipped,
  so `--resume` after a kill or a budget stop asks only what has no complete outcome.
- `--max-dollars` is the run's total, earlier runs in OUT included: once spent, no new request
  starts; those in flight finish and are written (the total can pass the limit by their cost).
- A row with no known answer under `--verify final-answer` is rejected without being asked.
- The progress bar (stderr, when it is a terminal) shows the dollars, tokens and counts live.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from frugal_lm.data.readers import ReadOptions, read_examples
from frugal_lm.data.records import RowResult
from frugal_lm.data.teacher import prompts, store
from frugal_lm.data.teacher.client import Exchange, RetryPolicy, TeacherClient
from frugal_lm.data.teacher.limits import RateLimiter, estimate_tokens
from frugal_lm.data.teacher.report import GenerateReport, Tally, earlier_retries, write_report
from frugal_lm.data.teacher.verify import known_answer, rejection
from frugal_lm.errors import FrugalError

REPORT_EVERY_S = 2.0


@dataclass(frozen=True)
class GenerateSettings:
    base_url: str
    model: str
    inputs: list[Path]
    out: Path
    read_options: ReadOptions = ReadOptions(require_response=False)
    system: str | None = None
    template: Path | None = None
    parse: str = "text"
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 1024
    samples: int = 1
    verify: str | None = None
    concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    policy: RetryPolicy = RetryPolicy()
    price_in: float = 0.0
    price_out: float = 0.0
    max_dollars: float | None = None
    resume: bool = False
    retry_failed: bool = False
    api_key_env: str = "OPENAI_API_KEY"
    seed: int = 0
    progress: bool = False


@dataclass(frozen=True)
class Unit:
    key: store.UnitKey
    prompt: str
    instruction: str
    conditions: tuple[str, ...]
    category: str | None
    gold: str | None


def _sha256(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_spec(settings: GenerateSettings, template: prompts.PromptTemplate | None) -> store.RunSpec:
    return store.RunSpec(
        model=settings.model,
        inputs=[str(path) for path in settings.inputs],
        read_options=settings.read_options.stamp(),
        system_sha256=_sha256(settings.system),
        template_sha256=_sha256(template.template.template if template else None),
        parse=settings.parse,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        samples=settings.samples,
        verify=settings.verify,
        keep_truncated=settings.policy.keep_truncated,
    )


def _units(settings: GenerateSettings, template: prompts.PromptTemplate | None, tally: Tally | None) -> Iterator[Unit]:
    """Every unit of the inputs, in order; bad rows are counted in `tally` (when given), not yielded."""
    for path in settings.inputs:
        for result in read_examples(path, settings.read_options):
            if result.record is None:
                if tally is not None and not result.skipped:
                    tally.bad_input_rows += 1
                continue
            yield from _row_units(str(path), result, settings, template)


def _row_units(source: str, result: RowResult, settings: GenerateSettings, template) -> Iterator[Unit]:
    record = result.record
    assert record is not None
    prompt = template.render(prompts.row_fields(result), result.where) if template else record.instruction
    gold = known_answer(record.response) if settings.verify == "final-answer" else None
    for sample in range(settings.samples):
        key = (source, result.where, sample)
        yield Unit(key, prompt, record.instruction, record.conditions, record.category, gold)


def generate(settings: GenerateSettings, api_key: str | None) -> GenerateReport:
    """Run (or resume) a generation into `settings.out`; the final report (also in report.json)."""
    given = [Path(path).resolve() for path in settings.inputs]  # `a.jsonl` and `./a.jsonl` are one file
    if len(set(given)) < len(given):
        twice = next(path for path, resolved in zip(settings.inputs, given) if given.count(resolved) > 1)
        raise FrugalError(f"INPUT {twice} is given twice: its rows would be one unit of work each, asked once")
    template = prompts.PromptTemplate(settings.template) if settings.template else None
    spec = run_spec(settings, template)
    resuming = store.check_output(settings.out, spec, settings.resume)
    tally = Tally(store.scan(settings.out) if resuming else store.DoneState(), settings.price_in, settings.price_out)
    retries_before = earlier_retries(settings.out) if resuming else {}
    finished = tally.done.finished(settings.retry_failed)
    todo = 0
    for unit in _units(settings, template, tally):  # the checking pass: errors before any spend
        tally.units += 1
        todo += unit.key not in finished
    store.start_output(settings.out, spec, settings.base_url, resuming)
    writer = store.OutputWriter(settings.out)
    bar = tqdm(total=todo, disable=not settings.progress, unit="unit", dynamic_ncols=True)
    run = _Run(settings, template, tally, writer, bar, retries_before)
    try:
        asyncio.run(run.main(api_key, finished))
    finally:
        writer.close()
        bar.close()
        report = tally.report(retries_before)
        write_report(settings.out, report)
    return report


class _Run:
    def __init__(self, settings, template, tally: Tally, writer: store.OutputWriter, bar: tqdm, retries_before):
        self.settings, self.template, self.tally, self.writer, self.bar = settings, template, tally, writer, bar
        self.retries_before = retries_before
        self.stop = asyncio.Event()
        self.last_report = time.monotonic()
        self.params_base = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "system_sha256": _sha256(settings.system),
            "template_sha256": _sha256(template.template.template if template else None),
        }

    async def main(self, api_key: str | None, finished: set[store.UnitKey]) -> None:
        settings = self.settings
        limiter = RateLimiter(settings.requests_per_minute, settings.tokens_per_minute)
        queue: asyncio.Queue[Unit | None] = asyncio.Queue(maxsize=2 * settings.concurrency)
        client = TeacherClient(
            settings.base_url, api_key, settings.policy, limiter, settings.concurrency, settings.seed,
            settings.api_key_env,
        )  # fmt: skip
        async with client:
            tasks = [asyncio.create_task(self._worker(client, queue)) for _ in range(settings.concurrency)]
            tasks.append(asyncio.create_task(self._feed(queue, finished, settings.concurrency)))
            try:
                # A worker's error (a 401 that stops the run) ends the wait at once; else all finish.
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _feed(self, queue: asyncio.Queue, finished: set[store.UnitKey], workers: int) -> None:
        for unit in _units(self.settings, self.template, None):
            if self.stop.is_set():
                break  # the budget is spent: what is left stays pending
            if unit.key in finished:
                continue
            if self.settings.verify == "final-answer" and unit.gold is None:
                line = {**_where(unit), "reason": "no known answer to verify against (the row has no response)"}
                self._finish(store.REJECTED, [{**line, "asked": False}], "rejected", unit.key, asked=False)
                continue
            await queue.put(unit)
        for _ in range(workers):
            await queue.put(None)

    async def _worker(self, client: TeacherClient, queue: asyncio.Queue) -> None:
        while (unit := await queue.get()) is not None:
            if self._budget_spent():
                continue  # pending: --resume asks it
            exchange = await client.complete(self._body(unit), self._estimate(unit))
            self.tally.retries.update(exchange.retries)
            self.tally.billed += exchange.billed
            self._write_outcome(unit, exchange)

    def _budget_spent(self) -> bool:
        limit = self.settings.max_dollars
        if limit is not None and self.tally.dollars >= limit:
            self.stop.set()
            self.tally.stopped = "max-dollars"
        return self.stop.is_set()

    def _body(self, unit: Unit) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "messages": prompts.messages(self.settings.system, unit.prompt),
            "temperature": self.settings.temperature,
            "top_p": self.settings.top_p,
            "max_tokens": self.settings.max_tokens,
        }

    def _estimate(self, unit: Unit) -> int:
        return estimate_tokens(len(unit.prompt) + len(self.settings.system or ""), self.settings.max_tokens)

    def _write_outcome(self, unit: Unit, exchange: Exchange) -> None:
        billed = {"billed": exchange.billed.as_dict()}
        if exchange.reply is None:
            retries = dict(exchange.retries)
            line = {**_where(unit), "cause": exchange.cause, "reason": exchange.reason, "retries": retries, **billed}
            self._finish(store.FAILED, [line], "failed", unit.key, cause=exchange.cause)
            return
        text = exchange.reply.text
        reason = rejection(self.settings.verify, text, unit.gold)
        pairs = prompts.parse_reply(text, self.settings.parse) if reason is None else reason
        if isinstance(pairs, str):
            line = {**_where(unit), "reason": pairs, "response": text, **billed}
            self._finish(store.REJECTED, [line], "rejected", unit.key)
            return
        lines = [self._record(unit, exchange, instruction, response) for instruction, response in pairs]
        for item, line in enumerate(lines):
            line.update(item=item, items=len(lines))
        lines[0].update(billed)
        self._finish(store.RECORDS, lines, "kept", unit.key, records=len(lines))

    def _record(self, unit: Unit, exchange: Exchange, instruction: str | None, response: str) -> dict[str, Any]:
        reply = exchange.reply
        assert reply is not None
        record: dict[str, Any] = {
            "instruction": unit.instruction if instruction is None else instruction,
            "response": response,
            "condition": ",".join(dict.fromkeys([*unit.conditions, "synth"])),
        }
        if unit.category is not None:
            record["category"] = unit.category
        record |= {"teacher": self.settings.model, "usage": reply.usage.as_dict()}
        if reply.finish_reason == "length":
            record["finish_reason"] = "length"  # kept with --keep-truncated
        return record | {"params": {**self.params_base, "sample": unit.key[2]}, **_where(unit)}

    def _finish(self, name: str, lines: list[dict], kind: str, key: store.UnitKey, **counts: Any) -> None:
        self.writer.write(name, lines)
        self.tally.outcome(kind, key, **counts)
        self.bar.update(1)
        self.bar.set_postfix_str(self.tally.postfix(), refresh=False)
        if time.monotonic() - self.last_report > REPORT_EVERY_S:
            self.last_report = time.monotonic()
            write_report(self.settings.out, self.tally.report(self.retries_before))


def _where(unit: Unit) -> dict[str, Any]:
    source, where, sample = unit.key
    return {"source": source, "where": where, "sample": sample}
