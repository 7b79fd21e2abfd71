"""Paragon-style latent-factor completion by minibatch SGD, and helpers shared with ALS.

All three work on standardised values ``z = (r - centre) / scale`` of the observed entries and
map back at prediction time, so their hyperparameters do not depend on the units of the matrix.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np

from greenllm.errors import ConfigError
from greenllm.scheduler.completion.base import (
    FactorModel,
    Hyperparameter,
    Observed,
    censored_residual,
    fit_biases,
)
from greenllm.scheduler.completion.numerics import sample_rows, split_folds, standardize, top_svd

__all__ = ["SGDFactorization", "check_rank", "dense", "ridge_rows", "svd_init"]

logger = logging.getLogger(__name__)
_BLOCK_CELLS = 65_536  # cells per SGD minibatch (a block of rows): fits in a core's cache


def check_rank(rank: int) -> int:
    if int(rank) != rank or rank < 1:
        raise ConfigError(f"rank = {rank!r}: must be an integer >= 1")
    return int(rank)


def svd_init(
    z: np.ndarray, train: np.ndarray, b: np.ndarray, c: np.ndarray, rank: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paragon's initialisation: truncated SVD of the mean-imputed residual matrix.

    Missing residuals are 0 (the bias model's value); the factors get ``sqrt(s)`` each.
    """
    n, m = z.shape
    resid = np.where(train, z - b[:, None] - c[None, :], 0.0)
    u, s, vt = top_svd(resid, rank)
    root = np.sqrt(s)
    p = np.zeros((n, rank))
    q = np.zeros((m, rank))
    p[:, : s.size] = u * root
    q[:, : s.size] = vt.T * root
    return p, q


def dense(obs: Observed, values: np.ndarray, dtype: type = bool) -> tuple[np.ndarray, np.ndarray]:
    """``values`` at the observed cells of a zero matrix, and the observed mask (as ``dtype``)."""
    z: np.ndarray = np.zeros(obs.shape, dtype=np.float64 if dtype is bool else dtype)
    z[obs.rows, obs.cols] = values
    mask: np.ndarray = np.zeros(obs.shape, dtype=dtype)
    mask[obs.rows, obs.cols] = True
    return z, mask


def ridge_rows(
    mask: np.ndarray, z: np.ndarray, other: np.ndarray, other_bias: np.ndarray, ridge: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every row's ridge solution ``(b_i, p_i)`` of ``z_ij ~ b_i + c_j + p_i . q_j``.

    ``mask`` (float 0/1) marks the observed cells, ``other`` is ``Q``, ``other_bias`` is ``c``,
    ``ridge`` the penalty of ``(b_i, p_i)``. All rows are solved at once as a batch of
    ``(rank+1)``-square systems whose Gram matrices come from one dense matrix product.
    """
    k1 = other.shape[1] + 1
    x = np.hstack([np.ones((other.shape[0], 1)), other])
    outer = (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)
    m32 = np.asarray(mask, dtype=np.float32)
    gram = (m32 @ outer.astype(np.float32)).reshape(-1, k1, k1) + np.diag(ridge + 1e-9)
    rhs = (np.asarray(z - m32 * other_bias[None, :], np.float32) @ x.astype(np.float32)).astype(
        np.float64
    )
    sol = np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]
    return sol[:, 0], sol[:, 1:]


class _Block:
    """A block of rows (a minibatch) as dense arrays: values, masks, censoring."""

    def __init__(
        self,
        idx: np.ndarray,
        z: np.ndarray,
        train: np.ndarray,
        val: np.ndarray | None,
        cens: np.ndarray | None,
    ):
        self.idx = idx
        self.cens = None if cens is None else cens[idx]
        self.z = z[idx].astype(np.float32)
        self.mask = train[idx].astype(np.float32)
        self.val = None if val is None else val[idx].astype(np.float32)
        self.cnt_r = self.mask.sum(axis=1)
        self.cnt_c = self.mask.sum(axis=0)


class SGDFactorization(FactorModel):
    """Paragon-style biased matrix factorisation learned by minibatch SGD.

    Model (Delimitrou & Kozyrakis, ASPLOS 2013; Koren 2009)::

        r_ij ~ mu + b_i + c_j + p_i . q_j

    minimising ``sum_obs (r_ij - r^_ij)^2 + reg (|P|^2 + |Q|^2) + reg_bias (|b|^2 + |c|^2)``
    in standardised units (``reg_bias`` defaults to ``reg``). Biases start from shrunk means,
    the factors from the truncated SVD of the mean-imputed residual matrix. An epoch visits
    the rows in random blocks of about 65,536 cells; a block moves its rows' ``b_i, p_i`` and
    every ``c_j, q_j`` by ``lr`` times the gradient over its observed entries, each
    coordinate's step divided by its curvature (``sum_j q_jd^2 + reg`` for ``p_id``: a
    diagonally preconditioned step, which makes ``lr`` scale-free), with heavy-ball
    ``momentum``. The step follows the "bold driver" rule (Gemulla et al., KDD 2011): x1.05
    after an epoch that lowered the training loss (up to ``max_lr``), x0.5 and a momentum
    restart otherwise. Early stopping watches a held-out ``val_fraction`` of the observed
    entries (``patience`` epochs without a ``min_improvement`` relative gain); then, if
    ``refit``, the model is refitted on every entry for the best number of epochs. Above
    ``max_sgd_entries`` observed entries, SGD runs (without refit) on a random sample of rows
    holding about that many entries, which fixes ``c_j, q_j``; every row's ``b_i, p_i`` then
    comes from its exact ridge solution given those columns ("folding in", one batched solve).
    Works on dense float32 arrays: memory O(n m).
    """

    name = "sgd"
    uses_rank = True
    fast_cv_params: ClassVar[dict[str, Hyperparameter]] = {"refit": False, "patience": 5}
    tuned_params: ClassVar[dict[str, tuple[float, ...]]] = {"reg": (0.01, 0.1, 1.0, 3.0)}

    def __init__(
        self,
        rank: int = 2,
        reg: float = 1.0,
        reg_bias: float | None = None,
        lr: float = 0.25,
        momentum: float = 0.5,
        max_lr: float = 1.0,
        max_epochs: int = 200,
        min_improvement: float = 1e-3,
        val_fraction: float = 0.1,
        patience: int = 10,
        max_sgd_entries: int = 30_000,
        refit: bool = True,
        random_state: int | None = 0,
    ) -> None:
        super().__init__(random_state)
        self.rank = check_rank(rank)
        if (
            reg < 0
            or lr <= 0
            or max_epochs < 1
            or not 0 <= momentum < 1
            or not 0 <= val_fraction < 1
        ):
            raise ConfigError(
                f"SGDFactorization(reg={reg}, lr={lr}, momentum={momentum}, max_epochs="
                f"{max_epochs}, val_fraction={val_fraction}): need reg >= 0, lr > 0, "
                "0 <= momentum < 1, max_epochs >= 1, 0 <= val_fraction < 1"
            )
        self.reg = reg
        self.reg_bias = reg_bias
        self._rb = reg if reg_bias is None else reg_bias
        self.lr = lr
        self.momentum = momentum
        self.max_lr = max_lr
        self.max_epochs = max_epochs
        self.min_improvement = min_improvement
        self.val_fraction = val_fraction
        self.patience = patience
        self.max_sgd_entries = max_sgd_entries
        self.refit = refit

    def _fit(self, obs: Observed) -> None:
        rng = np.random.default_rng(self.random_state)
        self.centre_, self.scale_ = standardize(obs.values)
        zobs = obs.with_values((obs.values - self.centre_) / self.scale_)
        large = obs.size > self.max_sgd_entries
        sub = zobs
        if large:  # the sample's entries, rows renumbered
            keep = sample_rows(obs, self.max_sgd_entries, rng)
            index = np.full(obs.shape[0], -1)
            index[keep] = np.arange(keep.size)
            sel = index[obs.rows] >= 0
            part = zobs.subset(sel)
            sub = Observed(
                index[part.rows], part.cols, part.values, (keep.size, obs.shape[1]), part.censor
            )
        zs, obs_s = dense(sub, sub.values)
        cens = None
        if sub.censor is not None:
            cens = np.zeros(zs.shape, dtype=np.int8)
            cens[sub.rows, sub.cols] = sub.censor
        if int(self.val_fraction * sub.size) >= 5:
            folds = split_folds(sub, round(1 / self.val_fraction), rng)
            val = np.zeros(zs.shape, dtype=bool)
            val[sub.rows[folds == 0], sub.cols[folds == 0]] = True
            params, n_epochs = self._run(zs, obs_s & ~val, val, cens, self.max_epochs, rng)
            if self.refit and not large:
                params, _ = self._run(zs, obs_s, None, cens, n_epochs, rng)
        else:
            params, n_epochs = self._run(zs, obs_s, None, cens, self.max_epochs, rng)
        b, c, p, q = params
        if large:  # fold every row in against the learned columns
            ridge = np.r_[self._rb, np.full(self.rank, self.reg)]
            z, observed = dense(zobs, zobs.values, np.float32)
            b, p = ridge_rows(observed, z, q, c, ridge)
        self.row_bias_, self.col_bias_, self.p_, self.q_ = b, c, p, q
        self.n_epochs_ = n_epochs

    def _run(
        self,
        z: np.ndarray,
        train: np.ndarray,
        val: np.ndarray | None,
        cens: np.ndarray | None,
        max_epochs: int,
        rng: np.random.Generator,
    ) -> tuple[tuple[np.ndarray, ...], int]:
        n, m = z.shape
        rows, cols = np.nonzero(train)
        _, b, c = fit_biases(Observed(rows, cols, z[rows, cols], (n, m)), reg=self._rb)
        b += float(z[rows, cols].mean())
        p, q = svd_init(z, train, b, c, self.rank)
        # float32 throughout: several times faster here, and ample for a completion
        b, c, p, q = (x.astype(np.float32) for x in (b, c, p, q))
        n_b = max(1, min(n, int(np.ceil(n * m / _BLOCK_CELLS))))
        split = np.array_split(rng.permutation(n), n_b)
        blocks = [_Block(idx, z, train, val, cens) for idx in split]
        frac_c = [bl.cnt_c / np.maximum(train.sum(axis=0), 1) for bl in blocks]  # ridge shares
        rb, rf, lr, mom = self._rb, self.reg, self.lr, self.momentum
        prev_loss, best = np.inf, (np.inf, 0, (b.copy(), c.copy(), p.copy(), q.copy()))
        vb, vc, vp, vq = np.zeros_like(b), np.zeros_like(c), np.zeros_like(p), np.zeros_like(q)
        sel_r = [*range(self.rank), self.rank + 1]
        epoch, ones = 0, np.ones((max(len(bl.idx) for bl in blocks), 1), np.float32)
        for epoch in range(1, max_epochs + 1):
            loss = v_loss = 0.0
            for k in rng.permutation(n_b):
                bl, fc = blocks[k], frac_c[k]
                one = ones[: len(bl.idx)]
                rows_aug = np.hstack([p[bl.idx], one, b[bl.idx, None]])
                cols_aug = np.hstack([q, c[:, None], np.ones((m, 1), np.float32)])
                resid = np.subtract(bl.z, rows_aug @ cols_aug.T)  # z - (p.q + c + b)
                if bl.cens is not None:  # no error past a censoring bound
                    resid = censored_residual(resid, bl.cens)
                err = bl.mask * resid
                loss += float(np.vdot(err, resid))
                if bl.val is not None:
                    v_loss += float(np.vdot(bl.val * resid, resid))
                g_rows = err @ cols_aug[:, sel_r]  # [err q | sum_j err]
                g_cols = err.T @ rows_aug[:, : self.rank + 1]  # [err^T p | sum_i err]
                pb = rows_aug[:, : self.rank]
                curv_r = bl.mask @ (q * q) + rf  # diagonal curvature, per factor
                curv_c = bl.mask.T @ (pb * pb) + (rf * fc + 1e-12)[:, None]
                bi = b[bl.idx]
                vb[bl.idx] = mom * vb[bl.idx] + lr * (g_rows[:, -1] - rb * bi) / (bl.cnt_r + rb)
                vc = mom * vc + lr * (g_cols[:, -1] - rb * fc * c) / (bl.cnt_c + rb * fc + 1e-12)
                vp[bl.idx] = mom * vp[bl.idx] + lr * (g_rows[:, :-1] - rf * pb) / curv_r
                vq = mom * vq + lr * (g_cols[:, :-1] - (rf * fc)[:, None] * q) / curv_c
                b[bl.idx] += vb[bl.idx]
                p[bl.idx] += vp[bl.idx]
                c += vc
                q += vq
            converged = abs(prev_loss - loss) <= 1e-6 * max(loss, 1e-12)
            if loss < prev_loss:
                lr = min(lr * 1.05, self.max_lr)
            else:  # bold driver: halve the step; adaptive restart: drop the momentum
                lr *= 0.5
                converged = converged and lr < 1e-3
                for v in (vb, vc, vp, vq):
                    v[:] = 0.0
            prev_loss = loss
            if val is not None:
                if v_loss < best[0] * (1 - self.min_improvement):
                    best = (v_loss, epoch, (b.copy(), c.copy(), p.copy(), q.copy()))
                elif epoch - best[1] >= self.patience:
                    break
            if converged:
                break
        out, n_done = (best[2], max(best[1], 1)) if val is not None else ((b, c, p, q), epoch)
        return tuple(x.astype(np.float64) for x in out), n_done
