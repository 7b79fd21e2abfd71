"""RequestSet: Poisson arrivals, fixed and sampled sizes, validation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.config import RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError
from greenllm.workloads import RequestSet, poisson_arrivals_s

P50 = RequestSize(input_tokens=160, output_tokens=140)


def test_an_hour_at_10_qps_has_about_36000_requests_of_the_fixed_size() -> None:
    rs = RequestSet.poisson(10, P50, duration_s=3600, seed=1)
    assert abs(len(rs) - 36_000) < 4 * np.sqrt(36_000)  # Poisson: sd = sqrt(mean)
    assert rs.arrival_s[-1] < 3600 and np.all(np.diff(rs.arrival_s) >= 0)
    assert set(rs.input_tokens.tolist()) == {160} and set(rs.output_tokens.tolist()) == {140}


def test_poisson_gaps_are_exponential_with_the_right_mean() -> None:
    gaps = np.diff(poisson_arrivals_s(4.0, n=50_000, seed=2))
    assert gaps.mean() == pytest.approx(0.25, rel=0.02)
    assert gaps.std() == pytest.approx(0.25, rel=0.03)  # exponential: sd = mean


def test_sampled_sizes_follow_the_distribution_and_the_seed() -> None:
    dist = RequestSizeDistribution(
        p25=RequestSize(input_tokens=24, output_tokens=24), p50=P50,
        p75=RequestSize(input_tokens=510, output_tokens=357),
    )  # fmt: skip
    rs = RequestSet.poisson(20, dist, n=20_000, seed=3)
    assert np.median(rs.input_tokens) == pytest.approx(160, rel=0.05)
    assert np.median(rs.output_tokens) == pytest.approx(140, rel=0.05)
    assert RequestSet.poisson(20, dist, n=10, seed=3) == RequestSet.poisson(20, dist, n=10, seed=3)
    assert RequestSet.poisson(20, dist, n=10, seed=4) != RequestSet.poisson(20, dist, n=10, seed=3)


@given(st.floats(0.01, 100), st.integers(0, 200), st.integers(0, 10_000))
def test_n_requests_are_sorted_and_positive(qps: float, n: int, seed: int) -> None:
    rs = RequestSet.poisson(qps, P50, n=n, seed=seed)
    assert len(rs) == n
    assert np.all(np.diff(rs.arrival_s) >= 0) and (n == 0 or rs.arrival_s[0] > 0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: poisson_arrivals_s(0, n=3), "qps = 0"),
        (lambda: poisson_arrivals_s(1), "exactly one of duration_s or n"),
        (lambda: poisson_arrivals_s(1, duration_s=-1), "duration_s = -1"),
        (lambda: RequestSet(np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 1])), "sorted"),
        (lambda: RequestSet(np.array([1.0]), np.array([0]), np.array([1])), ">= 1"),
        (lambda: RequestSet(np.array([1.0]), np.array([1, 2]), np.array([1])), "one length"),
        (
            lambda: RequestSet(np.array([1.0]), np.array([1]), np.array([1]), ("a", "b")),
            "2 prompts",
        ),
    ],
)
def test_bad_request_sets_are_config_errors(call, message) -> None:
    with pytest.raises(ConfigError, match=message):
        call()
