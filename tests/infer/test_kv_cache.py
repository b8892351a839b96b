"""Incremental decoding through the static KV cache against recomputing the whole
sequence with the training forward pass (PrefixLM mask) at every step."""

import pytest
import torch

from frugal_lm.config import load_model_config
from frugal_lm.infer.kv_cache import StaticKVCache
from frugal_lm.model import AttentionLayout, build_model

VOCAB, CONTEXT = 64, 24


def tiny_model(net, **overrides):
    torch.manual_seed(0)
    overrides = {"n_heads": 2, **overrides}
    config = load_model_config("tiny", net, vocab_size=VOCAB, hidden_size=32, max_seq_len=CONTEXT, **overrides)
    return build_model(config).eval(), config


def full_logits(model, tokens, prefix_len):
    """Logits at the last position, from scratch: instruction bidirectional, rest causal."""
    T = len(tokens)
    layout = AttentionLayout.from_lengths([[(prefix_len, T - prefix_len)]], T)
    return model(torch.tensor([tokens]), torch.arange(T)[None], layout)[0, -1]


def decode_matches_recompute(model, cache, slots, sequences, prompt_lens, logits_BV, steps):
    """Greedy decoding of the sequences in engine slots `slots` (row b: `sequences[b]`, extended
    in place; `logits_BV` their prefill logits) through the cache; every step's logits must
    match recomputing that sequence from scratch."""
    for _ in range(steps):
        for row, sequence in enumerate(sequences):  # the next token: greedy from the cached logits
            sequence.append(int(logits_BV[row].argmax()))
        positions = torch.tensor([len(sequence) - 1 for sequence in sequences])
        new_tokens = torch.tensor([[sequence[-1]] for sequence in sequences])
        logits_BV = model(new_tokens, positions[:, None], None, kv_cache=cache.decode(slots, positions))[:, -1]
        for row, sequence in enumerate(sequences):
            expected = full_logits(model, sequence, prompt_lens[row])
            torch.testing.assert_close(logits_BV[row], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
@torch.inference_mode()
def test_incremental_decoding_matches_full_recompute(net):
    model, config = tiny_model(net)
    generator = torch.Generator().manual_seed(1)
    # Two sequences of different prompt lengths, in non-adjacent engine slots (0 and 2),
    # decoding together: exercises the masked, gathered path of the cache.
    prompts = {
        0: torch.randint(0, VOCAB, (7,), generator=generator).tolist(),
        2: torch.randint(0, VOCAB, (3,), generator=generator).tolist(),
    }
    cache = StaticKVCache(config, n_slots=3, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    sequences, logits = {}, {}
    for slot, prompt in prompts.items():
        T = len(prompt)
        logits[slot] = model(torch.tensor([prompt]), torch.arange(T)[None], None, kv_cache=cache.prefill(slot))[0, -1]
        torch.testing.assert_close(logits[slot], full_logits(model, prompt, T), rtol=0, atol=1e-5)
        sequences[slot] = list(prompt)
    slots = sorted(sequences)
    decode_matches_recompute(
        model,
        cache,
        slots,
        [sequences[s] for s in slots],
        [len(prompts[s]) for s in slots],
        torch.stack([logits[s] for s in slots]),
        steps=10,
    )


@torch.inference_mode()
def test_hrm_cache_has_a_slot_per_stack_pass_and_block():
    model, config = tiny_model("hrm")
    cache = StaticKVCache(config, n_slots=1, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    assert torch.stack(cache.keys).shape[0] == 8 * config.layers_per_stack  # 2 x (3 + 1) passes
    model(torch.tensor([[1, 2, 3]]), torch.arange(3)[None], None, kv_cache=cache.prefill(0))
    # Every pass wrote its own keys; a pass's keys differ from every other pass's.
    written = torch.stack(cache.keys)[:, 0, :, :3]
    assert bool((written.abs().sum(dim=(1, 2, 3)) > 0).all())
    flat = written.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(flat))).min() > 0


def test_forward_without_cache_is_unchanged_by_the_cache_argument():
    model, _ = tiny_model("hrm")
    tokens = torch.tensor([[5, 6, 7, 8]])
    layout = AttentionLayout.from_lengths([[(2, 2)]], 4)
    positions = torch.arange(4)[None]
    assert torch.equal(model(tokens, positions, layout), model(tokens, positions, layout, kv_cache=None))


@torch.inference_mode()
def test_static_decode_view_with_an_idle_row_matches_full_recompute():
    """The compiled engine's view, run eagerly: fixed context length, masks, every slot a
    row, an idle slot in the middle writing position 0; the running rows must not notice."""
    model, config = tiny_model("hrm")
    generator = torch.Generator().manual_seed(2)
    prompts = {
        2: torch.randint(0, VOCAB, (5,), generator=generator).tolist(),
        0: torch.randint(0, VOCAB, (2,), generator=generator).tolist(),
    }
    cache = StaticKVCache(config, n_slots=3, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    sequences, logits = {}, {}
    for slot, prompt in prompts.items():
        logits[slot] = model(
            torch.tensor([prompt]), torch.arange(len(prompt))[None], None, kv_cache=cache.prefill(slot)
        )[0, -1]
        sequences[slot] = list(prompt)
    for _ in range(6):
        for slot in prompts:
            sequences[slot].append(int(logits[slot].argmax()))
        positions_N = torch.tensor([len(sequences[slot]) - 1 if slot in prompts else 0 for slot in range(3)])
        new_tokens = torch.tensor([[sequences[slot][-1] if slot in prompts else 0] for slot in range(3)])
        view = cache.static_decode(positions_N, context_len=16)
        step_logits = model(new_tokens, positions_N[:, None], None, kv_cache=view)[:, -1]
        for slot in prompts:
            logits[slot] = step_logits[slot]
            expected = full_logits(model, sequences[slot], len(prompts[slot]))
            torch.testing.assert_close(logits[slot], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", ["hrm", "transformer"])
@torch.inference_mode()
def test_batched_prefill_of_padded_prompts_matches_full_recompute(net):
    """Prompts of different lengths prefilled together (padded, key-padding mask) into
    non-adjacent slots: each row's logits, and the decoding that follows, match
    recomputing its own sequence alone."""
    model, config = tiny_model(net)
    generator = torch.Generator().manual_seed(3)
    slots, lengths = [3, 0, 1], [6, 2, 4]
    prompts = [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    cache = StaticKVCache(config, n_slots=4, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    T = max(lengths)
    input_ids = torch.tensor([p + [0] * (T - len(p)) for p in prompts])
    positions = torch.arange(T)[None].expand(3, T)
    lengths_B = torch.tensor(lengths)
    last = positions == (lengths_B - 1)[:, None]
    logits = model(input_ids, positions, None, logits_at_BT=last, kv_cache=cache.prefill_batch(slots, lengths_B))
    sequences = [list(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(logits[row], full_logits(model, prompt, len(prompt)), rtol=0, atol=1e-5)
    decode_matches_recompute(model, cache, slots, sequences, lengths, logits, steps=4)


@pytest.mark.parametrize("net", ["hrm", "transformer"])
@torch.inference_mode()
def test_grouped_query_cache_holds_key_value_heads_and_decodes_as_recompute(net):
    """n_kv_heads=1 of 4 query heads, no attention gate: the cache stores one head per layer
    slot (a quarter of multi-head's memory), and padded batched prefill, decoding and the
    static (compiled engine's) view all give the logits of recomputing from scratch."""
    model, config = tiny_model(net, n_heads=4, n_kv_heads=1, attention_gate=False)
    cache = StaticKVCache(config, n_slots=3, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    assert all(tensor.shape == (3, 1, CONTEXT, config.head_dim) for tensor in cache.keys + cache.values)
    generator = torch.Generator().manual_seed(4)
    slots, lengths = [2, 0], [5, 3]
    prompts = [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    T = max(lengths)
    input_ids = torch.tensor([p + [0] * (T - len(p)) for p in prompts])
    positions = torch.arange(T)[None].expand(2, T)
    lengths_B = torch.tensor(lengths)
    last = positions == (lengths_B - 1)[:, None]
    logits = model(input_ids, positions, None, logits_at_BT=last, kv_cache=cache.prefill_batch(slots, lengths_B))
    sequences = [list(p) for p in prompts]
    decode_matches_recompute(model, cache, slots, sequences, lengths, logits, steps=4)
    # One step through the static view (every slot a row; slot 1 idle at position 0).
    positions_N = torch.tensor([len(sequences[1]), 0, len(sequences[0])])
    next_tokens = [int(full_logits(model, sequence, n).argmax()) for sequence, n in zip(sequences, lengths)]
    input_N1 = torch.tensor([[next_tokens[1]], [0], [next_tokens[0]]])
    step_logits = model(input_N1, positions_N[:, None], None, kv_cache=cache.static_decode(positions_N, 16))[:, -1]
    for row, (sequence, n, token) in zip((2, 0), zip(sequences, lengths, next_tokens)):
        expected = full_logits(model, [*sequence, token], n)
        torch.testing.assert_close(step_logits[row], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
@pytest.mark.parametrize("implementation", ["grouped", "loop"])
@torch.inference_mode()
def test_a_mixture_of_experts_decodes_through_the_cache_as_recompute(net, implementation):
    """Each decoded token is routed on its own; padded batched prefill and the static view
    give the logits of recomputing the whole sequence (inference is dropless, so a capacity
    set for training changes nothing here)."""
    moe = {"experts": 4, "top_k": 2, "intermediate_size": 16, "shared_experts": 1, "capacity_factor": 0.5}
    model, config = tiny_model(net, moe={**moe, "implementation": implementation})
    cache = StaticKVCache(config, n_slots=3, max_seq_len=CONTEXT, dtype=torch.float32, device="cpu")
    generator = torch.Generator().manual_seed(5)
    slots, lengths = [2, 0], [6, 3]
    prompts = [torch.randint(1, VOCAB, (n,), generator=generator).tolist() for n in lengths]
    T = max(lengths)
    input_ids = torch.tensor([p + [0] * (T - len(p)) for p in prompts])
    positions = torch.arange(T)[None].expand(2, T)
    lengths_B = torch.tensor(lengths)
    last = positions == (lengths_B - 1)[:, None]
    logits = model(input_ids, positions, None, logits_at_BT=last, kv_cache=cache.prefill_batch(slots, lengths_B))
    sequences = [list(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(logits[row], full_logits(model, prompt, len(prompt)), rtol=0, atol=1e-5)
    decode_matches_recompute(model, cache, slots, sequences, lengths, logits, steps=4)
    positions_N = torch.tensor([len(sequences[1]), 0, len(sequences[0])])
    next_tokens = [int(full_logits(model, sequence, n).argmax()) for sequence, n in zip(sequences, lengths)]
    input_N1 = torch.tensor([[next_tokens[1]], [0], [next_tokens[0]]])
    step_logits = model(input_N1, positions_N[:, None], None, kv_cache=cache.static_decode(positions_N, 16))[:, -1]
    for row, (sequence, n, token) in zip((2, 0), zip(sequences, lengths, next_tokens)):
        torch.testing.assert_close(step_logits[row], full_logits(model, [*sequence, token], n), rtol=0, atol=1e-5)
