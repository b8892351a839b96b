import math

import pytest
import torch

from frugal_lm.errors import FrugalError
from frugal_lm.infer.sampling import SamplingParams, filtered_logits, request_generator, sample_token

LOGITS = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))  # probabilities by token id


def kept(params):
    return set(torch.nonzero(torch.isfinite(filtered_logits(LOGITS, params))).flatten().tolist())


def test_top_k_keeps_the_k_most_likely():
    assert kept(SamplingParams(temperature=1.0, top_k=2)) == {1, 3}
    assert kept(SamplingParams(temperature=1.0, top_k=0)) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    "top_p, expected",
    [
        (0.3, {1}),
        (0.39, {1}),
        (0.41, {1, 3}),
        (0.69, {1, 3}),
        (0.71, {1, 3, 4}),
        (0.9, {1, 2, 3, 4}),
        (1.0, {0, 1, 2, 3, 4}),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    # Brute force by hand: sorted probabilities 0.4, 0.3, 0.15, 0.1, 0.05.
    assert kept(SamplingParams(temperature=1.0, top_p=top_p)) == expected


def test_temperature_scales_the_distribution():
    logits = filtered_logits(LOGITS, SamplingParams(temperature=0.5))
    probabilities = torch.softmax(logits, -1)
    expected = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]) ** 2
    torch.testing.assert_close(probabilities, expected / expected.sum())


def test_sampling_follows_the_filtered_distribution_and_seeds_reproduce():
    params = SamplingParams(temperature=1.0, top_k=3, seed=7)
    generator = request_generator(params, torch.device("cpu"))
    draws = [sample_token(LOGITS, params, generator) for _ in range(3000)]
    assert set(draws) <= {1, 3, 4}
    # Frequencies within 5 standard deviations of the renormalised top-3 probabilities.
    for token, probability in {1: 0.4 / 0.85, 3: 0.3 / 0.85, 4: 0.15 / 0.85}.items():
        frequency = draws.count(token) / len(draws)
        assert abs(frequency - probability) < 5 * math.sqrt(probability * (1 - probability) / len(draws))
    again = request_generator(params, torch.device("cpu"))
    assert [sample_token(LOGITS, params, again) for _ in range(3000)] == draws


def test_greedy_is_argmax():
    assert sample_token(LOGITS, SamplingParams(), request_generator(SamplingParams(), torch.device("cpu"))) == 1


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", 0),
        ("temperature", -0.1),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
    ],
)
def test_invalid_parameters_name_the_field(field, value):
    with pytest.raises(FrugalError, match=field):
        SamplingParams(**{field: value}).validate()
