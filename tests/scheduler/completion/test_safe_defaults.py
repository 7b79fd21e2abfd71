"""The safe default of ``complete(matrix)``: the transform is chosen from the data, and rows and
columns without any observation are filled from the biases and marked maximally uncertain."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.scheduler import complete, complete_with_uncertainty
from greenllm.scheduler.completion.complete import auto_transform

FAST = {"rank": 2}


@st.composite
def positive_matrices(draw, min_side: int = 3, max_side: int = 10) -> np.ndarray:
    """An all-positive matrix (a carbon matrix) with NaN holes, possibly empty rows/columns."""
    n = draw(st.integers(min_side, max_side))
    m = draw(st.integers(min_side, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-6, 1e-2, 1.0, 1e4]))
    spread = draw(st.floats(0.1, 3.0))
    full = scale * np.exp(spread * rng.normal(size=(n, 2)) @ rng.normal(size=(2, m)))
    mask = rng.random((n, m)) < draw(st.floats(0.1, 0.9))
    mask[0, 0] = mask[min(1, n - 1), min(1, m - 1)] = True  # at least 2 observed entries
    if draw(st.booleans()):
        mask[n - 1, :] = False  # a workload never profiled
    if draw(st.booleans()):
        mask[:, m - 1] = False  # a configuration never profiled
    mask[0, 0] = True
    if not mask[mask.any(axis=1)][:, mask.any(axis=0)].sum() >= 2:
        mask[0, 0] = mask[0, min(1, m - 2)] = True
    return np.where(mask, full, np.nan)


@settings(max_examples=40, deadline=None)
@given(positive_matrices(), st.sampled_from(["sgd", "als", "bias"]))
def test_property_all_positive_never_negative_and_observed_kept(x: np.ndarray, method) -> None:
    out = complete(x, method, **(FAST if method != "bias" else {}))
    obs = ~np.isnan(x)
    assert np.isfinite(out).all()
    assert (out >= 0).all()  # never negative (log space; exp may underflow to 0 at worst)
    np.testing.assert_allclose(out[obs], x[obs], rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(positive_matrices())
def test_property_default_call_rank_search(x: np.ndarray) -> None:
    out = complete(x)  # the default call: sgd, rank by CV, transform from the data
    obs = ~np.isnan(x)
    assert np.isfinite(out).all() and (out >= 0).all()
    np.testing.assert_allclose(out[obs], x[obs], rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(positive_matrices())
def test_property_unobserved_rows_and_columns_are_maximally_uncertain(x: np.ndarray) -> None:
    res = complete_with_uncertainty(x, **FAST)
    obs = ~np.isnan(x)
    empty_r = np.flatnonzero(~obs.any(axis=1)).tolist()
    empty_c = np.flatnonzero(~obs.any(axis=0)).tolist()
    assert list(res.empty_rows) == empty_r and list(res.empty_cols) == empty_c
    assert res.transform == "log"
    bad = res.unsupported_mask
    assert np.isinf(res.stderr[bad]).all() and np.isinf(res.sigma_transformed[bad]).all()
    assert np.isfinite(res.stderr[~bad]).all()
    assert np.isfinite(res.values).all() and (res.values >= 0).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 10), st.integers(3, 10), st.integers(0, 2**32 - 1))
def test_property_unit_interval_with_zeros_uses_logit_and_stays_in_it(n, m, seed) -> None:
    rng = np.random.default_rng(seed)
    att = rng.uniform(0, 1, (n, m))
    att[0, 0] = 0.0
    mask = rng.random((n, m)) < 0.6
    mask[0, 0] = mask[n - 1, m - 1] = True
    mask[np.arange(n), rng.integers(0, m, n)] = True
    x = np.where(mask, att, np.nan)
    out = complete(x, **FAST)
    assert ((out >= 0) & (out <= 1)).all()
    np.testing.assert_array_equal(out[mask], att[mask])


def test_carbon_matrix_default_has_no_negative_entry() -> None:
    # the example: a carbon matrix with the old identity default came back negative
    rng = np.random.default_rng(3)
    carbon = np.exp(-3 + 1.5 * rng.normal(size=(40, 1)) + rng.normal(size=(1, 9)))
    mask = rng.random(carbon.shape) < 0.3
    mask[np.arange(40), rng.integers(0, 9, 40)] = True
    mask[0, :] = True
    x = np.where(mask, carbon, np.nan)
    assert (complete(x) > 0).all()
    assert complete_with_uncertainty(x).transform == "log"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.5, 2.0, np.nan], "log"),
        ([0.01, 0.2, 1.0], "log"),  # all positive wins (carbon per token is often < 1)
        ([0.0, 0.5, 1.0], "logit"),
        ([0.0, 0.0, np.nan], "logit"),
        ([-1.0, 2.0], "identity"),
        ([0.0, 2.0], "identity"),
    ],
)
def test_auto_transform(values, expected: str) -> None:
    assert auto_transform(np.array(values)) == expected


def test_empty_row_is_filled_from_the_column_biases() -> None:
    x = np.array([[1.0, 10.0], [2.0, 20.0], [np.nan, np.nan]])
    res = complete_with_uncertainty(x, method="bias")
    assert res.empty_rows == (2,) and res.empty_cols == ()
    # a row without data gets mu + c_j (shrunk column biases, log space): order kept
    assert 1.0 < res.values[2, 1] / res.values[2, 0] <= 10.0
    assert res.values[2, 0] >= 1.0 and res.values[2, 1] <= 20.0
    assert np.isinf(res.stderr[2]).all()


def test_explicit_transform_is_kept() -> None:
    x = np.array([[1.0, 2.0], [3.0, np.nan]])
    assert complete_with_uncertainty(x, rank=1, transform="identity").transform == "identity"
