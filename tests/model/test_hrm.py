import pytest
import torch

from frugal_lm.config import load_model_config
from frugal_lm.data.batch import Example, pack_rows
from frugal_lm.model import AttentionLayout, bp_steps_at, build_model, language_model_loss
from frugal_lm.model.layers import Stack


def tiny(net="hrm", **overrides):
    return load_model_config("tiny", net, vocab_size=64, hidden_size=32, n_heads=2, **overrides)


def small_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)

    def tokens(n):
        return torch.randint(1, 64, (n,), generator=generator).tolist()

    rows = [[Example(tokens(5), tokens(4)), Example(tokens(3), tokens(2))], [Example(tokens(6), tokens(6))]]
    return pack_rows(rows, row_len=12)


class PassRecorder:
    """Records, per stack pass in execution order, whether its output is part of the graph
    and the gradient that flows back into it."""

    def __init__(self, model):
        self.outputs = []
        for module in model.modules():
            if isinstance(module, Stack):
                module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        record = {"requires_grad": output.requires_grad, "grad": None}
        if output.requires_grad:
            output.register_hook(lambda grad: record.__setitem__("grad", grad.norm().item()))
        self.outputs.append(record)


@pytest.mark.parametrize("bp_steps", [2, 3, 4, 5])
def test_gradients_reach_only_the_last_bp_steps_passes(bp_steps):
    torch.manual_seed(0)
    model = build_model(tiny())
    recorder = PassRecorder(model)
    language_model_loss(model, small_batch(), bp_steps=bp_steps).loss.backward()
    passes = recorder.outputs
    assert len(passes) == 8  # 2 H cycles x (3 L passes + 1 H pass)
    for index, record in enumerate(passes):
        inside = index >= 8 - bp_steps
        assert record["requires_grad"] == inside, (index, record)
        if inside:
            assert record["grad"] is not None and record["grad"] > 0
    # Every parameter still learns, the embedding through the straight-through input.
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bp_steps_does_not_change_the_forward_pass():
    torch.manual_seed(0)
    model = build_model(tiny())
    batch = small_batch()
    losses = [language_model_loss(model, batch, bp_steps=steps).loss.item() for steps in (2, 5, None)]
    assert losses[0] == losses[1] == losses[2]


def test_only_window_passes_get_parameter_gradients():
    """With bp_steps=1 only the final H pass runs with grad: the L stack gets nothing."""
    torch.manual_seed(0)
    model = build_model(tiny())
    language_model_loss(model, small_batch(), bp_steps=1).loss.backward()
    assert all(p.grad is None for p in model.L_module.parameters())
    assert all(p.grad is not None for p in model.H_module.parameters())
    assert model.embed_tokens.weight.grad is not None


def test_bp_steps_warmup_schedule_by_hand():
    config = tiny()  # 2 -> 5 over the first 20% of steps, floor
    total = 1000  # warmup = 200 steps: 2 for [0, 66.7), 3 for [66.7, 133.3), 4 for [133.3, 200)
    expected = {0: 2, 66: 2, 67: 3, 133: 3, 134: 4, 199: 4, 200: 5, 999: 5}
    assert {step: bp_steps_at(config, step, total) for step in expected} == expected
    assert bp_steps_at(tiny(bp_warmup_fraction=0.0), 0, total) == 5
    assert bp_steps_at(tiny("transformer"), 0, total) == 1  # never more than the net has


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
def test_packed_rows_match_examples_run_alone(net):
    """No leakage across examples in a row: per-example logits equal the unpacked run's."""
    torch.manual_seed(0)
    model = build_model(tiny(net)).eval()
    generator = torch.Generator().manual_seed(1)
    examples = [
        Example(
            torch.randint(1, 64, (p,), generator=generator).tolist(),
            torch.randint(1, 64, (r,), generator=generator).tolist(),
        )
        for p, r in [(1, 1), (4, 3), (2, 6), (7, 1), (3, 3)]
    ]
    packed = pack_rows([examples[:3], examples[3:]], row_len=16)
    with torch.no_grad():
        packed_logits = model(
            packed.input_ids, packed.position_ids, AttentionLayout(packed.segment_ids, packed.prefix_mask)
        )
        starts = {0: 0, 1: 0}
        for index, example in enumerate(examples):
            row = 0 if index < 3 else 1
            alone = pack_rows([[example]], row_len=example.packed_len)
            alone_logits = model(
                alone.input_ids, alone.position_ids, AttentionLayout(alone.segment_ids, alone.prefix_mask)
            )[0]
            start = starts[row]
            torch.testing.assert_close(
                packed_logits[row, start : start + example.packed_len], alone_logits, atol=1e-5, rtol=1e-5
            )
            starts[row] += example.packed_len


def test_flex_forward_equals_sdpa_forward():
    torch.manual_seed(0)
    model = build_model(tiny()).eval()
    batch = small_batch()
    layout = AttentionLayout(batch.segment_ids, batch.prefix_mask)
    real = batch.segment_ids >= 0
    with torch.no_grad():
        sdpa = model(batch.input_ids, batch.position_ids, layout)
        model.config.attention_backend = "flex"
        flex = model(batch.input_ids, batch.position_ids, layout)
    torch.testing.assert_close(flex[real], sdpa[real], atol=1e-4, rtol=1e-4)


def test_z_l_init_is_a_saved_untrained_buffer():
    model = build_model(tiny())
    assert "z_L_init" in model.state_dict()
    assert "z_L_init" not in dict(model.named_parameters())
    assert model.z_L_init.std() > 0.5  # unit-scale random state, not zeros


def test_embedding_enters_at_unit_scale():
    model = build_model(load_model_config("tiny"))
    scaled = model.embed_tokens.weight * model.embedding_scale
    assert 0.85 < scaled.std().item() < 1.15


@pytest.mark.parametrize("net", ["hrm", "transformer", "universal"])
def test_response_positions_never_see_later_tokens(net):
    torch.manual_seed(0)
    model = build_model(tiny(net)).eval()
    original = pack_rows([[Example([1, 5, 6, 7], [8, 9, 10, 11, 2])]], row_len=8)
    changed = pack_rows([[Example([1, 5, 6, 7], [8, 9, 12, 11, 2])]], row_len=8)  # input position 6

    def logits(batch):
        return model(batch.input_ids, batch.position_ids, AttentionLayout(batch.segment_ids, batch.prefix_mask))

    with torch.no_grad():
        difference = (logits(original) - logits(changed)).abs().amax(-1)[0]
    assert difference[:6].max() == 0  # the instruction and earlier response positions
    assert difference[6:].min() > 0
