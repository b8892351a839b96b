"""The generation engine: prefill, incremental decode, continuous batching over fixed slots.

Design:
- The engine owns `max_batch_size` slots, each a row of one static KV cache
  (`kv_cache.StaticKVCache`) sized for `max_seq_len` tokens. A request takes a free slot
  (`add`, or `add_many` for several at once), advances one token per `step` together with
  every other running slot, and gives the slot back (`release`). Offline `generate` is a loop over the same three
  calls, so the server (which drives them from its scheduler) and the CLI run one code path.
- Prefill: the instruction (BOQ + conditions + text + EOQ) is one bidirectional block,
  and its last position, EOQ, predicts the first response token (training puts the first
  response label there). Prompts that join together are prefilled in one forward, padded
  to the longest under a key-padding mask (`add_many`): one batched pass instead of one
  per prompt. A prompt's logits then match its solo prefill to float rounding, not bits.
- `step` first chooses a token for every running slot from the logits it holds, then
  runs one batched decode forward for the slots that go on. A slot finishes on EOA
  ("stop", the EOA is not reported as a token), after `max_new_tokens` tokens or when its
  cache row is full ("length"). Finished slots stay taken until `release`, so a caller
  never loses a slot's last event.
- Sampling uses one generator per request (`sampling.py`): seeded results do not depend
  on batch composition; greedy is plain argmax. Everything runs under inference mode, in
  the model's dtype, on the model's device (CPU or GPU).
- On CPU the engine stores every Linear weight input-major (the (out, in) parameter is
  a transposed view of a contiguous (in, out) tensor): `x @ weight.T` then reads the
  weight in the order the BLAS kernel wants: with (out, in) storage the BLAS library takes
  a slow path at decode sizes (benchmarks/RESULTS.md, "Generation throughput", session 2).
  Same values, same parameter objects; training never sees it: the engine is inference-only.
- `compile=True` / `cuda_graphs=True` run the decode step at static shapes per (batch,
  context) bucket (`decode_step.py`), through torch.compile and/or replayed from CUDA
  graphs. Off by default: compiling pays off only over many tokens.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import torch

from frugal_lm.errors import FrugalError
from frugal_lm.infer import decode_step
from frugal_lm.infer.kv_cache import StaticKVCache
from frugal_lm.infer.loading import LoadedModel
from frugal_lm.infer.sampling import SamplingParams, request_generator, sample_token

__all__ = [
    "Engine",
    "GenerationRequest",
    "GenerationResult",
    "InvalidTokenId",
    "SamplingParams",
    "TokenEvent",
    "store_weights_input_major",
]

FinishReason = Literal["stop", "length"]


class InvalidTokenId(FrugalError):
    """A prompt holds a token id outside the model's vocabulary."""


@dataclass
class GenerationRequest:
    prompt: str
    conditions: tuple[str, ...] = ("direct",)
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: FinishReason
    """"stop": EOA produced (not in `text`/`token_ids`); "length": token or context limit."""


@dataclass
class TokenEvent:
    slot: int
    token_id: int | None
    """None when the step produced EOA (nothing to show)."""
    finished: bool
    finish_reason: FinishReason | None


@dataclass
class _Slot:
    """A running or finished sequence."""

    sampling: SamplingParams
    generator: torch.Generator
    length: int  # tokens in the cache (prompt + fed response tokens)
    generated: int = 0  # tokens chosen so far
    finished: bool = False


class Engine:
    def __init__(
        self,
        loaded: LoadedModel,
        max_batch_size: int = 8,
        max_seq_len: int | None = None,
        compile: bool = False,
        cuda_graphs: bool | None = None,
    ):
        """`compile`: the decode step through torch.compile. `cuda_graphs` (GPU only; default:
        on a GPU when compiling): the decode step replayed from a CUDA graph per bucket,
        compiled or not (`cuda_graphs.py`); without `compile` they take seconds to capture,
        where compiling a large model's step takes minutes."""
        config = loaded.config
        if max_batch_size < 1:
            raise FrugalError(f"max_batch_size must be >= 1, got {max_batch_size}")
        max_seq_len = config.max_seq_len if max_seq_len is None else max_seq_len
        if not 1 <= max_seq_len <= config.max_seq_len:
            raise FrugalError(
                f"max_seq_len must be in 1..{config.max_seq_len} (the model's context), got {max_seq_len}"
            )
        self.model = loaded.model.eval()
        if loaded.device.type == "cpu":
            store_weights_input_major(self.model)
        self.config = config
        self.precision = loaded.precision
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.max_batch_size, self.max_seq_len = max_batch_size, max_seq_len
        self.eoa_id = self.tokenizer.special_ids["eoa"]
        dtype = self.model.embed_tokens.weight.dtype
        self.cache = StaticKVCache(config, max_batch_size, max_seq_len, dtype, self.device)
        self.next_logits_NV = torch.zeros(max_batch_size, config.vocab_size, dtype=dtype, device=self.device)
        self.slots: list[_Slot | None] = [None] * max_batch_size
        if cuda_graphs is None:
            cuda_graphs = compile and self.device.type == "cuda"
        if cuda_graphs and self.device.type != "cuda":
            raise FrugalError("CUDA graphs need a GPU: the model is on the CPU")
        self.compiled, self.cuda_graphs = compile, cuda_graphs
        self.batch_buckets = cuda_graphs
        """Whether a static step runs the smallest batch bucket holding the fed slots, or every
        slot. On by default only where a bucket's graph is cheap to build (CUDA graphs: seconds);
        a compiled CPU step takes a minute per graph, more than a few tail steps of offline
        generation gain from it, until `warm_up` has built every bucket."""
        self.compiled_step = decode_step.build_static_step(
            self.device,
            compile,
            cuda_graphs,
            self.precision == "int8",
            decode_step.bucket_count(max_batch_size, max_seq_len),
        )
        """The static-shape decode step (`_compiled_decode`) when compiled or graphed, else None."""

    # ---- prompts ---------------------------------------------------------------------

    def encode_prompt(
        self, prompt: str | list[int], conditions: tuple[str, ...] | list[str] = ("direct",)
    ) -> list[int]:
        """BOQ + condition tokens + tokens(prompt) + EOQ, the training layout of an instruction;
        `prompt` is the instruction's text or the token ids of its text."""
        if not conditions:
            raise FrugalError("at least one condition tag is needed (e.g. direct)")
        known = self.tokenizer.condition_ids
        for tag in conditions:
            if tag not in known:
                raise FrugalError(f"unknown condition tag {tag!r}; known: {', '.join(sorted(known))}")
        if isinstance(prompt, str):
            text_ids = self.tokenizer.tokenizer.encode(prompt, add_special_tokens=False).ids
        else:
            text_ids = list(prompt)
            self._check_token_ids(text_ids)
        special = self.tokenizer.special_ids
        return [special["boq"], *(known[tag] for tag in conditions), *text_ids, special["eoq"]]

    def _check_token_ids(self, token_ids: list[int]) -> None:
        """Refuse an id outside the model's vocabulary (`InvalidTokenId`, naming the first)."""
        vocab = self.config.vocab_size
        bad = next((token for token in token_ids if not 0 <= token < vocab), None)
        if bad is not None:
            raise InvalidTokenId(
                f"token id {bad} is not in the model's vocabulary: prompt token ids must be in 0..{vocab - 1}"
            )

    # ---- continuous batching primitives ---------------------------------------------

    def free_slots(self) -> int:
        return sum(slot is None for slot in self.slots)

    def add(self, prompt_ids: list[int], sampling: SamplingParams) -> int:
        """Prefill `prompt_ids` into the lowest free slot and return the slot."""
        return self.add_many([prompt_ids], [sampling])[0]

    @torch.inference_mode()
    def add_many(self, prompts: list[list[int]], samplings: list[SamplingParams]) -> list[int]:
        """Prefill several prompts in one forward (padded to the longest, each in the
        lowest free slot) and return their slots, in order; nothing is added if any
        prompt is refused."""
        if len(prompts) != len(samplings):
            raise ValueError(f"{len(prompts)} prompts but {len(samplings)} sampling settings")
        for prompt_ids, sampling in zip(prompts, samplings):
            sampling.validate()
            if not prompt_ids:
                raise FrugalError("empty prompt: it needs at least BOQ and EOQ")
            if len(prompt_ids) > self.max_seq_len:
                raise FrugalError(f"prompt has {len(prompt_ids)} tokens, more than the context of {self.max_seq_len}")
            self._check_token_ids(prompt_ids)
        if len(prompts) > self.free_slots():
            raise RuntimeError(
                f"{len(prompts)} prompts but {self.free_slots()} free slots: call release() or add fewer"
            )
        if not prompts:
            return []
        slots = [index for index, slot in enumerate(self.slots) if slot is None][: len(prompts)]
        lengths = [len(prompt_ids) for prompt_ids in prompts]
        T = max(lengths)
        # Padding id 0: padded positions are masked out of every real token's attention.
        input_ids_BT = torch.tensor([p + [0] * (T - len(p)) for p in prompts], device=self.device)
        position_ids_BT = torch.arange(T, device=self.device)[None].expand(len(prompts), T)
        lengths_B = torch.tensor(lengths, device=self.device)
        last_BT = position_ids_BT == (lengths_B - 1)[:, None]
        logits_BV = self.model(
            input_ids_BT,
            position_ids_BT,
            None,
            logits_at_BT=last_BT,
            kv_cache=self.cache.prefill_batch(slots, lengths_B),
        )
        self.next_logits_NV[slots] = logits_BV
        for slot, length, sampling in zip(slots, lengths, samplings):
            self.slots[slot] = _Slot(sampling, request_generator(sampling, self.device), length=length)
        return slots

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One token for every running slot (in slot order), then one decode forward."""
        running = [index for index, slot in enumerate(self.slots) if slot is not None and not slot.finished]
        if not running:
            return []
        tokens = self._choose_tokens(running)
        events, feed_slots, feed_tokens = [], [], []
        for index, token in zip(running, tokens):
            slot = self.slots[index]
            slot.generated += 1
            if token == self.eoa_id:
                slot.finished = True
                events.append(TokenEvent(index, None, True, "stop"))
            elif slot.generated >= slot.sampling.max_new_tokens or slot.length >= self.max_seq_len:
                slot.finished = True
                events.append(TokenEvent(index, token, True, "length"))
            else:
                events.append(TokenEvent(index, token, False, None))
                feed_slots.append(index)
                feed_tokens.append(token)
        if feed_slots:
            self.feed(feed_slots, feed_tokens)
        return events

    def release(self, slot: int) -> None:
        """Free `slot` (finished or not, e.g. a cancelled request); a free slot stays free."""
        if not 0 <= slot < self.max_batch_size:
            raise ValueError(f"slot {slot} does not exist (0..{self.max_batch_size - 1})")
        self.slots[slot] = None

    def _choose_tokens(self, running: list[int]) -> list[int]:
        tokens: dict[int, int] = {}
        greedy = [index for index in running if self.slots[index].sampling.greedy]
        if greedy:
            # One argmax and one device sync for all greedy rows.
            chosen = torch.argmax(self.next_logits_NV[_as_index(greedy)], dim=-1).tolist()
            tokens.update(zip(greedy, chosen))
        for index in running:
            if index not in tokens:
                slot = self.slots[index]
                tokens[index] = sample_token(self.next_logits_NV[index], slot.sampling, slot.generator)
        return [tokens[index] for index in running]

    @torch.inference_mode()
    def feed(self, slot_indices: list[int], token_ids: list[int]) -> None:
        """Append one given token to each of `slot_indices` in one decode forward, leaving the
        next logits in `next_logits_NV`. `step` feeds the tokens it chose; a caller may feed its
        own (teacher forcing, e.g. to compare two engines on the same sequence)."""
        for index in slot_indices:
            slot = self.slots[index]
            if slot is None or slot.finished or slot.length >= self.max_seq_len:
                raise ValueError(f"slot {index} is not running or its context is full")
        positions = [self.slots[index].length for index in slot_indices]
        if self.compiled_step is not None:
            logits_BV = self._compiled_decode(slot_indices, token_ids, positions)
        else:
            input_ids_BT = torch.tensor(token_ids, device=self.device)[:, None]
            position_ids_BT = torch.tensor(positions, device=self.device)[:, None]
            view = self.cache.decode(slot_indices, position_ids_BT[:, 0])
            logits_BV = self.model(input_ids_BT, position_ids_BT, None, kv_cache=view)[:, -1]
        self.next_logits_NV[_as_index(slot_indices)] = logits_BV
        for index in slot_indices:
            self.slots[index].length += 1

    def _compiled_decode(self, slot_indices: list[int], token_ids: list[int], positions: list[int]) -> torch.Tensor:
        """The decode forward over the slots 0..rows-1 (`rows`: the batch bucket that holds
        the highest fed slot), for the fed ones. A row not fed writes where it does no harm
        (`StaticDecodeView`): a running slot at its next position, which its own next token
        overwrites, any other slot at position 0."""
        rows = self.batch_bucket(max(slot_indices) + 1)
        context_len = self.context_bucket(max(positions) + 1)
        token_ids_R, positions_R = [0] * rows, [0] * rows
        for index in range(rows):
            slot = self.slots[index]
            if slot is not None and not slot.finished:
                positions_R[index] = min(slot.length, self.max_seq_len - 1)
        for index, token, position in zip(slot_indices, token_ids, positions):
            token_ids_R[index], positions_R[index] = token, position
        logits_RV = self.compiled_step(
            self.model,
            self.cache,
            torch.tensor(token_ids_R, device=self.device)[:, None],
            torch.tensor(positions_R, device=self.device),
            context_len,
        )
        return logits_RV[_as_index(slot_indices)]

    def batch_bucket(self, rows: int) -> int:
        """Rows a static step runs for slots 0..rows-1 (`decode_step.py`)."""
        if not self.batch_buckets:
            return self.max_batch_size
        return decode_step.batch_bucket(rows, self.max_batch_size)

    def context_bucket(self, length: int) -> int:
        """Keys a static step attends over for contexts up to `length` tokens."""
        return decode_step.context_bucket(length, self.max_seq_len)

    @torch.inference_mode()
    def warm_up(self) -> int:
        """Build the static step of every (batch, context) bucket now (capture its CUDA
        graph, compile it), so that no request waits for one later; returns how many. Needs
        every slot free: each run writes position 0 of the slots it covers, which a prompt
        overwrites when it takes the slot."""
        if self.compiled_step is None:
            return 0
        if any(slot is not None for slot in self.slots):
            raise RuntimeError("warm_up needs every slot free")
        self.batch_buckets = True
        buckets = decode_step.every_bucket(self.max_batch_size, self.max_seq_len)
        for rows, context_len in buckets:
            zeros_R = torch.zeros(rows, dtype=torch.long, device=self.device)
            self.compiled_step(self.model, self.cache, zeros_R[:, None], zeros_R, context_len)
        return len(buckets)

    # ---- offline generation ------------------------------------------------------------

    def generate(self, requests: list[GenerationRequest], progress: bool = False) -> list[GenerationResult]:
        """Generate for every request, `max_batch_size` at a time with continuous batching
        (a finished sequence's slot goes to the next request at once); results in order.
        Uses the engine's slots: do not interleave with another driver of add/step."""
        prompts = [self.encode_prompt(request.prompt, request.conditions) for request in requests]
        for request in requests:
            request.sampling.validate()
        waiting = deque(range(len(requests)))
        owner: dict[int, int] = {}
        produced: dict[int, list[int]] = {}
        results: list[GenerationResult | None] = [None] * len(requests)
        bar = _progress_bar(len(requests)) if progress else None
        try:
            while waiting or owner:
                joining = [waiting.popleft() for _ in range(min(len(waiting), self.free_slots()))]
                if joining:
                    slots = self.add_many(
                        [prompts[index] for index in joining], [requests[index].sampling for index in joining]
                    )
                    for slot, index in zip(slots, joining):
                        owner[slot], produced[slot] = index, []
                for event in self.step():
                    if event.token_id is not None:
                        produced[event.slot].append(event.token_id)
                    if event.finished:
                        index = owner.pop(event.slot)
                        token_ids = produced.pop(event.slot)
                        results[index] = GenerationResult(
                            self.tokenizer.decode(token_ids), token_ids, len(prompts[index]), event.finish_reason
                        )
                        self.release(event.slot)
                        if bar is not None:
                            bar.update(1)
        finally:
            for slot in owner:
                self.release(slot)
            if bar is not None:
                bar.close()
        return results  # type: ignore[return-value]


@torch.no_grad()
def store_weights_input_major(model: torch.nn.Module) -> None:
    """Every Linear weight of `model` as the transposed view of a contiguous (in, out) tensor."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
            module.weight.data = module.weight.data.t().contiguous().t()


def _as_index(slots: list[int]) -> slice | list[int]:
    """Slots 0..n-1 in order (the usual batch) as a slice: a view instead of a gather."""
    return slice(0, len(slots)) if slots == list(range(len(slots))) else slots


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="generate", unit="prompt")
