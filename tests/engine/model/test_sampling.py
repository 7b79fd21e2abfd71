"""SamplingParams validation, probs_from_logits (greedy, temperature, top-p) and sample()."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from greenllm.errors import ConfigError
from tests.extras import require

torch = require("torch")

from greenllm.engine import SamplingParams, probs_from_logits, sample
from greenllm.engine.model.sampling import sample_row, uniform


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 2.0}, "max_tokens"),
        ({"seed": "x"}, "seed"),
        ({"stop_token_ids": (-1,)}, "stop_token_ids"),
    ],
)
def test_params_validation_names_the_field(kwargs: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        SamplingParams(**kwargs)


def test_params_defaults_and_generator() -> None:
    p = SamplingParams(stop_token_ids=[2, 3])
    assert p.greedy and p.top_p == 1.0 and p.max_tokens == 64 and p.stop_token_ids == (2, 3)
    assert p.generator() is None
    a, b = SamplingParams(seed=7).generator(), SamplingParams(seed=7).generator()
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))


def test_greedy_is_one_hot_with_ties_to_lowest_index() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0]])
    probs = probs_from_logits(logits, SamplingParams())
    assert probs.tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]


def test_temperature_matches_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    probs = probs_from_logits(logits, SamplingParams(temperature=0.5))
    expected = np.exp([4.0, 2.0, 0.0, -2.0]) / np.exp([4.0, 2.0, 0.0, -2.0]).sum()
    np.testing.assert_allclose(probs.numpy(), expected, rtol=1e-6)


def test_top_p_keeps_the_nucleus_and_renormalises() -> None:
    logits = torch.tensor([0.3, 0.05, 0.5, 0.15]).log()
    probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.75))
    np.testing.assert_allclose(probs.numpy(), [0.375, 0, 0.625, 0], atol=1e-6)
    # a tiny top_p still keeps the most likely token
    probs = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=1e-6))
    assert probs.tolist() == [0, 0, 1, 0]


@given(st.lists(st.floats(-20, 20), min_size=1, max_size=12), st.floats(0.05, 3.0),
       st.floats(0.01, 1.0))
def test_probs_are_a_distribution_containing_the_argmax(
    values: list[float], temperature: float, top_p: float
) -> None:
    logits = torch.tensor(values)
    probs = probs_from_logits(logits, SamplingParams(temperature=temperature, top_p=top_p))
    assert abs(float(probs.sum()) - 1) < 1e-5 and bool((probs >= 0).all())
    assert probs[int(logits.argmax())] > 0


def test_sample_matches_distribution() -> None:
    probs = torch.tensor([0.1, 0.0, 0.4, 0.2, 0.3])
    g = torch.Generator().manual_seed(0)
    draws = [sample(probs, g) for _ in range(20_000)]
    counts = np.bincount(draws, minlength=5)
    assert counts[1] == 0
    keep = probs.numpy() > 0
    assert chisquare(counts[keep], 20_000 * probs.numpy()[keep]).pvalue > 1e-3


def test_one_hot_consumes_no_randomness_and_rows_in_2d() -> None:
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert sample(torch.tensor([0.0, 0.0, 1.0]), g) == 2
    assert torch.equal(g.get_state(), state)
    rows = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sample(rows, g).tolist() == [1, 0]
    with pytest.raises(ConfigError, match="shape"):
        sample(torch.zeros(1, 2, 3), g)


def test_sample_row_accepts_unnormalised_rows_and_numpy_generators() -> None:
    rng = np.random.default_rng(0)
    draws = [sample_row(torch.tensor([0.0, 2.0, 0.0, 6.0]), rng) for _ in range(4000)]
    assert set(draws) == {1, 3}
    assert 0.7 < draws.count(3) / 4000 < 0.8
    assert 0 <= uniform(rng) < 1
    with pytest.raises(ConfigError, match="generator"):
        uniform("not a generator")
