import math

import pytest
import torch

from frugal_lm.data.records import Record
from frugal_lm.evals.loglikelihood import fit_to_context, score_responses
from frugal_lm.infer.loading import load_model
from frugal_lm.model.attention import AttentionLayout


def hand_logprob(model, instruction, response):
    """Sum of log p(response token) from the model's full logits on the lone example, with the
    log-softmax written out by hand (max-shifted log-sum-exp, float64)."""
    P, R = len(instruction), len(response)
    inputs = torch.tensor([[*instruction, *response[:-1]]])
    layout = AttentionLayout.from_lengths([[(P, R - 1)]], P + R - 1)
    with torch.no_grad():
        logits = model(inputs, torch.arange(P + R - 1)[None], layout)[0].double()
    total, greedy = 0.0, True
    for j, token in enumerate(response):
        row = logits[P - 1 + j].tolist()
        peak = max(row)
        log_normaliser = peak + math.log(sum(math.exp(x - peak) for x in row))
        total += row[token] - log_normaliser
        greedy &= max(range(len(row)), key=row.__getitem__) == token
    return total, greedy


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run)


def test_batched_scores_match_hand_computed_log_softmax(loaded):
    tokenizer = loaded.tokenizer
    records = [
        Record("What is 12 + 7?", "19", ("direct",)),
        Record("Reverse the string: abcdef", "fedcba", ("direct",)),
        Record("What is 1 + 1?", "a much longer wrong answer", ("direct",)),
        Record("x", "y", ("cot",)),
        Record("What is 3 + 4?", "7", ("direct",)),
    ]
    pairs = tokenizer.encode_records(records)
    scores = score_responses(loaded.model, pairs, tokenizer.special_ids["pad"], batch_size=3)  # padded batches
    for (instruction, response), score in zip(pairs, scores):
        expected, greedy = hand_logprob(loaded.model, instruction, response)
        assert score.logprob == pytest.approx(expected, abs=1e-4)
        assert score.is_greedy == greedy and score.tokens == len(response)


def test_greedy_continuation_is_flagged_greedy(loaded):
    tokenizer = loaded.tokenizer
    instruction = tokenizer.encode_records([Record("What is 5 + 5?", "x", ("direct",))])[0][0]
    response = []
    for _ in range(3):  # build the argmax continuation token by token
        probe = response + [0]
        P = len(instruction)
        layout = AttentionLayout.from_lengths([[(P, len(probe) - 1)]], P + len(probe) - 1)
        with torch.no_grad():
            logits = loaded.model(
                torch.tensor([[*instruction, *probe[:-1]]]), torch.arange(P + len(probe) - 1)[None], layout
            )[0]
        response.append(int(logits[-1].argmax()))
    pad = tokenizer.special_ids["pad"]
    assert score_responses(loaded.model, [(instruction, response)], pad)[0].is_greedy
    wrong = response[:-1] + [(response[-1] + 1) % loaded.config.vocab_size]
    assert not score_responses(loaded.model, [(instruction, wrong)], pad)[0].is_greedy


def test_fit_to_context_keeps_head_tail_and_eoq():
    instruction = [1, 2, 10, 11, 12, 13, 3]  # BOQ, condition, text..., EOQ
    assert fit_to_context(instruction, [7, 8], 8, keep_head=2) == (instruction, [7, 8])
    assert fit_to_context(instruction, [7, 8], 6, keep_head=2) == ([1, 2, 12, 13, 3], [7, 8])
    # nothing left to drop from the instruction: the response is cut last
    assert fit_to_context(instruction, [7, 8, 9], 3, keep_head=2) == ([1, 2, 3], [7])
