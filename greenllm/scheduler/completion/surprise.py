"""Adapter over scikit-surprise's ``SVD`` (the optional ``cf`` extra)."""

from __future__ import annotations

import logging
from collections import defaultdict
from types import ModuleType

import numpy as np

from greenllm.errors import ConfigError, missing_extra
from greenllm.scheduler.completion.base import CompletionEstimator, Observed

__all__ = ["SurpriseSVD", "surprise_available"]

logger = logging.getLogger(__name__)


def _import_surprise() -> ModuleType:
    try:
        import surprise
    except ImportError as err:
        raise missing_extra("surprise", "cf") from err
    return surprise


def surprise_available() -> bool:
    """True when scikit-surprise can be imported."""
    try:
        _import_surprise()
    except ImportError:
        return False
    return True


class SurpriseSVD(CompletionEstimator):
    """scikit-surprise's biased SVD (Funk / Koren): ``r_ij ~ mu + b_i + c_j + p_i . q_j``.

    Learned by Surprise's sequential SGD (``n_epochs`` passes, learning rate ``lr_all``,
    regularisation ``reg_all``) on the raw observed values, exactly as Surprise's own defaults
    would on a ratings file. Rows are Surprise "users", columns "items". The full prediction
    matrix is evaluated from the learned ``bu, bi, pu, qi`` in one matrix product; it equals
    ``algo.predict(i, j, clip=False).est`` cell by cell (no clipping to the rating scale).
    Needs ``pip install 'greenllm[cf]'``.
    """

    name = "surprise"
    uses_rank = True

    def __init__(
        self,
        rank: int = 100,
        n_epochs: int = 20,
        lr_all: float = 0.005,
        reg_all: float = 0.02,
        random_state: int | None = 0,
    ) -> None:
        super().__init__(random_state)
        if int(rank) != rank or rank < 1:
            raise ConfigError(f"rank = {rank!r}: must be an integer >= 1")
        self.rank = int(rank)
        self.n_epochs = n_epochs
        self.lr_all = lr_all
        self.reg_all = reg_all

    def _fit(self, obs: Observed) -> None:
        surprise = _import_surprise()
        n, m = obs.shape
        ur: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
        ir: defaultdict[int, list[tuple[int, float]]] = defaultdict(list)
        for i, j, v in zip(obs.rows.tolist(), obs.cols.tolist(), obs.values.tolist(), strict=True):
            ur[i].append((j, v))
            ir[j].append((i, v))
        scale = (float(obs.values.min()), float(obs.values.max()))
        trainset = surprise.Trainset(
            ur, ir, n, m, obs.size, scale, {i: i for i in range(n)}, {j: j for j in range(m)}
        )
        algo = surprise.SVD(
            n_factors=self.rank,
            n_epochs=self.n_epochs,
            lr_all=self.lr_all,
            reg_all=self.reg_all,
            random_state=self.random_state,
        )
        algo.fit(trainset)
        self.algo_ = algo
        self.global_mean_ = float(trainset.global_mean)

    def _predict_full(self) -> np.ndarray:
        a = self.algo_
        return self.global_mean_ + a.bu[:, None] + a.bi[None, :] + a.pu @ a.qi.T
