"""Biased matrix factorisation by alternating least squares (ridge), with censoring."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from greenllm.errors import ConfigError
from greenllm.scheduler.completion.base import FactorModel, Observed, fit_biases
from greenllm.scheduler.completion.numerics import standardize
from greenllm.scheduler.completion.sgd import check_rank, dense, ridge_rows, svd_init

__all__ = ["ALSFactorization"]

logger = logging.getLogger(__name__)


class ALSFactorization(FactorModel):
    """Biased matrix factorisation fitted by alternating ridge regressions.

    Model ``r_ij ~ mu + b_i + c_j + p_i . q_j`` (standardised units). With the columns fixed,
    each row solves ``min sum_j (r_ij - mu - c_j - b_i - p_i . q_j)^2 + reg |p_i|^2 +
    reg_bias b_i^2`` (``reg_bias`` defaults to ``reg``) for ``(b_i, p_i)`` in closed form;
    then the columns, and so on for up to ``n_iter`` sweeps or until the training loss
    changes by less than ``tol`` (relative). All rows are solved at once as a batch of
    ``(rank+1)``-square systems whose Gram matrices come from one dense matrix product.
    Starts from the same SVD initialisation as ``"sgd"``.
    """

    name = "als"
    uses_rank = True
    tuned_params: ClassVar[dict[str, tuple[float, ...]]] = {"reg": (0.01, 0.1, 1.0, 3.0)}

    def __init__(
        self,
        rank: int = 2,
        reg: float = 1.0,
        reg_bias: float | None = None,
        n_iter: int = 30,
        tol: float = 1e-5,
        random_state: int | None = 0,
    ) -> None:
        super().__init__(random_state)
        self.rank = check_rank(rank)
        if reg <= 0 or n_iter < 1:
            raise ConfigError(
                f"ALSFactorization(reg={reg}, n_iter={n_iter}): need reg > 0, n_iter >= 1"
            )
        self.reg = reg
        self.reg_bias = reg_bias
        self._rb = reg if reg_bias is None else reg_bias
        self.n_iter = n_iter
        self.tol = tol

    def _fit(self, obs: Observed) -> None:
        self.centre_, self.scale_ = standardize(obs.values)
        zv = (obs.values - self.centre_) / self.scale_
        z, mask = dense(obs, zv, np.float32)
        _, b, c = fit_biases(Observed(obs.rows, obs.cols, zv, obs.shape), reg=self._rb)
        b += float(zv.mean())
        ridge = np.r_[self._rb, np.full(self.rank, self.reg)]
        p, q = svd_init(z.astype(np.float64), mask > 0, b, c, self.rank)
        mask_t, z_t = np.ascontiguousarray(mask.T), np.ascontiguousarray(z.T)
        prev, it = np.inf, 0
        cens = obs.censor
        cr, cc = (obs.rows[cens != 0], obs.cols[cens != 0]) if cens is not None else (None, None)
        for it in range(1, self.n_iter + 1):  # noqa: B007 - `it` is reported after the loop
            b, p = ridge_rows(mask, z, q, c, ridge)
            c, q = ridge_rows(mask_t, z_t, p, b, ridge)
            if cens is not None:  # censored cells: move the target to the fit past the bound
                fit = b[cr] + c[cc] + np.einsum("ij,ij->i", p[cr], q[cc])
                bound = zv[cens != 0]
                side = cens[cens != 0]
                z[cr, cc] = np.where(side > 0, np.maximum(bound, fit), np.minimum(bound, fit))
                z_t = np.ascontiguousarray(z.T)
            resid = mask * (z - b[:, None] - c[None, :] - p @ q.T)
            loss = float(np.vdot(resid, resid))
            if abs(prev - loss) <= self.tol * max(loss, 1e-12):
                break
            prev = loss
        self.n_iter_ = it
        self.row_bias_, self.col_bias_, self.p_, self.q_ = b, c, p, q
