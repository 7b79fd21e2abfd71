"""Collaborative-filtering building blocks: input validation, the estimator base class, baselines.

Every completion method is an estimator in the Surprise / scikit-learn shape (Section 4.3 of the
paper fills the sparse carbon and SLO-attainment matrices by collaborative filtering): the
hyperparameters go to ``__init__`` (with ``random_state``), ``fit(matrix)`` learns from the
observed (non-NaN) entries of a 2-D matrix and returns ``self``, ``predict()`` returns the full
model matrix (or ``predict(rows, cols)`` the given cells). Rows are workloads (application x
QPS), columns are configurations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np

from greenllm.errors import ConfigError

__all__ = [
    "BiasBaseline",
    "ColumnMean",
    "CompletionEstimator",
    "FactorModel",
    "Hyperparameter",
    "Observed",
    "censored_residual",
    "fit_biases",
    "validate_matrix",
]

logger = logging.getLogger(__name__)

Hyperparameter: TypeAlias = float | int | bool | None
"""A value of an estimator's constructor keyword (``reg=0.1``, ``refit=False``, ...)."""


def validate_matrix(
    matrix: object, name: str = "matrix", *, allow_empty: bool = False
) -> np.ndarray:
    """Return ``matrix`` as a float64 copy after checking it can be completed.

    Raises :class:`ConfigError` for: not 2-D, non-numeric, +-inf (naming the cell), a row or a
    column with no observed entry (naming it; unless ``allow_empty``: :func:`complete` fills
    such rows and columns from the biases), or fewer than 2 observed entries.
    """
    try:
        arr = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a 2-D array of floats with NaN for missing") from err
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ConfigError(
            f"{name} must be a non-empty 2-D array (rows = workloads, columns = "
            f"configurations); got shape {arr.shape}"
        )
    bad = np.isinf(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ConfigError(
            f"{name}[{i}, {j}] = {arr[i, j]}: infinite values are not allowed; "
            "use NaN for a missing entry"
        )
    observed = ~np.isnan(arr)
    empty_rows = np.flatnonzero(~observed.any(axis=1))
    if empty_rows.size and not allow_empty:
        raise ConfigError(
            f"{name} row {int(empty_rows[0])} has no observed entry (all NaN; rows without "
            f"data: {empty_rows[:10].tolist()}); measure at least one configuration per workload"
        )
    empty_cols = np.flatnonzero(~observed.any(axis=0))
    if empty_cols.size and not allow_empty:
        raise ConfigError(
            f"{name} column {int(empty_cols[0])} has no observed entry (all NaN; columns "
            f"without data: {empty_cols[:10].tolist()}); measure each configuration at least once"
        )
    if observed.sum() < 2:
        raise ConfigError(f"{name} has {int(observed.sum())} observed entry; at least 2 are needed")
    return arr


@dataclass(frozen=True)
class Observed:
    """The observed entries of an ``(n_rows, n_cols)`` matrix in row-major order.

    ``censor`` (optional, int8 per entry): +1 where the true value is only known to be >= the
    recorded one (e.g. an attainment of 1.0 clipped before the logit), -1 where <=, 0 exact.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]
    censor: np.ndarray | None = None

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Observed:
        rows, cols = np.nonzero(~np.isnan(matrix))
        return cls(rows, cols, matrix[rows, cols], (int(matrix.shape[0]), int(matrix.shape[1])))

    def subset(self, index: np.ndarray) -> Observed:
        cens = None if self.censor is None else self.censor[index]
        return Observed(self.rows[index], self.cols[index], self.values[index], self.shape, cens)

    def with_values(self, values: np.ndarray) -> Observed:
        return Observed(self.rows, self.cols, values, self.shape, self.censor)

    @property
    def size(self) -> int:
        return int(self.values.size)


def censored_residual(resid: np.ndarray, censor: np.ndarray | None) -> np.ndarray:
    """``value - prediction`` with censoring: no error where the prediction lies beyond a
    one-sided bound on the right side (above a +1 entry, below a -1 entry)."""
    if censor is None:
        return resid
    out = np.where(censor > 0, np.maximum(resid, 0.0), resid)
    return np.where(censor < 0, np.minimum(out, 0.0), out)


def fit_biases(
    obs: Observed,
    reg: float,
    n_iter: int = 5,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    centre: bool = True,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Regularised baseline ``r_ij ~ mu + b_i + c_j`` by alternating shrunk means.

    ``reg`` is a pseudo-count: ``b_i = sum_j (r_ij - mu - c_j) / (n_i + reg)`` (Koren 2010).
    ``centre=False`` fixes ``mu = 0``.
    """
    n, m = obs.shape
    mu = float(obs.values.mean()) if centre else 0.0
    resid = obs.values - mu
    n_i = np.bincount(obs.rows, minlength=n)
    n_j = np.bincount(obs.cols, minlength=m)
    b, c = init if init is not None else (np.zeros(n), np.zeros(m))
    for _ in range(n_iter):
        c = np.bincount(obs.cols, resid - b[obs.rows], minlength=m) / (n_j + reg)
        b = np.bincount(obs.rows, resid - c[obs.cols], minlength=n) / (n_i + reg)
    return mu, b, c


class CompletionEstimator:
    """Base class: ``fit(matrix_with_nans) -> self``, ``predict(rows=None, cols=None)``.

    Subclasses implement ``_fit(obs)`` and ``_predict_full()``. ``predict()`` returns the full
    model matrix, observed cells included (the model's fitted values there, not the data);
    :func:`greenllm.scheduler.complete` keeps the measured values instead.
    """

    name: ClassVar[str] = ""
    uses_rank: ClassVar[bool] = False
    #: constructor overrides for the cheap fits of a subsampled rank search
    fast_cv_params: ClassVar[dict[str, Hyperparameter]] = {}
    #: hyperparameters that the rank search also tunes, with their candidate values
    tuned_params: ClassVar[dict[str, tuple[float, ...]]] = {}

    def __init__(self, random_state: int | None = 0) -> None:
        self.random_state = random_state
        self.shape_: tuple[int, int] | None = None

    def fit(self, matrix: object) -> CompletionEstimator:
        """Learn from the observed (non-NaN) entries of ``matrix``; returns ``self``."""
        return self.fit_observed(Observed.from_matrix(validate_matrix(matrix)))

    def fit_observed(self, obs: Observed) -> CompletionEstimator:
        """:meth:`fit` on entries already extracted (each row and column must have one)."""
        self.shape_ = obs.shape
        self._fit(obs)
        return self

    def predict(self, rows: object = None, cols: object = None) -> np.ndarray:
        if self.shape_ is None:
            raise ConfigError(f"{type(self).__name__}.predict() called before fit(); call fit()")
        if rows is None and cols is None:
            return self._predict_full()
        if rows is None or cols is None:
            raise ConfigError("predict(rows, cols) needs both index arrays, or neither")
        r = np.asarray(rows, dtype=np.intp)
        c = np.asarray(cols, dtype=np.intp)
        n, m = self.shape_
        if r.size and (r.min() < -n or r.max() >= n):
            raise ConfigError(f"row index out of range 0..{n - 1}: {r.tolist()[:10]}")
        if c.size and (c.min() < -m or c.max() >= m):
            raise ConfigError(f"column index out of range 0..{m - 1}: {c.tolist()[:10]}")
        return self._predict_cells(r, c)

    def _fit(self, obs: Observed) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self._predict_full()[rows, cols]

    def _predict_full(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"


class FactorModel(CompletionEstimator):
    """Shared prediction of ``centre + scale * (b_i + c_j + p_i . q_j)`` (standardised fit)."""

    uses_rank = True
    # set by the subclass's _fit: standardisation, biases and factors
    centre_: float
    scale_: float
    row_bias_: np.ndarray
    col_bias_: np.ndarray
    p_: np.ndarray
    q_: np.ndarray

    def _predict_full(self) -> np.ndarray:
        n, m = self.p_.shape[0], self.q_.shape[0]
        left = np.hstack([self.p_, self.row_bias_[:, None], np.ones((n, 1))])
        right = np.hstack([self.q_, np.ones((m, 1)), self.col_bias_[:, None]])
        z = left.astype(np.float32) @ right.T.astype(np.float32)  # float32: fast, ample
        return self.centre_ + self.scale_ * z.astype(np.float64)

    def _predict_cells(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        dot = np.einsum("ij,ij->i", self.p_[rows], self.q_[cols])
        return self.centre_ + self.scale_ * (self.row_bias_[rows] + self.col_bias_[cols] + dot)


class ColumnMean(CompletionEstimator):
    """Baseline ``r_ij ~ mean_i(r_ij)``: each configuration's mean over its measured workloads."""

    name = "mean"

    def _fit(self, obs: Observed) -> None:
        m = obs.shape[1]
        sums = np.bincount(obs.cols, obs.values, minlength=m)
        self.col_mean_ = sums / np.bincount(obs.cols, minlength=m)

    def _predict_full(self) -> np.ndarray:
        assert self.shape_ is not None
        return np.broadcast_to(self.col_mean_, self.shape_).copy()


class BiasBaseline(CompletionEstimator):
    """Baseline ``r_ij ~ mu + b_i + c_j`` (global mean, row bias, column bias; Koren 2010).

    Biases are shrunk means with ``reg`` pseudo-counts, fitted by alternating updates.
    """

    name = "bias"

    def __init__(self, reg: float = 1.0, n_iter: int = 10, random_state: int | None = 0) -> None:
        super().__init__(random_state)
        if reg < 0:
            raise ConfigError(f"reg = {reg}: must be >= 0")
        self.reg = reg
        self.n_iter = n_iter

    def _fit(self, obs: Observed) -> None:
        self.mu_, self.row_bias_, self.col_bias_ = fit_biases(obs, self.reg, self.n_iter)

    def _predict_full(self) -> np.ndarray:
        return self.mu_ + self.row_bias_[:, None] + self.col_bias_[None, :]
