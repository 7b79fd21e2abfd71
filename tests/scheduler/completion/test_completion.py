"""Collaborative filtering: conformance of every estimator, recovery, transforms, uncertainty.

Hypothesis strategies here (``masked_matrices``) may be reused by other tests.
"""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import BackendUnavailableError, ConfigError
from greenllm.scheduler import (
    METHODS,
    SurpriseSVD,
    complete,
    complete_attainment,
    complete_carbon,
    complete_with_uncertainty,
    select_rank,
    surprise_available,
)
from greenllm.scheduler.completion.base import Observed, censored_residual, validate_matrix
from greenllm.scheduler.completion.complete import make_estimator
from greenllm.scheduler.completion.numerics import sample_rows, split_folds
from greenllm.scheduler.completion.transforms import get_transform
from tests.extras import needs

NEEDS_SURPRISE = needs("surprise")
ALL_METHODS = [
    pytest.param(m, marks=NEEDS_SURPRISE) if m == "surprise" else m for m in sorted(METHODS)
]
FAST = {"sgd": {"rank": 2}, "als": {"rank": 2}, "softimpute": {"rank": 2}, "surprise": {"rank": 2}}


def low_rank(n: int, m: int, rank: int, density: float, seed: int, noise: float = 0.0):
    """A rank-``rank`` matrix and a mask with every row and column observed."""
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, m))
    full += noise * rng.normal(size=(n, m))
    mask = rng.random((n, m)) < density
    mask[np.arange(n), rng.integers(0, m, n)] = True
    mask[rng.integers(0, n, m), np.arange(m)] = True
    return full, mask


@st.composite
def masked_matrices(draw, min_side: int = 3, max_side: int = 12) -> np.ndarray:
    """A float matrix with NaN holes, every row and column holding at least one value."""
    n = draw(st.integers(min_side, max_side))
    m = draw(st.integers(min_side, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rank = draw(st.integers(1, 3))
    density = draw(st.floats(0.3, 0.95))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = draw(st.sampled_from([0.0, 5.0, -100.0]))
    full, mask = low_rank(n, m, rank, density, seed, noise=0.1)
    return np.where(mask, offset + scale * full, np.nan)


# ---------------------------------------------------------------- conformance (every method)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_estimator_conformance(method: str) -> None:
    full, mask = low_rank(20, 8, 2, 0.6, seed=1, noise=0.05)
    x = np.where(mask, full, np.nan)
    est = make_estimator(method, FAST.get(method, {}).get("rank"), seed=3)
    with pytest.raises(ConfigError, match="before fit"):
        est.predict()
    assert est.fit(x) is est
    pred = est.predict()
    assert pred.shape == x.shape and np.isfinite(pred).all()
    rows, cols = np.array([0, 5, 19]), np.array([7, 0, 3])
    np.testing.assert_allclose(est.predict(rows, cols), pred[rows, cols], rtol=1e-5, atol=1e-6)
    again = make_estimator(method, FAST.get(method, {}).get("rank"), seed=3).fit(x).predict()
    np.testing.assert_array_equal(pred, again)  # deterministic for a seed
    doc = type(est).__doc__ or ""
    assert "r_ij" in doc or "S_lambda" in doc  # the docstring gives the model equation
    assert "random_state=3" in repr(est)
    with pytest.raises(ConfigError, match="out of range"):
        est.predict([20], [0])


@pytest.mark.parametrize("method", ALL_METHODS)
def test_complete_keeps_observed_and_fills_finite(method: str) -> None:
    full, mask = low_rank(25, 10, 2, 0.5, seed=2, noise=0.1)
    x = np.where(mask, 3.0 + full, np.nan)
    out = complete(x, method=method, **FAST.get(method, {}))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[mask], x[mask])
    if method in ("mean", "bias", "surprise"):
        return  # baselines; Surprise's default step (lr 0.005, 20 epochs) underfits here
    # every factor model of ours beats the column mean on the hidden cells of a rank-2 matrix
    hidden = ~mask
    base = complete(x, method="mean")
    err = np.sqrt(np.mean((out[hidden] - 3.0 - full[hidden]) ** 2))
    base_err = np.sqrt(np.mean((base[hidden] - 3.0 - full[hidden]) ** 2))
    assert err <= 0.9 * base_err


@settings(max_examples=25, deadline=None)
@given(x=masked_matrices(), method=st.sampled_from(["sgd", "als", "softimpute", "bias", "mean"]))
def test_property_observed_entries_kept_output_finite(x: np.ndarray, method: str) -> None:
    out = complete(x, method=method, **FAST.get(method, {}))
    observed = ~np.isnan(x)
    assert out.shape == x.shape and np.isfinite(out).all()
    np.testing.assert_array_equal(out[observed], x[observed])


@settings(max_examples=10, deadline=None)
@given(x=masked_matrices(), seed=st.integers(0, 1000))
def test_property_deterministic_for_a_seed(x: np.ndarray, seed: int) -> None:
    a = complete(x, "sgd", rank=2, seed=seed)
    b = complete(x, "sgd", rank=2, seed=seed)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- recovery and rank choice


@pytest.mark.parametrize(
    ("method", "shape", "tol"),
    [("sgd", (60, 20), 0.02), ("als", (60, 20), 0.02), ("softimpute", (100, 40), 0.05)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_noiseless_rank2_at_half_density(method, shape, tol, seed) -> None:
    full, mask = low_rank(*shape, rank=2, density=0.5, seed=seed)
    out = complete(np.where(mask, full, np.nan), method=method, seed=seed)
    hidden = ~mask
    rel = np.linalg.norm(out[hidden] - full[hidden]) / np.linalg.norm(full[hidden])
    assert rel < tol, f"{method}: relative error {rel:.4f} on hidden cells"


@pytest.mark.parametrize("method", ["sgd", "als"])
def test_select_rank_finds_true_rank(method: str) -> None:
    full, mask = low_rank(80, 16, 3, 0.6, seed=4, noise=0.01)
    search = select_rank(np.where(mask, full, np.nan), method)
    assert search.rank == 3
    assert search.errors[3] < search.errors[1] / 4  # rank 1 cannot fit a rank-3 matrix
    assert search.entries is not None and search.residuals is not None
    assert search.residuals.shape == (search.entries.size,)


def test_large_matrix_path_samples_rows_and_folds_in() -> None:
    full, mask = low_rank(400, 30, 2, 0.4, seed=5, noise=0.01)
    x = np.where(mask, full, np.nan)
    hidden = ~mask
    errs = {}
    for cap in (500, 100_000):  # 500 entries forces the sample + fold-in path
        out = complete(x, "sgd", rank=2, reg=0.1, max_sgd_entries=cap)
        errs[cap] = np.linalg.norm(out[hidden] - full[hidden]) / np.linalg.norm(full[hidden])
    assert errs[500] < 0.05 and errs[100_000] < 0.05


def test_rank_free_methods_return_no_rank() -> None:
    full, mask = low_rank(10, 5, 1, 0.7, seed=0)
    for method in ("mean", "bias", "softimpute"):
        assert select_rank(np.where(mask, full, np.nan), method).rank is None


# ---------------------------------------------------------------- transforms


def test_complete_carbon_is_positive_and_exact_on_multiplicative_matrix() -> None:
    rng = np.random.default_rng(0)
    carbon = np.exp(rng.normal(size=(40, 1)) + rng.normal(size=(1, 12)))  # rank 1 in log space
    mask = rng.random(carbon.shape) < 0.5
    mask[:, 0] = mask[0, :] = True
    out = complete_carbon(np.where(mask, carbon, np.nan), rank=1, reg=0.01)
    assert (out > 0).all()
    np.testing.assert_allclose(out[~mask], carbon[~mask], rtol=0.01)
    default = complete_carbon(np.where(mask, carbon, np.nan))  # rank and reg by CV
    np.testing.assert_allclose(default[~mask], carbon[~mask], rtol=0.02)
    with pytest.raises(ConfigError, match=r"matrix\[0, 0\] = -1.0.*log.*> 0"):
        complete_carbon(np.where(mask, -1.0, np.nan))


def test_complete_attainment_stays_in_unit_interval_and_beats_identity() -> None:
    rng = np.random.default_rng(1)
    qps = np.linspace(0.5, 8, 30)[:, None]
    cap = rng.uniform(2, 7, 10)[None, :]
    att = 1 / (1 + np.exp(qps - cap))  # logistic in QPS: logit is cap_j - qps_i
    mask = rng.random(att.shape) < 0.5
    mask[:, 0] = mask[0, :] = True
    x = np.where(mask, att, np.nan)
    out = complete_attainment(x)
    assert ((out >= 0) & (out <= 1)).all()
    np.testing.assert_array_equal(out[mask], att[mask])
    rmse = np.sqrt(np.mean((out[~mask] - att[~mask]) ** 2))
    plain = np.clip(complete(x), 0, 1)
    assert rmse < 0.04
    assert rmse < np.sqrt(np.mean((plain[~mask] - att[~mask]) ** 2))
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        complete_attainment(np.where(mask, 1.5, np.nan))


def test_logit_marks_clipped_cells_as_censored() -> None:
    t = get_transform("logit")
    np.testing.assert_array_equal(
        t.censor(np.array([0.0, 0.0005, 0.5, 0.9995, 1.0])), [-1, -1, 0, 1, 1]
    )
    assert t.censor(np.array([0.2, 0.7])) is None
    assert get_transform("log").censor(np.array([1.0])) is None
    # no error past a one-sided bound, the full error on its wrong side and on exact entries
    resid = np.array([-1.0, 1.0, -1.0, 1.0, -1.0])
    cens = np.array([1, 1, -1, -1, 0], dtype=np.int8)
    np.testing.assert_array_equal(censored_residual(resid, cens), [0.0, 1.0, -1.0, 0.0, -1.0])
    obs = Observed(np.array([0, 1]), np.array([1, 0]), np.array([1.0, 2.0]), (2, 2), cens[:2])
    assert obs.subset(np.array([1])).censor.tolist() == [1]


@pytest.mark.parametrize("method", ["sgd", "als"])
def test_censored_plateau_does_not_bend_the_fit(method: str) -> None:
    # logit(att) = 4 (cap_j - qps_i) spans +-28: most cells are clipped to 0.999 or 0.001
    rng = np.random.default_rng(3)
    qps = np.linspace(0, 8, 40)[:, None]
    logit = 4.0 * (rng.uniform(1, 7, 12)[None, :] - qps)
    att = 1 / (1 + np.exp(-logit))
    mask = rng.random(att.shape) < 0.6
    mask[:, 0] = mask[0, :] = True
    out = complete(np.where(mask, att, np.nan), method, rank=1, transform="logit", reg=0.01)
    cliff = ~mask & (att > 0.05) & (att < 0.95)  # hidden cells on the cliffs
    assert cliff.sum() >= 5
    assert np.sqrt(np.mean((out[cliff] - att[cliff]) ** 2)) < 0.1  # 0.25 without censoring


# ---------------------------------------------------------------- uncertainty


def test_uncertainty_is_zero_on_observed_and_covers_errors() -> None:
    rng = np.random.default_rng(7)
    full, mask = low_rank(120, 16, 2, 0.4, seed=7, noise=0.0)
    noisy = full + 0.2 * rng.normal(size=full.shape)
    res = complete_with_uncertainty(np.where(mask, noisy, np.nan), "sgd")
    assert res.rank is not None and res.transform == "identity"
    np.testing.assert_array_equal(res.stderr[mask], 0.0)
    np.testing.assert_array_equal(res.observed_mask, mask)
    hidden = ~mask
    assert (res.stderr[hidden] > 0).all() and np.isfinite(res.stderr).all()
    z = np.abs(res.values[hidden] - noisy[hidden]) / res.stderr[hidden]
    coverage = float(np.mean(z <= 2.0))
    assert 0.85 <= coverage <= 1.0, coverage  # +-2 sigma covers most held-out truths


def test_uncertainty_in_attainment_units() -> None:
    rng = np.random.default_rng(2)
    qps = np.linspace(0.5, 8, 40)[:, None]
    att = 1 / (1 + np.exp(2 * (qps - rng.uniform(2, 7, 8)[None, :])))
    mask = rng.random(att.shape) < 0.5
    mask[:, 0] = mask[0, :] = True
    res = complete_with_uncertainty(np.where(mask, att, np.nan), rank=2, transform="logit")
    assert ((res.values >= 0) & (res.values <= 1)).all()
    assert (res.stderr <= 0.5).all()  # half-width of an interval inside [0, 1]
    assert (res.stderr[~mask] > 0).all()


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("matrix", "pattern"),
    [
        (np.ones(3), "2-D"),
        ([[1.0, np.inf], [1.0, 2.0]], r"\[0, 1\].*infinite"),
        ([[1.0]], "at least 2"),
        ([["a", "b"]], "2-D array of floats"),
    ],
)
def test_bad_matrices_raise_config_error(matrix, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        complete(matrix)


@pytest.mark.parametrize(
    ("matrix", "pattern"),
    [
        ([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]], "row 1 has no observed"),
        ([[1.0, np.nan], [2.0, np.nan]], "column 1 has no observed"),
    ],
)
def test_strict_validation_still_names_empty_rows_and_columns(matrix, pattern: str) -> None:
    # complete() fills them (test_safe_defaults.py); the strict checks stay for select_rank
    with pytest.raises(ConfigError, match=pattern):
        validate_matrix(matrix)
    with pytest.raises(ConfigError, match=pattern):
        select_rank(matrix)


def test_unknown_method_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"method = 'svd'.*'als'.*'sgd'"):
        complete([[1.0, 2.0], [3.0, np.nan]], method="svd")
    with pytest.raises(ConfigError, match="transform"):
        complete([[1.0, 2.0], [3.0, np.nan]], transform="sqrt")
    with pytest.raises(ConfigError, match="rank"):
        complete([[1.0, 2.0], [3.0, np.nan]], method="als", rank=0)


# ---------------------------------------------------------------- helpers


@settings(max_examples=40, deadline=None)
@given(x=masked_matrices(min_side=2), k=st.integers(1, 6), seed=st.integers(0, 99))
def test_split_folds_never_empties_a_row_or_column(x: np.ndarray, k: int, seed: int) -> None:
    obs = Observed.from_matrix(validate_matrix(x))
    folds = split_folds(obs, k, np.random.default_rng(seed))
    for f in range(k):
        train = obs.subset(folds != f)
        assert np.unique(train.rows).size == obs.shape[0]
        assert np.unique(train.cols).size == obs.shape[1]
    free = folds[folds >= 0]
    if free.size >= k:  # round-robin: fold sizes differ by at most one
        sizes = np.bincount(free, minlength=k)
        assert sizes.max() - sizes.min() <= 1


@settings(max_examples=40, deadline=None)
@given(x=masked_matrices(min_side=2), target=st.integers(1, 200), seed=st.integers(0, 99))
def test_sample_rows_covers_every_column(x: np.ndarray, target: int, seed: int) -> None:
    obs = Observed.from_matrix(validate_matrix(x))
    rows = sample_rows(obs, target, np.random.default_rng(seed))
    assert np.all(np.diff(rows) > 0)
    assert (~np.isnan(x[rows])).any(axis=0).all()
    assert (~np.isnan(x[rows])).sum() >= min(target, obs.size)


# ---------------------------------------------------------------- Surprise adapter


@NEEDS_SURPRISE
def test_surprise_adapter_matches_surprise_predict() -> None:
    full, mask = low_rank(15, 6, 2, 0.6, seed=3)
    est = SurpriseSVD(rank=4, random_state=0).fit(np.where(mask, full, np.nan))
    pred = est.predict()
    for i, j in [(0, 0), (3, 5), (14, 2)]:
        assert pred[i, j] == pytest.approx(est.algo_.predict(i, j, clip=False).est, abs=1e-9)


def test_surprise_missing_raises_backend_unavailable(monkeypatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "surprise":
            raise ImportError("no surprise")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "surprise", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(BackendUnavailableError, match=r"greenllm\[cf\]"):
        SurpriseSVD(rank=2).fit([[1.0, 2.0], [3.0, np.nan]])
    assert not surprise_available()
