"""Verify before serving: profile the cells a plan relies on, then plan again (beyond the paper).

Collaborative filtering fills most of the matrices, and a filled cell can be wrong. A plan only
*relies* on one cell per workload, the chosen one. :func:`verify_plan` spends a profiling
budget on exactly those cells: complete and choose, profile the chosen cells that were filled
(most valuable first, :func:`to_verify`), complete and choose again with the new measurements,
until no filled choice is worth profiling or the budget is spent. A chosen cell that turns out
to miss the SLO is then measured as a miss, and the next round moves that workload to another
configuration. The search explores without a safety margin (it profiles the cheapest cells
that might meet the SLO); the final plan applies the planner's margin to the cells still filled.

``measure`` is whatever profiles cells in the caller's world: a sweep on a backend followed by
:func:`~greenllm.scheduler.matrix.matrices_from_store`, or, in the benchmarks, revealing cells
of a fully profiled matrix. It receives ``(row, configuration)`` pairs and returns the matrices
with those cells profiled (same rows and configurations).
"""

from __future__ import annotations

import copy
import logging
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


def to_verify(planner: Planner, m: ProfileMatrices) -> list[Cell]:
    """The filled cells worth profiling, most valuable first.

    1. The planner's filled choices in workloads where nothing measured meets the SLO;
    2. workloads where nothing measured meets the SLO and the choice is a measured miss (the
       fallback): their filled cell most likely to meet it (largest ``attainment_z``);
    3. the other filled choices, by their predicted saving over the cheapest measured
       configuration that meets the SLO. A filled choice predicted no cheaper than that one
       is not worth profiling (the measured one is served instead).
    """
    mc, base = planner.candidates(m)
    filled = planner.complete(mc)
    choice = planner.choose(filled, base)
    rows = np.arange(mc.shape[0])
    carbon = filled["carbon"]
    ok = measured_feasible(mc, planner.slo_target)
    none_ok = ~ok.any(axis=1)
    best_measured = np.min(np.where(ok, carbon, np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.where(none_ok, np.inf, 1.0 - carbon[rows, choice] / best_measured)
    chosen_filled = ~mc.observed[rows, choice]
    first = rows[chosen_filled & none_ok]
    z = np.where(mc.observed, -np.inf, filled["attainment_z"])
    likeliest = np.argmax(z, axis=1)
    stuck = rows[~chosen_filled & none_ok & np.isfinite(z[rows, likeliest])]
    rest = rows[chosen_filled & ~none_ok & (gain > 0)]
    rest = rest[np.argsort(-gain[rest], kind="stable")]
    cells = [(r, choice[r]) for r in first]
    cells += [(r, likeliest[r]) for r in stuck]
    cells += [(r, choice[r]) for r in rest]
    return [(mc.rows[r], mc.configs[c]) for r, c in cells]


def verify_plan(
    planner: Planner,
    matrices: ProfileMatrices,
    measure: Measure,
    budget_cells: int,
    *,
    max_rounds: int = 10,
    explore_margin_sigmas: float = 0.0,
    prefer_measured: bool = False,
) -> VerifiedPlan:
    """Profile the filled cells a planner with ``explore_margin_sigmas`` would choose
    (:func:`to_verify`, at most ``budget_cells`` in all), complete and choose again, for at
    most ``max_rounds`` rounds or until no filled choice is worth profiling; then plan with
    ``planner`` itself (its own margin), with ``prefer_measured`` (:meth:`Planner.plan`).

    Exploring without a margin (the default) profiles the cheapest configurations that might
    meet the SLO, the ones a margin would rule out unseen; the final plan keeps the margin for
    the cells still filled."""
    if budget_cells < 0:
        raise ConfigError(f"budget_cells = {budget_cells!r}: must be >= 0")
    if max_rounds < 0:
        raise ConfigError(f"max_rounds = {max_rounds!r}: must be >= 0")
    if not (explore_margin_sigmas >= 0 and explore_margin_sigmas < float("inf")):
        raise ConfigError(
            f"explore_margin_sigmas = {explore_margin_sigmas!r}: must be a finite number >= 0"
        )
    explorer = copy.copy(planner)
    explorer.margin_sigmas = float(explore_margin_sigmas)
    profiled: list[Cell] = []
    m = matrices
    rounds = 0
    while rounds < max_rounds and len(profiled) < budget_cells:
        todo = to_verify(explorer, m)
        if not todo:
            break
        cells = todo[: budget_cells - len(profiled)]
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
    return ProfileMatrices(
        rows=full.rows, configs=full.configs,
        seconds=np.where(mask[..., None], full.seconds, sparse.seconds),
        energy_j=np.where(mask[..., None], full.energy_j, sparse.energy_j),
        tokens=np.where(mask, full.tokens, sparse.tokens),
        attainment=np.where(mask, full.attainment, sparse.attainment),
    )  # fmt: skip
