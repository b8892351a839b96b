import math

import torch

from frugal_lm.config import load_model_config
from frugal_lm.data.batch import IGNORE_INDEX, Example, PackedBatch, pack_rows
from frugal_lm.model import build_model, language_model_loss
from frugal_lm.model.head import head_loss, logits_loss
from frugal_lm.model.loss import global_example_ids


class FixedLogits(torch.nn.Module):
    """Stands in for a model with given logits, so the loss and accuracies can be computed by hand."""

    def __init__(self, logits_BTV):
        super().__init__()
        self.logits = logits_BTV

    def forward(self, input_ids, position_ids, layout, bp_steps=None, logits_at_BT=None, targets_N=None):
        return logits_loss(self.logits[logits_at_BT], targets_N)


def test_loss_and_accuracies_by_hand():
    # Row 0: example A (instruction 2 tokens, response [1, 2]), example B (1, response [3]).
    batch = pack_rows([[Example([5, 6], [1, 2]), Example([7], [3])]], row_len=6)
    assert batch.labels.tolist() == [[IGNORE_INDEX, 1, 2, 3, IGNORE_INDEX, IGNORE_INDEX]]
    vocab = 4
    logits = torch.zeros(1, 6, vocab)
    logits[0, 1, 1] = 2.0  # A's first response token: right
    logits[0, 2, 0] = 2.0  # A's second: wrong (predicts 0, label 2)
    logits[0, 3, 3] = 2.0  # B's only token: right
    output = language_model_loss(FixedLogits(logits), batch)
    log_softmax = torch.log_softmax(torch.tensor([2.0, 0, 0, 0]), 0)
    right, wrong = -log_softmax[0].item(), -log_softmax[1].item()
    assert math.isclose(output.loss.item(), (right + wrong + right) / 3, rel_tol=1e-6)
    assert (int(output.label_tokens), int(output.correct_tokens)) == (3, 2)
    assert (int(output.examples), int(output.correct_examples)) == (2, 1)
    assert math.isclose(output.token_accuracy, 2 / 3)
    assert output.exact_accuracy == 0.5


def test_instruction_loss_labels_the_instruction_and_attends_causally():
    batch = pack_rows([[Example([5, 6, 7], [1, 2])]], row_len=4, instruction_loss=True)
    assert batch.labels.tolist() == [[6, 7, 1, 2]]
    assert not batch.prefix_mask.any()


def test_global_example_ids_number_examples_across_rows():
    segments = torch.tensor([[0, 0, 1, -1], [0, 1, 1, 2], [-1, -1, -1, -1], [0, 0, 0, 0]])
    assert global_example_ids(segments).tolist() == [[0, 0, 1, -1], [2, 3, 3, 4], [-1] * 4, [5] * 4]


def overfit(net: str, steps: int) -> list[float]:
    """Train a tiny net on 32 fixed examples; return exact accuracy after each step."""
    torch.manual_seed(0)
    config = load_model_config("tiny", net, vocab_size=32, hidden_size=64, n_heads=2)
    model = build_model(config)
    generator = torch.Generator().manual_seed(0)
    examples = []
    for _ in range(32):
        instruction = torch.randint(
            3, 32, (int(torch.randint(2, 6, (1,), generator=generator)),), generator=generator
        ).tolist()
        # Responses are random: only memorising each example gets it exactly right.
        response = torch.randint(
            3, 32, (int(torch.randint(1, 5, (1,), generator=generator)),), generator=generator
        ).tolist()
        examples.append(Example([1] + instruction, response + [2]))
    rows = [examples[i : i + 4] for i in range(0, 32, 4)]
    batch: PackedBatch = pack_rows(rows, row_len=max(sum(e.packed_len for e in row) for row in rows))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    history = []
    for _ in range(steps):
        output = language_model_loss(model, batch, bp_steps=5)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        history.append(output.exact_accuracy)
        if output.exact_accuracy == 1.0:
            break
    return history


def test_tiny_hrm_overfits_32_examples():
    assert overfit("hrm", steps=300)[-1] == 1.0


def test_tiny_transformer_overfits_32_examples():
    assert overfit("transformer", steps=300)[-1] == 1.0


def test_the_chunked_head_gives_the_unchunked_loss_and_gradients():
    torch.manual_seed(0)
    hidden_NC = torch.randn(37, 16, requires_grad=True)
    weight_VC = torch.randn(50, 16, requires_grad=True)
    targets_N = torch.randint(0, 50, (37,))
    whole = head_loss(hidden_NC, weight_VC, targets_N)
    whole.loss_sum.backward()
    grads = hidden_NC.grad.clone(), weight_VC.grad.clone()
    hidden_NC.grad = weight_VC.grad = None
    chunked = head_loss(hidden_NC, weight_VC, targets_N, chunk_logits=50 * 8)  # 5 chunks of 8 tokens
    chunked.loss_sum.backward()
    assert torch.equal(chunked.correct_N, whole.correct_N)
    torch.testing.assert_close(chunked.loss_sum, whole.loss_sum)
    torch.testing.assert_close(hidden_NC.grad, grads[0])
    torch.testing.assert_close(weight_VC.grad, grads[1])
