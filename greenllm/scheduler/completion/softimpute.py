"""SoftImpute: nuclear-norm regularised completion by iterative soft-thresholded SVD."""

from __future__ import annotations

import logging

import numpy as np

from greenllm.errors import ConfigError
from greenllm.scheduler.completion.base import CompletionEstimator, Observed, fit_biases
from greenllm.scheduler.completion.numerics import split_folds, standardize, top_svd

__all__ = ["SoftImpute"]

logger = logging.getLogger(__name__)


class SoftImpute(CompletionEstimator):
    """Mazumder, Hastie & Tibshirani (JMLR 2010), after removing row and column biases.

    With ``X`` the bias-free standardised data and ``Omega`` the observed cells, iterate::

        Z <- S_lambda( P_Omega(X) + P_Omega_perp(Z) ),   S_lambda(U D V^T) = U (D - lambda)_+ V^T

    which solves ``min_Z 1/2 |P_Omega(X - Z)|_F^2 + lambda |Z|_*``. The prediction is
    ``mu + b_i + c_j + Z_ij``. ``rank`` caps the rank of ``Z`` (None: no cap). When ``shrinkage``
    (lambda, in units of the largest singular value of ``P_Omega(X)``) is None it is chosen on
    the paper's warm-started path ``lambda_k = lambda_max * 0.7^k`` by the error on a held-out
    ``val_fraction`` of the observed entries; the model is then refitted on all of them. With
    ``debias`` (the paper's post-processing, Section 7) the singular values of the solution are
    refitted by least squares on the observed entries, undoing the shrinkage.
    """

    name = "softimpute"
    uses_rank = True

    def __init__(
        self,
        rank: int | None = None,
        shrinkage: float | None = None,
        n_lambdas: int = 20,
        max_iter: int = 300,
        tol: float = 1e-6,
        reg_bias: float = 1.0,
        val_fraction: float = 0.1,
        debias: bool = True,
        random_state: int | None = 0,
    ) -> None:
        super().__init__(random_state)
        if rank is not None and (int(rank) != rank or rank < 1):
            raise ConfigError(f"rank = {rank!r}: must be an integer >= 1 or None (no cap)")
        if shrinkage is not None and shrinkage < 0:
            raise ConfigError(
                f"shrinkage = {shrinkage}: must be >= 0 or None (chosen by validation)"
            )
        self.rank = rank
        self.shrinkage = shrinkage
        self.n_lambdas = n_lambdas
        self.max_iter = max_iter
        self.tol = tol
        self.reg_bias = reg_bias
        self.val_fraction = val_fraction
        self.debias = debias

    def _solve(
        self, obs: Observed, x: np.ndarray, lam: float, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, ...]:
        """Iterate from ``state = (z, b, c, U, Vt)`` (warm start) to convergence at ``lam``.

        Each iteration refits the biases to the current residual (one pass of shrunk means),
        then applies the soft-thresholded SVD to the bias-free matrix filled in by ``z``.
        """
        z, b, c, u, vt = state
        k = min(obs.shape) if self.rank is None else self.rank
        for _ in range(self.max_iter):
            part = Observed(obs.rows, obs.cols, x - z[obs.rows, obs.cols], obs.shape)
            _, b, c = fit_biases(part, self.reg_bias, n_iter=1, init=(b, c), centre=False)
            filled = z.copy()
            filled[obs.rows, obs.cols] = x - b[obs.rows] - c[obs.cols]
            u, s, vt = top_svd(filled, k)
            s = np.maximum(s - lam, 0.0)
            keep = s > 0
            u, s, vt = u[:, keep], s[keep], vt[keep]
            z_new = (u * s) @ vt
            change = float(np.sum((z_new - z) ** 2))
            z = z_new
            if change <= self.tol * max(float(np.sum(z**2)), 1e-12):
                break
        return z, b, c, u, vt

    def _debias(self, obs: Observed, x: np.ndarray, state: tuple[np.ndarray, ...]) -> np.ndarray:
        """Mazumder et al.'s post-processing: refit the singular values by least squares on the
        observed entries with the singular vectors (and biases) fixed, undoing the shrinkage."""
        z, b, c, u, vt = state
        if not self.debias or u.shape[1] == 0:
            return z
        design = u[obs.rows] * vt.T[obs.cols]
        d, *_ = np.linalg.lstsq(design, x - b[obs.rows] - c[obs.cols], rcond=None)
        return (u * d) @ vt

    def _path(
        self,
        obs: Observed,
        x: np.ndarray,
        lambdas: np.ndarray,
        val: Observed | None,
        xv: np.ndarray,
    ) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        n, m = obs.shape
        # (z, b, c, U, Vt): start from zero, no singular vectors yet
        state: tuple[np.ndarray, ...] = (
            np.zeros((n, m)), np.zeros(n), np.zeros(m), np.zeros((n, 0)), np.zeros((0, m))
        )
        errors = np.full(lambdas.size, np.inf)
        final: tuple[np.ndarray, ...] = state
        for k, lam in enumerate(lambdas):
            state = self._solve(obs, x, lam, state)
            final = (self._debias(obs, x, state), *state[1:3])
            if val is not None:
                z, b, c = final
                pred = z[val.rows, val.cols] + b[val.rows] + c[val.cols]
                errors[k] = float(np.mean((pred - xv) ** 2))
                if k >= 2 and errors[k] > errors[k - 1] > errors[k - 2]:
                    break  # validation error rising twice in a row: past the optimum
        return final, errors

    def _fit(self, obs: Observed) -> None:
        rng = np.random.default_rng(self.random_state)
        self.centre_, self.scale_ = standardize(obs.values)
        x = (obs.values - self.centre_) / self.scale_
        resid = np.zeros(obs.shape)
        resid[obs.rows, obs.cols] = x
        lam_max = float(top_svd(resid, 1)[1][0])
        if self.shrinkage is not None:
            lambdas = np.array([self.shrinkage * lam_max])
        else:
            lambdas = lam_max * 0.7 ** np.arange(1, self.n_lambdas + 1)
            if int(self.val_fraction * obs.size) >= 5:
                folds = split_folds(obs, round(1 / self.val_fraction), rng)
                tr, va = obs.subset(folds != 0), obs.subset(folds == 0)
                _, errors = self._path(tr, x[folds != 0], lambdas, va, x[folds == 0])
                lambdas = lambdas[: int(np.argmin(errors)) + 1]
        (self.z_, self.row_bias_, self.col_bias_), _ = self._path(obs, x, lambdas, None, x)
        self.lambda_ = float(lambdas[-1])

    def _predict_full(self) -> np.ndarray:
        z = self.row_bias_[:, None] + self.col_bias_[None, :] + self.z_
        return self.centre_ + self.scale_ * z
