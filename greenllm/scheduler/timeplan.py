"""Choose a configuration per hour as grid carbon intensity changes (beyond the paper).

The paper plans at one fixed intensity. Per token, carbon is linear in intensity::

    c_hj(alpha_h) = embodied_j + alpha_h * energy_j          (Eq. 3 per token)

so a configuration with low embodied but high energy per token wins at low intensity, and one
with low energy wins at high intensity (Section 5, Implication 2). This module picks, for every
hour ``h`` of a trace, the configuration ``j`` that minimises

    sum_h tokens_h * c_hj(alpha_h) + sum_{switches} switch_cost_g(alpha_h)

over the configurations allowed for that hour (SLO-feasible by Algorithm 1, or its fallback),
where a switch (e.g. loading a draft model on the old GPU) costs
``switch_energy_kwh * alpha_h + switch_embodied_g`` grams. Two solvers:

* ``"offline"``: exact dynamic programme (Viterbi) given the whole trace (a perfect forecast).
* ``"online"``: causal hysteresis. Keep the current configuration until another one has
  accumulated a carbon advantage larger than ``hysteresis`` x the switching cost (a
  break-even rule in the spirit of ski rental); a configuration that becomes infeasible is left
  at once. It never flaps: every switch is paid back by past savings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from greenllm.errors import ConfigError

__all__ = ["HourlyPlan", "Hysteresis", "plan_hourly"]


@dataclass(frozen=True)
class HourlyPlan:
    """Result of :func:`plan_hourly` (all carbon in grams).

    The switching cost used: ``switch_energy_kwh`` and ``switch_embodied_g`` per switch, and
    ``switch_cost_source`` (``"given"``, or how the planner estimated it). The load fields are
    filled by :meth:`Planner.plan_hourly <greenllm.scheduler.planner.Planner.plan_hourly>`:
    ``profiled_qps`` (lowest, highest profiled QPS level), ``hours_above_profiled`` /
    ``hours_below_profiled`` (hours whose rate lies outside it), ``qps_over_profiled``
    (highest requested / highest profiled QPS: above 1 means beyond the profiles, served by
    the top level's configuration whose attainment there is unknown), ``qps_under_profiled``
    (lowest requested / lowest profiled QPS: below 1 means served by the lowest level, which
    is conservative) and ``load_warning`` (the message logged, or None).
    """

    choice: np.ndarray  # (H,) configuration index per hour
    carbon_g: np.ndarray  # (H,) serving carbon per hour, switching excluded
    switch_g: np.ndarray  # (H,) switching carbon paid at the start of each hour
    static_choice: np.ndarray  # (H,) the paper's plan: best per workload at the mean intensity
    static_carbon_g: np.ndarray  # (H,) its carbon per hour, switching included
    baseline_carbon_g: np.ndarray  # (H,) the baseline configuration (e.g. Standalone) per hour
    switch_energy_kwh: float = 0.0
    switch_embodied_g: float = 0.0
    switch_cost_source: str = "given"
    profiled_qps: tuple[float, float] | None = None
    hours_above_profiled: int = 0
    hours_below_profiled: int = 0
    qps_over_profiled: float = 1.0
    qps_under_profiled: float = 1.0
    load_warning: str | None = None

    @property
    def load_outside_profiled(self) -> bool:
        """Some hour's rate lies outside the profiled QPS range."""
        return self.hours_above_profiled + self.hours_below_profiled > 0

    @property
    def total_g(self) -> float:
        return float(self.carbon_g.sum() + self.switch_g.sum())

    @property
    def static_total_g(self) -> float:
        return float(self.static_carbon_g.sum())

    @property
    def baseline_total_g(self) -> float:
        return float(self.baseline_carbon_g.sum())

    @property
    def switches(self) -> int:
        return int(np.count_nonzero(np.diff(self.choice)))

    @property
    def savings_vs_static(self) -> float:
        return 1.0 - self.total_g / self.static_total_g

    @property
    def savings_vs_baseline(self) -> float:
        return 1.0 - self.total_g / self.baseline_total_g


def plan_hourly(
    embodied_g_per_token: np.ndarray,
    energy_kwh_per_token: np.ndarray,
    allowed: np.ndarray,
    *,
    row_of_hour: np.ndarray,
    intensity_g_per_kwh: np.ndarray,
    tokens_per_hour: np.ndarray,
    baseline: int = 0,
    switch_energy_kwh: float = 0.0,
    switch_embodied_g: float = 0.0,
    solver: Literal["offline", "online"] = "offline",
    hysteresis: float = 1.0,
) -> HourlyPlan:
    """Pick a configuration per hour; see the module docstring.

    ``embodied_g_per_token``, ``energy_kwh_per_token`` and ``allowed`` are (rows, configs)
    matrices over workload rows (e.g. QPS levels); ``row_of_hour[h]`` says which row hour ``h``
    serves. ``allowed`` must have at least one True per row used (use :func:`allowed_configs`).
    """
    emb = np.asarray(embodied_g_per_token, dtype=float)
    en = np.asarray(energy_kwh_per_token, dtype=float)
    ok = np.asarray(allowed, dtype=bool)
    rows = np.asarray(row_of_hour, dtype=int)
    alpha = np.asarray(intensity_g_per_kwh, dtype=float)
    tokens = np.asarray(tokens_per_hour, dtype=float)
    _check(emb, en, ok, rows, alpha, tokens, baseline, switch_energy_kwh, switch_embodied_g)

    cost = tokens[:, None] * (emb[rows] + alpha[:, None] * en[rows])  # (H, C) grams per hour
    cost_allowed = np.where(ok[rows], cost, np.inf)
    switch = switch_energy_kwh * alpha + switch_embodied_g  # (H,) grams per switch

    if solver == "offline":
        choice = _viterbi(cost_allowed, switch)
    elif solver == "online":
        if not np.isfinite(hysteresis) or hysteresis < 0:
            raise ConfigError(f"hysteresis = {hysteresis!r}: must be a finite number >= 0")
        choice = _hysteresis(cost_allowed, switch, hysteresis)
    else:
        raise ConfigError(f"solver = {solver!r}: choose 'offline' or 'online'")

    hours = np.arange(len(rows))
    mean_alpha = float(alpha.mean())
    static_row_choice = np.argmin(np.where(ok, emb + mean_alpha * en, np.inf), axis=1)
    static = static_row_choice[rows]
    static_carbon = cost[hours, static] + _switch_cost(static, switch)
    return HourlyPlan(
        choice=choice,
        carbon_g=cost[hours, choice],
        switch_g=_switch_cost(choice, switch),
        static_choice=static,
        static_carbon_g=static_carbon,
        baseline_carbon_g=cost[:, baseline],
        switch_energy_kwh=float(switch_energy_kwh),
        switch_embodied_g=float(switch_embodied_g),
    )


def _switch_cost(choice: np.ndarray, switch: np.ndarray) -> np.ndarray:
    paid = np.zeros(len(choice))
    paid[1:] = np.where(np.diff(choice) != 0, switch[1:], 0.0)
    return paid


def _viterbi(cost: np.ndarray, switch: np.ndarray) -> np.ndarray:
    """Exact minimum of serving + switching carbon; O(hours x configs)."""
    n_hours, n_cfg = cost.shape
    value = cost[0].copy()
    came_from = np.zeros((n_hours, n_cfg), dtype=np.int64)
    cols = np.arange(n_cfg)
    for h in range(1, n_hours):
        best = int(np.argmin(value))
        moved = value[best] + switch[h]
        stay = value <= moved
        came_from[h] = np.where(stay, cols, best)
        value = cost[h] + np.where(stay, value, moved)
    choice = np.empty(n_hours, dtype=np.int64)
    choice[-1] = int(np.argmin(value))
    for h in range(n_hours - 1, 0, -1):
        choice[h - 1] = came_from[h, choice[h]]
    return choice


class Hysteresis:
    """The online rule, one period at a time (the live controller's and ``solver="online"``'s).

    :meth:`step` takes one period's carbon per configuration (``inf``: not allowed now) and
    the cost of a switch (g); it keeps the current configuration until another has
    accumulated an advantage over it larger than ``factor`` x the switching cost, and leaves a
    configuration at once when it becomes infeasible. ``current`` is None before the first
    step (which takes the cheapest).
    """

    def __init__(self, n_configs: int, factor: float = 1.0, current: int | None = None) -> None:
        if isinstance(n_configs, bool) or not isinstance(n_configs, int) or n_configs < 1:
            raise ConfigError(f"n_configs = {n_configs!r}: must be an integer >= 1")
        if isinstance(factor, bool) or not isinstance(factor, int | float | np.number) \
                or not np.isfinite(factor) or factor < 0:  # fmt: skip
            raise ConfigError(f"hysteresis = {factor!r}: must be a finite number >= 0")
        if current is not None and not 0 <= current < n_configs:
            raise ConfigError(f"current = {current!r}: must index a configuration "
                              f"0..{n_configs - 1}")  # fmt: skip
        self.factor = float(factor)
        self.current = current
        self.advantage_g = np.zeros(n_configs)
        """Each configuration's carbon advantage over the current one since the last switch."""

    def step(self, cost_g: np.ndarray, switch_g: float) -> int:
        """This period's configuration given its carbon per configuration."""
        row = np.asarray(cost_g, dtype=float)
        if row.shape != self.advantage_g.shape or not np.isfinite(row).any():
            raise ConfigError(f"cost_g: need {self.advantage_g.size} costs with one finite "
                              f"(allowed) entry, got shape {row.shape}")  # fmt: skip
        if self.current is None or not np.isfinite(row[self.current]):  # start, or infeasible
            self.current = int(np.argmin(row))
            self.advantage_g[:] = 0.0
            return self.current
        gain = np.where(np.isfinite(row), row[self.current] - row, -np.inf)
        self.advantage_g = np.maximum(0.0, self.advantage_g + gain)
        best = int(np.argmax(self.advantage_g))
        if best != self.current and self.advantage_g[best] > self.factor * switch_g:
            self.current = best
            self.advantage_g[:] = 0.0
        return self.current


def _hysteresis(cost: np.ndarray, switch: np.ndarray, factor: float) -> np.ndarray:
    rule = Hysteresis(cost.shape[1], factor)
    return np.array([rule.step(cost[h], float(switch[h])) for h in range(cost.shape[0])],
                    dtype=np.int64)  # fmt: skip


def _check(
    emb: np.ndarray,
    en: np.ndarray,
    ok: np.ndarray,
    rows: np.ndarray,
    alpha: np.ndarray,
    tokens: np.ndarray,
    baseline: int,
    sw_kwh: float,
    sw_g: float,
) -> None:
    if emb.ndim != 2 or emb.shape != en.shape or emb.shape != ok.shape:
        raise ConfigError(
            f"embodied {emb.shape}, energy {en.shape} and allowed {ok.shape} "
            "must be 2-D arrays of one shape"
        )
    if not (rows.shape == alpha.shape == tokens.shape) or rows.ndim != 1 or len(rows) == 0:
        raise ConfigError(
            f"row_of_hour {rows.shape}, intensity {alpha.shape} and tokens {tokens.shape} "
            "must be non-empty 1-D arrays of one length (one entry per hour)"
        )
    if rows.min() < 0 or rows.max() >= emb.shape[0]:
        raise ConfigError(f"row_of_hour must index rows 0..{emb.shape[0] - 1}")
    for name, arr in (("intensity", alpha), ("tokens_per_hour", tokens)):
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ConfigError(f"{name} must be finite and >= 0 (hour {int(np.argmin(arr))})")
    used = np.unique(rows)
    bad = used[~ok[used].any(axis=1)]
    if bad.size:
        raise ConfigError(f"row {int(bad[0])} allows no configuration; pass Algorithm 1's fallback")
    if not np.all(np.isfinite(emb[used][ok[used]])) or not np.all(np.isfinite(en[used][ok[used]])):
        raise ConfigError("embodied and energy per token must be finite where allowed")
    if not 0 <= baseline < emb.shape[1]:
        raise ConfigError(
            f"baseline = {baseline}: must index a configuration 0..{emb.shape[1] - 1}"
        )
    for name, v in (("switch_energy_kwh", sw_kwh), ("switch_embodied_g", sw_g)):
        if isinstance(v, bool) or not isinstance(v, int | float | np.number):
            raise ConfigError(f"{name} = {v!r}: must be a finite number >= 0")
        if not np.isfinite(v) or v < 0:
            raise ConfigError(f"{name} = {v!r}: must be a finite number >= 0")
