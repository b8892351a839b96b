import pytest
import torch

from frugal_lm.data.records import Record
from frugal_lm.errors import FrugalError
from frugal_lm.infer.engine import Engine, GenerationRequest, SamplingParams
from frugal_lm.infer.loading import load_model
from frugal_lm.model import AttentionLayout

PROMPTS = ["12+7=", "reverse: abcdef", "3+4=", "a much longer prompt: 123456789+987654321=", "x"]


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run)


def greedy(max_new_tokens=12):
    return SamplingParams(max_new_tokens=max_new_tokens)


def reference_greedy(loaded, prompt_ids, max_new_tokens, eoa_id):
    """Greedy decoding by recomputing the whole sequence with the training forward pass."""
    model, tokens, prefix_len = loaded.model, list(prompt_ids), len(prompt_ids)
    device = loaded.device
    produced = []
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            T = len(tokens)
            layout = AttentionLayout.from_lengths([[(prefix_len, T - prefix_len)]], T).to(device)
            logits_V = model(torch.tensor([tokens], device=device), torch.arange(T, device=device)[None], layout)[0, -1]
            token = int(logits_V.argmax())
            if token == eoa_id:
                return produced, "stop"
            produced.append(token)
            tokens.append(token)
    return produced, "length"


def test_encode_prompt_is_the_training_instruction_layout(loaded):
    engine = Engine(loaded, max_batch_size=2)
    tokenizer = loaded.tokenizer
    ids = engine.encode_prompt("12+7=", ("cot", "noisy"))
    [(instruction, _)] = tokenizer.encode_records([Record("12+7=", "r", ("cot", "noisy"))])
    assert ids == instruction
    assert ids[0] == tokenizer.special_ids["boq"] and ids[-1] == tokenizer.special_ids["eoq"]
    with pytest.raises(FrugalError, match="unknown condition tag 'cto'"):
        engine.encode_prompt("x", ("cto",))
    text_ids = tokenizer.tokenizer.encode("12+7=", add_special_tokens=False).ids
    assert engine.encode_prompt(text_ids, ("cot", "noisy")) == ids  # the text's token ids: same layout
    with pytest.raises(FrugalError, match="prompt token ids must be in 0.."):
        engine.encode_prompt([1, loaded.config.vocab_size])


def test_greedy_generation_equals_full_recompute_and_is_deterministic(loaded):
    engine = Engine(loaded, max_batch_size=4)
    requests = [GenerationRequest(prompt, sampling=greedy()) for prompt in PROMPTS]
    results = engine.generate(requests)
    for prompt, result in zip(PROMPTS, results):
        prompt_ids = engine.encode_prompt(prompt)
        expected, reason = reference_greedy(loaded, prompt_ids, 12, engine.eoa_id)
        assert result.token_ids == expected and result.finish_reason == reason
        assert result.prompt_tokens == len(prompt_ids)
        assert result.text == loaded.tokenizer.decode(expected)
    assert engine.generate(requests) == results
    assert engine.free_slots() == 4


def test_cpu_engine_keeps_weight_values_but_stores_them_input_major(tiny_run):
    fresh = load_model(tiny_run)
    linears = [m for m in fresh.model.modules() if isinstance(m, torch.nn.Linear)]
    before = [(m.weight, m.weight.detach().clone()) for m in linears]
    Engine(fresh, max_batch_size=1)
    for module, (parameter, values) in zip(linears, before):
        assert module.weight is parameter  # same Parameter: nothing holding it goes stale
        assert torch.equal(module.weight, values)
        assert module.weight.t().is_contiguous() and not module.weight.is_contiguous()


def test_add_many_prefills_in_slot_order_and_refuses_all_or_nothing(loaded):
    engine = Engine(loaded, max_batch_size=3, max_seq_len=24)
    prompts = [engine.encode_prompt(p) for p in PROMPTS[:2]]
    with pytest.raises(FrugalError, match="more than the context of 24"):
        engine.add_many([prompts[0], list(range(25))], [greedy(), greedy()])
    assert engine.free_slots() == 3
    assert engine.add_many(prompts, [greedy(), greedy()]) == [0, 1]
    assert engine.add_many([], []) == [] and engine.free_slots() == 1


def test_batch_of_mixed_length_prompts_equals_each_prompt_alone(loaded):
    batched = Engine(loaded, max_batch_size=8).generate([GenerationRequest(p, sampling=greedy(16)) for p in PROMPTS])
    alone = Engine(loaded, max_batch_size=1)
    for prompt, result in zip(PROMPTS, batched):
        assert alone.generate([GenerationRequest(prompt, sampling=greedy(16))])[0] == result


def test_continuous_batching_with_slots_joining_midway_matches_offline(loaded):
    engine = Engine(loaded, max_batch_size=3)
    offline = engine.generate([GenerationRequest(p, sampling=greedy(10)) for p in PROMPTS])
    produced, finished, slot_of = {}, {}, {}

    def join(index):
        slot = engine.add(engine.encode_prompt(PROMPTS[index]), greedy(10))
        slot_of[slot], produced[index] = index, []

    join(0)
    for step in range(40):
        if step in (2, 3):
            join(step - 1)  # prompts 1 and 2 join while prompt 0 is mid-answer
        for event in engine.step():
            index = slot_of[event.slot]
            if event.token_id is not None:
                produced[index].append(event.token_id)
            if event.finished:
                finished[index] = event.finish_reason
                engine.release(event.slot)
                if len(produced) < len(PROMPTS):
                    join(len(produced))  # a released slot is reused at once
    assert sorted(finished) == list(range(len(PROMPTS)))
    for index, result in enumerate(offline):
        assert produced[index] == result.token_ids and finished[index] == result.finish_reason


def test_seeded_sampling_does_not_depend_on_the_batch(loaded):
    sampling = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, top_k=20, seed=3)
    alone = Engine(loaded, max_batch_size=1).generate([GenerationRequest(PROMPTS[0], sampling=sampling)])[0]
    others = [
        GenerationRequest(p, sampling=SamplingParams(max_new_tokens=12, temperature=1.0, seed=i))
        for i, p in enumerate(PROMPTS[1:])
    ]
    batched = Engine(loaded, max_batch_size=4).generate(
        [*others[:2], GenerationRequest(PROMPTS[0], sampling=sampling), *others[2:]]
    )
    assert batched[2] == alone
    different_seed = SamplingParams(max_new_tokens=12, temperature=1.0, seed=4)
    runs = [
        Engine(loaded, 1).generate([GenerationRequest(PROMPTS[0], sampling=different_seed)])[0].token_ids
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    top_1 = SamplingParams(max_new_tokens=12, temperature=2.0, top_k=1, seed=5)
    greedy_result = Engine(loaded, 1).generate([GenerationRequest(PROMPTS[0], sampling=greedy())])[0]
    assert Engine(loaded, 1).generate([GenerationRequest(PROMPTS[0], sampling=top_1)])[0] == greedy_result


def test_stop_at_eoa_and_length_limits(loaded):
    engine = Engine(loaded, max_batch_size=2)
    first = engine.generate([GenerationRequest(PROMPTS[0], sampling=greedy(1))])[0]
    assert len(first.token_ids) == 1 and first.finish_reason == "length"
    # Make the token the model picks first play EOA: generation must stop before it.
    engine.eoa_id = first.token_ids[0]
    stopped = engine.generate([GenerationRequest(PROMPTS[0], sampling=greedy(5))])[0]
    assert stopped.token_ids == [] and stopped.text == "" and stopped.finish_reason == "stop"
    # The context limit also ends a sequence with "length" (no token plays EOA here): the
    # prompt's P tokens, 3 fed answer tokens, and a 4th chosen with the context full.
    short = Engine(loaded, max_batch_size=1, max_seq_len=len(engine.encode_prompt(PROMPTS[1])) + 3)
    short.eoa_id = -1
    result = short.generate([GenerationRequest(PROMPTS[1], sampling=greedy(50))])[0]
    assert len(result.token_ids) == 4 and result.finish_reason == "length"


def test_user_mistakes_raise_frugal_errors(loaded):
    engine = Engine(loaded, max_batch_size=1, max_seq_len=16)
    with pytest.raises(FrugalError, match="more than the context of 16"):
        engine.add(list(range(17)), greedy())
    with pytest.raises(FrugalError, match="max_new_tokens"):
        engine.generate([GenerationRequest("x", sampling=SamplingParams(max_new_tokens=0))])
    with pytest.raises(FrugalError, match="max_seq_len"):
        Engine(loaded, max_seq_len=loaded.config.max_seq_len + 1)
    assert engine.free_slots() == 1


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")],
        ),
    ],
)
@torch.inference_mode()
def test_bf16_engine_keeps_a_bf16_cache_and_tracks_the_fp32_logits(tiny_run, device):
    # On a GPU the bf16 engine is the compiled one (CUDA graph), the serving configuration.
    half = Engine(load_model(tiny_run, device, dtype=torch.bfloat16), max_batch_size=2, compile=device == "cuda")
    full = Engine(load_model(tiny_run, device), max_batch_size=2)
    assert half.cache.keys[0].dtype == torch.bfloat16 and half.next_logits_NV.dtype == torch.bfloat16
    prompts = [full.encode_prompt(prompt) for prompt in PROMPTS[3:5]]
    for engine in (half, full):
        assert engine.add_many(prompts, [greedy(), greedy()]) == [0, 1]
    for _ in range(8):  # both engines are fed the fp32 engine's greedy tokens
        torch.testing.assert_close(half.next_logits_NV.float(), full.next_logits_NV, atol=0.1, rtol=0.05)
        tokens = full.next_logits_NV.argmax(dim=-1).tolist()
        for engine in (half, full):
            engine.feed([0, 1], tokens)


def static_step_engine(loaded, max_batch_size):
    """An engine that runs the compiled path's static-shape step (buckets, idle rows,
    masks) without compiling it: the same Python, in seconds."""
    from frugal_lm.infer.decode_step import static_decode_step

    engine = Engine(loaded, max_batch_size=max_batch_size)
    shapes = []

    def recording_step(model, cache, input_ids_R1, positions_R, context_len):
        shapes.append((input_ids_R1.shape[0], context_len))
        return static_decode_step(model, cache, input_ids_R1, positions_R, context_len)

    engine.compiled_step = recording_step
    engine.batch_buckets = True
    return engine, shapes


def test_static_step_runs_the_smallest_batch_bucket_and_gives_the_tokens_of_full_recompute(loaded):
    engine, shapes = static_step_engine(loaded, max_batch_size=4)
    results = engine.generate([GenerationRequest(p, sampling=greedy(10)) for p in PROMPTS])  # 5 prompts, 4 slots
    for prompt, result in zip(PROMPTS, results):
        expected, reason = reference_greedy(loaded, engine.encode_prompt(prompt), 10, engine.eoa_id)
        assert result.token_ids == expected and result.finish_reason == reason
    assert {rows for rows, _ in shapes} <= {1, 2, 4} and shapes[0][0] == 4
    # One prompt alone runs one row, whichever bucket a full batch needs.
    shapes.clear()
    engine.generate([GenerationRequest(PROMPTS[0], sampling=greedy(5))])
    assert {rows for rows, _ in shapes} == {1}
    assert engine.batch_bucket(3) == 4 and engine.batch_bucket(5) == 4 and engine.context_bucket(5) == 64
    # A compiled CPU engine runs every slot until warm_up has built the smaller buckets.
    engine.batch_buckets = False
    assert engine.batch_bucket(1) == 4


def test_warm_up_builds_every_bucket_once_and_changes_no_result(loaded):
    engine, shapes = static_step_engine(loaded, max_batch_size=4)
    engine.batch_buckets = False  # as a compiled CPU engine starts
    assert engine.warm_up() == len(shapes) == len(set(shapes))
    assert engine.batch_buckets  # every bucket is built: lone requests run one row
    # max_seq_len 64 is below the smallest context bucket: one context bucket, batch buckets 1, 2, 4.
    assert sorted(shapes) == [(1, 64), (2, 64), (4, 64)]
    shapes.clear()
    results = engine.generate([GenerationRequest(p, sampling=greedy(8)) for p in PROMPTS])
    assert results == Engine(loaded, max_batch_size=4).generate(
        [GenerationRequest(p, sampling=greedy(8)) for p in PROMPTS]
    )
    assert set(shapes) <= {(1, 64), (2, 64), (4, 64)}
    engine.add(engine.encode_prompt(PROMPTS[0]), greedy(4))
    with pytest.raises(RuntimeError, match="every slot free"):
        engine.warm_up()
    assert Engine(loaded, max_batch_size=2).warm_up() == 0  # eager: nothing to build


def test_feeding_some_running_slots_leaves_the_others_intact(loaded):
    """A running slot that is not fed in a step keeps its cache: its row writes only the
    position its own next token overwrites."""
    for make in (lambda: Engine(loaded, max_batch_size=3), lambda: static_step_engine(loaded, 3)[0]):
        engine = make()
        slots = engine.add_many([engine.encode_prompt(p) for p in PROMPTS[:3]], [greedy(20)] * 3)
        for token in (5, 6, 7):
            engine.feed([slots[0], slots[2]], [token, token])  # slot 1 waits
        engine.feed([slots[1]], [9])
        alone = Engine(loaded, max_batch_size=1)
        (slot,) = alone.add_many([engine.encode_prompt(PROMPTS[1])], [greedy(20)])
        alone.feed([slot], [9])
        torch.testing.assert_close(engine.next_logits_NV[slots[1]], alone.next_logits_NV[slot])


@pytest.mark.slow  # compiles a decode graph: minutes on a busy CPU
def test_compiled_decode_step_gives_the_tokens_of_full_recompute(loaded):
    engine = Engine(loaded, max_batch_size=2, compile=True)
    prompts = PROMPTS[:3]  # 3 prompts on 2 slots: steps run with both slots busy, or one idle
    results = engine.generate([GenerationRequest(prompt, sampling=greedy(10)) for prompt in prompts])
    for prompt, result in zip(prompts, results):
        expected, reason = reference_greedy(loaded, engine.encode_prompt(prompt), 10, engine.eoa_id)
        assert result.token_ids == expected and result.finish_reason == reason


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "compile, cuda_graphs", [(False, False), (False, True), (True, True)], ids=["eager", "cuda-graphs", "compiled"]
)
def test_gpu_engine_gives_the_tokens_of_full_recompute_and_of_the_cpu_engine(tiny_run, loaded, compile, cuda_graphs):
    on_gpu = load_model(tiny_run, device="cuda")
    engine = Engine(on_gpu, max_batch_size=4, compile=compile, cuda_graphs=cuda_graphs)
    requests = [GenerationRequest(prompt, sampling=greedy(10)) for prompt in PROMPTS]  # 5 prompts, 4 slots
    results = engine.generate(requests)
    for prompt, result in zip(PROMPTS, results):
        expected, reason = reference_greedy(on_gpu, engine.encode_prompt(prompt), 10, engine.eoa_id)
        assert result.token_ids == expected and result.finish_reason == reason
    assert Engine(loaded, max_batch_size=2).generate(requests) == results
    if cuda_graphs:  # a graph per batch bucket met: 4, then smaller ones as slots finish
        captured_rows = {rows for rows, _ in engine.compiled_step.captured}
        assert 4 in captured_rows and captured_rows <= {1, 2, 4}
