"""Fill the sparse carbon and SLO-attainment matrices by collaborative filtering (Section 4.3).

``complete(matrix)`` returns the matrix with every NaN replaced by the model's estimate; the
measured entries are returned exactly as given (the model is fitted to them, but a measurement
beats its own fit). ``transform`` fits the model where the matrix is closer to low rank:
``"log"`` for carbon (:func:`complete_carbon`), ``"logit"`` for SLO attainment
(:func:`complete_attainment`; result clipped to [0, 1]); by default it is chosen from the data
(:func:`auto_transform`), so an all-positive matrix is never completed with a negative entry.
Rows and columns without any observation are filled from the biases and flagged.
:func:`complete_with_uncertainty` also estimates the error of every filled cell.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from greenllm.errors import ConfigError
from greenllm.scheduler.completion.als import ALSFactorization
from greenllm.scheduler.completion.base import (
    BiasBaseline,
    ColumnMean,
    CompletionEstimator,
    Hyperparameter,
    Observed,
    censored_residual,
    fit_biases,
    validate_matrix,
)
from greenllm.scheduler.completion.numerics import sample_rows, split_folds
from greenllm.scheduler.completion.sgd import SGDFactorization
from greenllm.scheduler.completion.softimpute import SoftImpute
from greenllm.scheduler.completion.surprise import SurpriseSVD
from greenllm.scheduler.completion.transforms import Transform, get_transform

__all__ = [
    "METHODS",
    "CompletionResult",
    "RankSearch",
    "auto_transform",
    "complete",
    "complete_attainment",
    "complete_carbon",
    "complete_with_uncertainty",
    "make_estimator",
    "select_rank",
]

logger = logging.getLogger(__name__)

METHODS: dict[str, type[CompletionEstimator]] = {
    "sgd": SGDFactorization,
    "als": ALSFactorization,
    "softimpute": SoftImpute,
    "surprise": SurpriseSVD,
    "mean": ColumnMean,
    "bias": BiasBaseline,
}
CV_MAX_ENTRIES = 8_000  # above this, the rank search runs on a row sample of this size
RANK_CANDIDATES = (1, 2, 3, 4, 6, 8)


def make_estimator(
    method: str, rank: int | None = None, seed: int | None = 0, **params: Hyperparameter
) -> CompletionEstimator:
    """The estimator for ``method`` with ``rank`` (if it has one) and ``random_state=seed``."""
    if method not in METHODS:
        raise ConfigError(f"method = {method!r}: must be one of {sorted(METHODS)}")
    cls = METHODS[method]
    if cls.uses_rank and rank is not None:
        params["rank"] = rank
    return cls(random_state=seed, **params)


@dataclass(frozen=True)
class RankSearch:
    """Outcome of :func:`select_rank`: the chosen rank (None for rank-free methods), the CV mean
    squared error of each rank tried, the held-out residual of each entry of ``entries`` with
    the chosen settings (NaN where never held out; original row/column indices), and the tuned
    hyperparameters that beat their defaults (e.g. ``{"reg": 0.1}``)."""

    rank: int | None
    errors: dict[int, float] = field(default_factory=dict)
    entries: Observed | None = None
    residuals: np.ndarray | None = None
    params: dict[str, Hyperparameter] = field(default_factory=dict)


def _cv_residuals(
    obs: Observed,
    folds: np.ndarray,
    method: str,
    rank: int | None,
    seed: int,
    params: Mapping[str, Hyperparameter],
) -> np.ndarray:
    resid = np.full(obs.size, np.nan)
    for f in range(int(folds.max()) + 1):
        held = folds == f
        if held.any():
            est = make_estimator(method, rank, seed, **params).fit_observed(obs.subset(~held))
            diff = obs.values[held] - est.predict(obs.rows[held], obs.cols[held])
            resid[held] = censored_residual(diff, None if obs.censor is None else obs.censor[held])
    return resid


def _search(
    obs: Observed,
    method: str,
    candidates: list[int] | None,
    n_folds: int,
    seed: int,
    params: Mapping[str, Hyperparameter],
) -> RankSearch:
    cls = METHODS.get(method)
    if cls is None:
        raise ConfigError(f"method = {method!r}: must be one of {sorted(METHODS)}")
    if not cls.uses_rank or method == "softimpute":
        return RankSearch(None)
    rng = np.random.default_rng(seed)
    n, m = obs.shape
    if candidates is None:
        candidates = [r for r in RANK_CANDIDATES if r <= max(1, min(n, m) - 1)]
    user_params = params
    params = {**params, **cls.fast_cv_params}
    entries, subsampled = obs, obs.size > CV_MAX_ENTRIES
    if subsampled:  # one hold-out fold of a row sample
        keep = sample_rows(obs, CV_MAX_ENTRIES, rng)
        new_index = np.full(n, -1)
        new_index[keep] = np.arange(keep.size)
        sel = new_index[obs.rows] >= 0
        entries = obs.subset(sel)
        cens = None if obs.censor is None else obs.censor[sel]
        obs = Observed(
            new_index[obs.rows[sel]], obs.cols[sel], obs.values[sel], (keep.size, m), cens
        )
    folds = split_folds(obs, n_folds, rng)
    if subsampled:
        folds[folds > 0] = -1
    errors: dict[int, float] = {}
    resids: dict[int, np.ndarray] = {}
    for r in sorted(candidates):
        resids[r] = _cv_residuals(obs, folds, method, r, seed, params)
        errors[r] = float(np.nanmean(resids[r] ** 2)) if np.isfinite(resids[r]).any() else np.inf
        best = min(errors, key=lambda k: (errors[k], k))
        worse = [errors[k] / errors[best] for k in errors if k > best and errors[k] > errors[best]]
        if len(worse) >= 2 or any(w > 1.02 for w in worse):
            break
    lowest = min(errors.values())
    rank = min(k for k, e in errors.items() if e <= lowest * 1.005)
    best_err, resid = errors[rank], resids[rank]
    chosen: dict[str, Hyperparameter] = {}
    for key, grid in cls.tuned_params.items():  # then each tuned hyperparameter, at that rank
        if key in user_params:
            continue
        start = grid.index(inspect.signature(cls).parameters[key].default)
        for step in (-1, 1):  # walk down the grid while it helps, else up
            k, moved = start + step, False
            while 0 <= k < len(grid):
                trial = {**params, **chosen, key: grid[k]}
                res = _cv_residuals(obs, folds, method, rank, seed, trial)
                err = float(np.nanmean(res**2)) if np.isfinite(res).any() else np.inf
                if err >= best_err * 0.995:
                    break
                best_err, resid, chosen, moved = err, res, {**chosen, key: grid[k]}, True
                k += step
            if moved:
                break
    logger.debug("select_rank(%s): cv mse %s -> rank %d %s", method, errors, rank, chosen)
    return RankSearch(rank, errors, entries, resid, chosen)


def select_rank(
    matrix: object,
    method: str = "sgd",
    candidates: list[int] | None = None,
    n_folds: int = 5,
    seed: int = 0,
    **params: Hyperparameter,
) -> RankSearch:
    """Choose the rank of ``method`` by K-fold cross-validation on the observed entries.

    Candidates default to ``1, 2, 3, 4, 6, 8`` up to ``min(n_rows, n_cols) - 1``. Each observed
    entry (except one protected entry per row and per column) is held out once; the rank with
    the lowest mean squared held-out error wins, ties within 0.5% going to the smaller rank.
    The search stops once two ranks score worse than the best so far, or one scores more than
    2% worse. Then each hyperparameter
    in the estimator's ``tuned_params`` that the caller did not set (SGD and ALS: the ridge
    ``reg`` on the grid 0.01, 0.1, 1, 3) is tuned at that rank by walking the grid from its
    default, down while the CV error drops by more than 0.5%, else up. The fits use the
    estimator's ``fast_cv_params`` (SGD: no refit after early stopping). With more than 8,000
    observed entries the search runs on a random sample of rows holding about 8,000 entries
    (rank is a property of the column structure, which a row sample keeps) and scores one
    held-out fold only. SoftImpute and the baselines have no rank to choose (SoftImpute picks
    its shrinkage itself): rank None.
    """
    obs = Observed.from_matrix(validate_matrix(matrix))
    return _search(obs, method, candidates, n_folds, seed, params)


def auto_transform(values: np.ndarray) -> str:
    """The transform ``complete`` uses when none is given, chosen from the observed values:
    ``"log"`` when all are > 0 (carbon, energy, time: the result is never negative),
    ``"logit"`` when all lie in [0, 1] and one is 0 (attainment, fractions), else
    ``"identity"``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size and bool(np.all(v > 0)):
        return "log"
    if v.size and bool(np.all((v >= 0) & (v <= 1))):
        return "logit"
    return "identity"


@dataclass(frozen=True)
class _Prepared:
    """The observed entries, the same in the fitting space (reindexed to the rows and columns
    that have an observation), the transform, and those rows and columns."""

    obs: Observed
    zobs: Observed
    t: Transform
    rows: np.ndarray  # original index of each fitted row
    cols: np.ndarray
    empty_rows: tuple[int, ...]
    empty_cols: tuple[int, ...]


def _prepare(matrix: object, transform: str | None) -> _Prepared:
    """Validated entries, the same entries in the fitting space, and the transform."""
    obs = Observed.from_matrix(validate_matrix(matrix, allow_empty=True))
    t = get_transform(auto_transform(obs.values) if transform is None else transform)
    bad = t.check(obs.values)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        i, j, v = int(obs.rows[k]), int(obs.cols[k]), obs.values[k]
        raise ConfigError(f"matrix[{i}, {j}] = {v}: the {t.name} transform needs values {t.domain}")
    n, m = obs.shape
    has_row = np.bincount(obs.rows, minlength=n) > 0
    has_col = np.bincount(obs.cols, minlength=m) > 0
    rows, cols = np.flatnonzero(has_row), np.flatnonzero(has_col)
    new_r, new_c = np.cumsum(has_row) - 1, np.cumsum(has_col) - 1
    zobs = Observed(
        new_r[obs.rows], new_c[obs.cols], t.forward(obs.values), (rows.size, cols.size),
        t.censor(obs.values),
    )  # fmt: skip
    empty_rows = tuple(int(i) for i in np.flatnonzero(~has_row))
    empty_cols = tuple(int(j) for j in np.flatnonzero(~has_col))
    if empty_rows or empty_cols:
        logger.warning(
            "complete: no observed entry in rows %s and columns %s; filled from the biases "
            "(row or column mean) and marked maximally uncertain",
            list(empty_rows[:20]), list(empty_cols[:20]),
        )  # fmt: skip
    return _Prepared(obs, zobs, t, rows, cols, empty_rows, empty_cols)


def _fit(
    zobs: Observed, method: str, rank: int | None, seed: int, params: Mapping[str, Hyperparameter]
) -> tuple[np.ndarray, RankSearch]:
    search = RankSearch(rank) if rank is not None else _search(zobs, method, None, 5, seed, params)
    est = make_estimator(method, search.rank, seed, **params, **search.params).fit_observed(zobs)
    return est.predict(), search


def _embed(prep: _Prepared, pred: np.ndarray) -> np.ndarray:
    """The fitted ``pred`` (fitted rows x columns) in the full shape; a row (column) without
    an observation gets the bias model's value ``mu + c_j`` (``mu + b_i``; ``mu`` for both)."""
    if not (prep.empty_rows or prep.empty_cols):
        return pred
    mu, b, c = fit_biases(prep.zobs, reg=1.0)
    n, m = prep.obs.shape
    row_bias, col_bias = np.zeros(n), np.zeros(m)
    row_bias[prep.rows], col_bias[prep.cols] = b, c
    full = mu + row_bias[:, None] + col_bias[None, :]
    full[np.ix_(prep.rows, prep.cols)] = pred
    return full


def complete(
    matrix: object,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    transform: str | None = None,
    **params: Hyperparameter,
) -> np.ndarray:
    """Fill the NaN entries of ``matrix`` (rows = workloads, columns = configurations).

    ``method``: ``"sgd"`` (Paragon-style biased MF by SGD, the default), ``"als"``,
    ``"softimpute"``, ``"surprise"`` (needs ``greenllm[cf]``), or the baselines ``"mean"``
    (column mean) and ``"bias"`` (``mu + b_i + c_j``). ``rank=None`` picks the rank by
    :func:`select_rank`. ``transform``: ``"identity"``, ``"log"`` or ``"logit"``; None (the
    default) chooses from the data (:func:`auto_transform`: log for all-positive values, so
    an all-positive matrix never gets a negative entry; logit for values in [0, 1] with a 0;
    identity otherwise). Observed entries come back unchanged. A row or column without any
    observation is filled from the biases (logged as a warning; see
    :func:`complete_with_uncertainty` for its error). Extra ``params`` go to the estimator.
    """
    prep = _prepare(matrix, transform)
    pred, _ = _fit(prep.zobs, method, rank, seed, params)
    out = prep.t.inverse(_embed(prep, pred))
    out[prep.obs.rows, prep.obs.cols] = prep.obs.values
    return out


def complete_carbon(
    matrix: object,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    **params: Hyperparameter,
) -> np.ndarray:
    """:func:`complete` in log space: carbon is positive and its factors multiply."""
    return complete(matrix, method, rank, seed, transform="log", **params)


def complete_attainment(
    matrix: object,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    **params: Hyperparameter,
) -> np.ndarray:
    """:func:`complete` in logit space (inputs clipped to [1e-3, 1 - 1e-3]); output in [0, 1]."""
    return complete(matrix, method, rank, seed, transform="logit", **params)


@dataclass(frozen=True)
class CompletionResult:
    """A completed matrix with a per-cell error estimate in the units of ``values``.

    ``stderr`` is 0 on observed cells (returned as measured). On a filled cell it is half the
    width of ``inverse(z_hat -+ sigma_ij)``, where ``sigma_ij`` (``sigma_transformed``) is the
    cross-validation RMSE of the model in the fitting space, estimated per row and per column
    (each shrunk towards the global RMSE with 3 pseudo-entries) and averaged in quadrature,
    or per column only (``error_by="column"``).

    ``empty_rows`` and ``empty_cols``: the rows and columns without any observation. Their
    cells are filled from the biases alone and are maximally uncertain: ``sigma_transformed``
    is inf there, ``stderr`` is inf (0.5, the widest possible, for logit). ``transform`` is
    the transform used (chosen from the data when none was given).
    """

    values: np.ndarray
    observed_mask: np.ndarray
    stderr: np.ndarray
    sigma_transformed: np.ndarray
    method: str
    rank: int | None
    transform: str
    empty_rows: tuple[int, ...] = ()
    empty_cols: tuple[int, ...] = ()

    @property
    def unsupported_mask(self) -> np.ndarray:
        """Cells in a row or column without any observation (filled from biases only)."""
        mask = np.zeros(self.values.shape, dtype=bool)
        mask[list(self.empty_rows), :] = True
        mask[:, list(self.empty_cols)] = True
        return mask


ERROR_BY = ("row+column", "column")


def _cell_sigma(
    entries: Observed,
    resid: np.ndarray,
    fallback_var: float,
    kappa: float = 3.0,
    by: str = "row+column",
) -> np.ndarray:
    """Per-cell RMSE from held-out residuals: the row and column mean squares, each shrunk
    towards the global one with ``kappa`` pseudo-entries, averaged (``by="row+column"``), or
    the column's alone (``by="column"``)."""
    n, m = entries.shape
    ok = np.isfinite(resid)
    sq = np.where(ok, resid, 0.0) ** 2
    g = float(sq[ok].mean()) if ok.any() else fallback_var
    g = g if g > 0 else fallback_var

    def shrunk(index: np.ndarray, size: int) -> np.ndarray:
        return (np.bincount(index, sq, size) + kappa * g) / (np.bincount(index, ok, size) + kappa)

    col = shrunk(entries.cols, m)[None, :]
    if by == "column":
        return np.sqrt(np.repeat(col, n, axis=0))
    return np.sqrt(0.5 * (shrunk(entries.rows, n)[:, None] + col))


def complete_with_uncertainty(
    matrix: object,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    transform: str | None = None,
    n_folds: int = 5,
    error_by: str = "row+column",
    **params: Hyperparameter,
) -> CompletionResult:
    """:func:`complete` plus a per-cell error estimate (see :class:`CompletionResult`).

    The held-out residuals of the rank search are reused (with more than 8,000 observed
    entries they come from its row sample); with an explicit ``rank`` (or a rank-free method)
    ``n_folds`` extra fits produce them. Observed cells get ``stderr = 0``. ``error_by``:
    a cell's error from its row's and its column's residuals (``"row+column"``) or from its
    column's alone (``"column"``: how predictable that configuration is across workloads).
    ``transform=None`` chooses it from the data, as :func:`complete` does. Rows and columns
    without an observation are filled from the biases and get an infinite error
    (``CompletionResult.empty_rows`` / ``empty_cols``).
    """
    if error_by not in ERROR_BY:
        raise ConfigError(f"error_by = {error_by!r}: must be one of {list(ERROR_BY)}")
    prep = _prepare(matrix, transform)
    obs, zobs, t = prep.obs, prep.zobs, prep.t
    pred, search = _fit(zobs, method, rank, seed, params)
    entries, resid = search.entries, search.residuals
    if entries is None or resid is None:
        folds = split_folds(zobs, n_folds, np.random.default_rng(seed))
        entries, resid = zobs, _cv_residuals(zobs, folds, method, search.rank, seed, params)
    sub_sigma = _cell_sigma(entries, resid, float(np.var(zobs.values)) or 1.0, by=error_by)
    sigma = np.full(obs.shape, np.inf)
    sigma[np.ix_(prep.rows, prep.cols)] = sub_sigma
    sigma[obs.rows, obs.cols] = 0.0
    full = _embed(prep, pred)
    with np.errstate(invalid="ignore", over="ignore"):
        stderr = 0.5 * np.abs(t.inverse(full + sigma) - t.inverse(full - sigma))
    stderr = np.where(np.isnan(stderr), np.inf, stderr)
    values = t.inverse(full)
    values[obs.rows, obs.cols] = obs.values
    observed = np.zeros(obs.shape, dtype=bool)
    observed[obs.rows, obs.cols] = True
    return CompletionResult(
        values, observed, stderr, sigma, method, search.rank, t.name,
        prep.empty_rows, prep.empty_cols,
    )  # fmt: skip
