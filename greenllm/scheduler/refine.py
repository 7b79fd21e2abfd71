"""Verify before serving: profile the cells a plan relies on, then plan again (beyond the paper).

Collaborative filtering fills most of the matrices, and a filled cell can be wrong. A plan only
*relies* on one cell per workload, the chosen one. :func:`verify_plan` spends a profiling
budget on exactly those cells, in rounds: complete and choose, profile the most valuable filled
choices (:func:`to_verify`; at most a quarter of the budget per round by default), complete and
choose again with the new measurements, until no filled choice is worth profiling or the
budget is spent. A chosen cell that turns out to miss the SLO is then measured as a miss, and
the next round moves that workload to its next choice; small rounds leave budget for that.
A workload where nothing measured meets the SLO keeps being searched while some filled cell
could plausibly meet it (its upper confidence bound reaches the target). The search explores
without a safety margin (it profiles the cheapest cells that might meet the SLO); the final
plan applies the planner's margin to the cells still filled.

``measure`` is whatever profiles cells in the caller's world: a sweep on a backend followed by
:func:`~greenllm.scheduler.matrix.matrices_from_store`, or, in the benchmarks, revealing cells
of a fully profiled matrix. It receives ``(row, configuration)`` pairs and returns the matrices
with those cells profiled (same rows and configurations).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from greenllm.config import Configuration
from greenllm.errors import ConfigError
from greenllm.scheduler.matrix import ProfileMatrices, RowKey
from greenllm.scheduler.planner import Plan, PlanEntry, Planner, measured_feasible

__all__ = ["Measure", "VerifiedPlan", "reveal", "to_verify", "verify_plan"]

logger = logging.getLogger(__name__)

Cell = tuple[RowKey, Configuration]
Measure = Callable[[Sequence[Cell]], ProfileMatrices]


@dataclass(frozen=True)
class VerifiedPlan:
    """The final plan, the matrices it was made from and the cells profiled to get there."""

    plan: Plan
    matrices: ProfileMatrices
    profiled: tuple[Cell, ...]
    rounds: int

    @property
    def unverified(self) -> list[PlanEntry]:
        """Entries whose chosen cell is still filled, not measured (the budget ran out)."""
        return [e for e in self.plan.entries if not e.measured]


def to_verify(planner: Planner, m: ProfileMatrices, search_sigmas: float = 2.0) -> list[Cell]:
    """The filled cells worth profiling, most valuable first, at most one per workload.

    1. Workloads where nothing measured meets the SLO ("open"): the planner's choice if it is
       filled, else (a measured miss: the fallback) the filled cell most likely to meet the
       target (largest ``attainment_z``). Only *plausible* cells count, whose attainment plus
       ``search_sigmas`` errors (logit space) reaches the target (``z >= -search_sigmas``);
       an open workload without one is given up (its fallback stands).
    2. The other filled choices, by their predicted saving over the cheapest measured
       configuration that meets the SLO. A filled choice predicted no cheaper than that one
       is not worth profiling (the measured one is served instead).
    """
    mc, base = planner.candidates(m)
    filled = planner.complete(mc)
    choice = planner.choose(filled, base)
    rows = np.arange(mc.shape[0])
    carbon = filled["carbon"]
    ok = measured_feasible(mc, planner.slo_target)
    open_ = ~ok.any(axis=1)
    z = np.where(mc.observed, -np.inf, filled["attainment_z"])
    plausible = ~mc.observed & (z >= -search_sigmas)
    likeliest = np.argmax(z, axis=1)
    pick = np.where(plausible[rows, choice], choice, likeliest)
    first = rows[open_ & plausible[rows, pick]]
    best_measured = np.min(np.where(ok, carbon, np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = 1.0 - carbon[rows, choice] / best_measured
    rest = rows[~mc.observed[rows, choice] & ~open_ & (gain > 0)]
    rest = rest[np.argsort(-gain[rest], kind="stable")]
    cells = [(r, pick[r]) for r in first] + [(r, choice[r]) for r in rest]
    return [(mc.rows[r], mc.configs[c]) for r, c in cells]


def verify_plan(
    planner: Planner,
    matrices: ProfileMatrices,
    measure: Measure,
    budget_cells: int,
    *,
    round_cells: int | None = None,
    max_rounds: int = 10,
    search_sigmas: float = 2.0,
    explore_margin_sigmas: float = 0.0,
    prefer_measured: bool = False,
) -> VerifiedPlan:
    """Profile the filled cells a planner with ``explore_margin_sigmas`` would choose
    (:func:`to_verify` with ``search_sigmas``), at most ``round_cells`` per round (default: a
    quarter of ``budget_cells``, rounded up) and ``budget_cells`` in all, completing and
    choosing again after each round, for at most ``max_rounds`` rounds or until no filled
    choice is worth profiling; then plan with ``planner`` itself (its own margin), with
    ``prefer_measured`` (:meth:`Planner.plan`). No cell is profiled twice."""
    if budget_cells < 0:
        raise ConfigError(f"budget_cells = {budget_cells!r}: must be >= 0")
    if round_cells is not None and round_cells < 1:
        raise ConfigError(f"round_cells = {round_cells!r}: must be >= 1 (or None)")
    if max_rounds < 0:
        raise ConfigError(f"max_rounds = {max_rounds!r}: must be >= 0")
    if not search_sigmas >= 0:
        raise ConfigError(f"search_sigmas = {search_sigmas!r}: must be a number >= 0")
    if not (explore_margin_sigmas >= 0 and explore_margin_sigmas < float("inf")):
        raise ConfigError(
            f"explore_margin_sigmas = {explore_margin_sigmas!r}: must be a finite number >= 0"
        )
    per_round = round_cells or max(1, math.ceil(budget_cells / 4))
    explorer = copy.copy(planner)
    explorer.margin_sigmas = float(explore_margin_sigmas)
    profiled: list[Cell] = []
    m = matrices
    rounds = 0
    while rounds < max_rounds and len(profiled) < budget_cells:
        todo = to_verify(explorer, m, search_sigmas)
        if not todo:
            break
        cells = todo[: min(per_round, budget_cells - len(profiled))]
        before = int(m.observed.sum())
        m = measure(cells)
        if m.shape != matrices.shape:
            raise ConfigError(
                f"measure returned matrices of shape {m.shape}; expected {matrices.shape}"
            )
        if m.observed.sum() <= before:
            logger.warning("measure profiled none of %d cells; stopping", len(cells))
            break
        profiled.extend(cells)
        rounds += 1
    plan = planner.plan(m, prefer_measured=prefer_measured)
    logger.info(
        "verified plan: %d cells profiled in %d rounds, %d choices still filled",
        len(profiled), rounds, sum(not e.measured for e in plan.entries),
    )  # fmt: skip
    return VerifiedPlan(plan, m, tuple(profiled), rounds)


def reveal(
    full: ProfileMatrices, sparse: ProfileMatrices, cells: Sequence[Cell]
) -> ProfileMatrices:
    """``sparse`` with ``cells`` copied from ``full`` (same rows and configurations): the
    ``measure`` of benchmarks and tests, where every cell was profiled in advance."""
    if full.rows != sparse.rows or full.configs != sparse.configs:
        raise ConfigError("reveal: full and sparse matrices must have the same rows and configs")
    index = {k: i for i, k in enumerate(full.rows)}
    mask = np.zeros(full.shape, dtype=bool)
    for key, config in cells:
        if key not in index:
            raise ConfigError(f"reveal: row {key.label} is not in the matrices")
        mask[index[key], full.column(config)] = True
    return full.where(mask, sparse)
