"""Carbon per token completed through its physical factors (beyond the paper).

Carbon per token (Eq. 1-3) is a product of three factors, each closer to low rank, better
bounded and more regular than the product::

    carbon_g_per_token = (embodied_g_per_s + alpha * power_w / 3.6e6) * time_factor / offered

* ``offered = qps * output_tokens`` of the row: the token rate the workload offers (known);
* ``time_factor = allocated_s * offered / tokens``: the allocated time over the time in which
  the served tokens were offered. A configuration that keeps up serves every token and is
  released just after the last arrival, so it is close to 1 and nearly the same for every
  such cell; it grows only once the configuration falls behind (to about load / capacity);
* ``embodied_g_per_s``: Eq. 1 summed over the configuration's GPUs per allocated second,
  fixed by the GPUs and their lifetimes;
* ``power_w``: the configuration's average power, which rises with load.

``allocated_s`` is the longest allocation among the configuration's GPUs. Each factor is
completed in log space by collaborative filtering. Power is completed as an idle floor plus a
dynamic part: the floor is the sum of the GPUs' idle draw (``GPUSpec.idle_power_w``), but
never more than 90% of the lowest power measured on that configuration; the part above it is
completed in log space (it scales with load and with the configuration's efficiency, which
multiply), so a filled power is never below the floor; it is also capped at the GPUs' summed
maximum power. With ``monotone`` (:func:`~greenllm.scheduler.constraints.monotone_in_load`)
the time factor is clamped to rise with load (QPS and request size) but no faster than QPS
(the served token rate, ``offered / time_factor``, never falls as more is offered: it equals
the offered rate while the configuration keeps up and its capacity after), and the power to
rise with QPS. Observed cells are returned as
measured.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from greenllm.carbon import get_gpu
from greenllm.errors import ProfileError
from greenllm.scheduler.completion.base import Hyperparameter
from greenllm.scheduler.completion.complete import complete
from greenllm.scheduler.constraints import monotone_in_load
from greenllm.scheduler.matrix import ProfileMatrices
from greenllm.units import J_PER_KWH

__all__ = [
    "CarbonFactors",
    "carbon_factors",
    "complete_carbon_factors",
    "filled_carbon_per_token",
    "power_bounds_w",
    "stable_time_factor",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CarbonFactors:
    """The factors of carbon per token, ``(n_rows, n_configs)`` each (NaN where unknown)."""

    time_factor: np.ndarray
    embodied_g_per_s: np.ndarray
    power_w: np.ndarray
    offered_tokens_per_s: np.ndarray  # (n_rows,)

    def embodied_g_per_token(self) -> np.ndarray:
        return self.embodied_g_per_s * self.time_factor / self.offered_tokens_per_s[:, None]

    def energy_kwh_per_token(self) -> np.ndarray:
        per_s = self.power_w / J_PER_KWH
        return per_s * self.time_factor / self.offered_tokens_per_s[:, None]

    def with_time_factor(self, time_factor: np.ndarray) -> CarbonFactors:
        return CarbonFactors(time_factor, self.embodied_g_per_s, self.power_w,
                             self.offered_tokens_per_s)  # fmt: skip


def _offered(m: ProfileMatrices) -> np.ndarray:
    """qps x output tokens per row; 1 where that is not a positive number (then the time
    factor is just allocated seconds per token: the product is unchanged)."""
    rate = np.array([k.qps * k.output_tokens for k in m.rows], dtype=float)
    return np.where(np.isfinite(rate) & (rate > 0), rate, 1.0)


def carbon_factors(
    m: ProfileMatrices, lifetimes_years: float | Mapping[str, float] = 7.0
) -> CarbonFactors:
    """The measured factors (NaN where no token was served or nothing was profiled)."""
    served = m.carbon_observed
    alloc = np.where(served, np.nan_to_num(m.seconds).max(axis=2), np.nan)
    bad = served & ~(alloc > 0)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ProfileError(
            f"row {r} ({m.rows[r].label}), column {c} ({m.configs[c].label}) served "
            f"{m.tokens[r, c]:g} tokens with no allocated GPU time; re-profile that cell"
        )
    offered = _offered(m)
    with np.errstate(invalid="ignore", divide="ignore"):
        embodied_g = m.embodied_g_per_token(lifetimes_years) * m.tokens  # Eq. 1 summed, g
        return CarbonFactors(
            time_factor=alloc * offered[:, None] / np.where(served, m.tokens, np.nan),
            embodied_g_per_s=embodied_g / alloc,
            power_w=np.where(served, m.energy_j.sum(axis=2), np.nan) / alloc,
            offered_tokens_per_s=offered,
        )


def complete_carbon_factors(
    m: ProfileMatrices,
    lifetimes_years: float | Mapping[str, float] = 7.0,
    *,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    monotone: bool = True,
    **params: Hyperparameter,
) -> CarbonFactors:
    """Every factor completed in log space (observed cells as measured); see the module."""
    measured = carbon_factors(m, lifetimes_years)

    def fill(matrix: np.ndarray) -> np.ndarray:
        return complete(matrix, method=method, rank=rank, seed=seed, transform="log", **params)

    time_factor = fill(measured.time_factor)
    embodied = fill(measured.embodied_g_per_s)
    idle_w, peak_w = power_bounds_w(m)
    with np.errstate(invalid="ignore"):
        lowest = np.nanmin(np.where(m.carbon_observed, measured.power_w, np.inf), axis=0)
        highest = np.nanmax(np.where(m.carbon_observed, measured.power_w, -np.inf), axis=0)
    floor = np.minimum(idle_w, 0.9 * lowest)[None, :]
    power = floor + fill(measured.power_w - floor)
    power = np.where(m.carbon_observed, measured.power_w,
                     np.minimum(power, np.maximum(peak_w, highest)[None, :]))  # fmt: skip
    if monotone:
        served, offered = m.carbon_observed, measured.offered_tokens_per_s[:, None]
        # served token rate (offered / time factor) never falls with QPS: caps the time factor
        rate = monotone_in_load(offered / time_factor, served, m.rows, decreasing=False,
                                axes="qps")  # fmt: skip
        time_factor = np.where(served, time_factor, offered / rate)
        time_factor = monotone_in_load(time_factor, served, m.rows, decreasing=False)
        power = monotone_in_load(power, served, m.rows, decreasing=False, axes="qps")
    return CarbonFactors(time_factor, embodied, power, measured.offered_tokens_per_s)


def power_bounds_w(m: ProfileMatrices) -> tuple[np.ndarray, np.ndarray]:
    """Per configuration, the summed idle and maximum power of its GPUs (catalog values)."""
    specs = [[get_gpu(g) for g in cfg.gpus] for cfg in m.configs]
    idle = np.array([sum(s.idle_power_w for s in gpus) for gpus in specs], dtype=float)
    peak = np.array([sum(s.max_power_w for s in gpus) for gpus in specs], dtype=float)
    return idle, peak


def stable_time_factor(
    measured: CarbonFactors, attainment: np.ndarray, slo_target: float
) -> np.ndarray | None:
    """Per configuration, the time factor of a cell that meets the SLO (so keeps up with its
    load): the median over the measured cells of that configuration whose measured attainment
    reaches ``slo_target``, or over all such cells for a configuration without one (geometric,
    i.e. in log space). None when no measured cell meets the target."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(measured.time_factor) & (np.nan_to_num(attainment) >= slo_target)
    if not ok.any():
        return None
    log_t = np.log(np.where(ok, measured.time_factor, 1.0))
    overall = float(np.median(log_t[ok]))
    per_col = [float(np.median(log_t[ok[:, j], j])) if ok[:, j].any() else overall
               for j in range(ok.shape[1])]  # fmt: skip
    return np.exp(np.array(per_col))


def filled_carbon_per_token(
    m: ProfileMatrices,
    lifetimes_years: float | Mapping[str, float],
    meets_slo: np.ndarray,
    slo_target: float,
    *,
    method: str = "sgd",
    rank: int | None = None,
    seed: int = 0,
    monotone: bool = True,
    **params: Hyperparameter,
) -> tuple[np.ndarray, np.ndarray]:
    """Embodied g/token and kWh/token of every cell: measured where a token was served, else
    from the completed factors (the keywords go to :func:`complete_carbon_factors`). A filled
    cell flagged in ``meets_slo`` keeps up with its load, so it gets the time factor measured on
    cells that met the SLO (:func:`stable_time_factor`), not an extrapolation."""
    filled = complete_carbon_factors(
        m, lifetimes_years, method=method, rank=rank, seed=seed, monotone=monotone, **params
    )
    stable = stable_time_factor(carbon_factors(m, lifetimes_years), m.attainment, slo_target)
    served = m.carbon_observed
    if stable is not None:
        keeps_up = np.asarray(meets_slo, dtype=bool) & ~served
        filled = filled.with_time_factor(np.where(keeps_up, stable[None, :], filled.time_factor))
    emb = np.where(served, m.embodied_g_per_token(lifetimes_years), filled.embodied_g_per_token())
    energy = np.where(served, m.energy_kwh_per_token(), filled.energy_kwh_per_token())
    return emb, energy
