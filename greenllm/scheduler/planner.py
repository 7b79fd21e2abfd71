"""The SLO-aware planner (Section 4.3): profiles in, a per-workload plan out.

Steps, as in Figure 5 and Algorithm 1:

1. Build the matrices from the profile store (:class:`~greenllm.scheduler.matrix.ProfileMatrices`),
   recomputing carbon per token for the planner's intensity and lifetimes (Eq. 1-3).
2. Fill the unprofiled cells by collaborative filtering: SLO attainment in logit space with a
   per-cell error estimate; carbon per token through its physical factors (time per offered
   token, embodied carbon per second, power: :mod:`~greenllm.scheduler.carbon_factors`), each in
   log space. Beyond the paper, filled cells are clamped to the orders of
   :mod:`~greenllm.scheduler.constraints` (attainment never rises with load).
3. Algorithm 1 per workload: the lowest-carbon configuration whose attainment reaches the target,
   else the fallback. Beyond the paper, with ``margin_sigmas > 0`` a *filled* cell is feasible
   only if its attainment minus ``margin_sigmas`` estimated errors (in logit space, where the
   errors were estimated) still reaches the target, unless a measured cell with more load
   already does; the SLO fallback then takes the configuration most likely to meet the target.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
from pydantic import Field

from greenllm.checks import finite_number
from greenllm.config import Configuration, FrozenModel
from greenllm.errors import ConfigError, ProfileError
from greenllm.scheduler.carbon_factors import carbon_factors, filled_carbon_per_token
from greenllm.scheduler.completion.complete import METHODS, complete_with_uncertainty
from greenllm.scheduler.margin import AttainmentBounds, attainment_bounds, choose_with_margin
from greenllm.scheduler.matrix import ProfileMatrices, ProfileSource
from greenllm.scheduler.timeplan import HourlyPlan, plan_hourly
from greenllm.units import J_PER_KWH, MAX_INTENSITY_G_PER_KWH

if TYPE_CHECKING:
    from greenllm.carbon import CarbonIntensityTrace

__all__ = ["Plan", "PlanEntry", "Planner"]

logger = logging.getLogger(__name__)

_MAX_MARGIN_SIGMAS = 100.0
_MAX_LIFETIME_YEARS = 100.0
_MAX_RANK = 256  # planner matrices are small; the rank search tries 1..8
_MAX_SEED = 2**32 - 1  # numpy's SeedSequence accepts any int >= 0; this keeps seeds portable


ENGINE_START_S = 60.0
"""Seconds to restart a configuration's engines (load the weights, warm up; vLLM's start of an
8B model with CUDA graphs is 30-90 s): the default length of a switch."""


Priority = Literal["slo", "default"]
#: Where a plan figure's energy came from: a profiled cell's source, or "filled" (by CF).
EnergySource = Literal["measured", "modelled", "unmeasured", "filled"]
CarbonModel = Literal["factors", "direct"]


class PlanEntry(FrozenModel):
    """The choice for one workload row, with where each number came from."""

    application: str
    input_tokens: int
    output_tokens: int
    qps: float
    configuration: Configuration
    carbon_g_per_token: float
    embodied_g_per_token: float
    operational_g_per_token: float
    slo_attainment: float
    slo_attainment_stderr: float
    measured: bool = Field(description="the chosen cell was profiled (not filled by CF)")
    fallback: bool = Field(description="no configuration met the SLO; the fallback chose")
    feasible_configs: int
    baseline_carbon_g_per_token: float
    baseline_measured: bool
    savings: float = Field(description="1 - chosen / baseline carbon per token")
    energy_source: EnergySource = Field(
        default="modelled",
        description="the chosen cell's energy: measured, modelled, unmeasured (0 J: embodied "
        "carbon only) or filled (by collaborative filtering)",
    )
    baseline_energy_source: EnergySource = Field(
        default="modelled", description="the same for the baseline cell"
    )


class Plan(FrozenModel):
    """A plan: the chosen configuration per workload and the settings that produced it."""

    intensity_g_per_kwh: float
    region: str | None = None
    lifetimes_years: dict[str, float]
    slo_target: float
    priority: Priority
    method: str
    margin_sigmas: float
    baseline: Configuration
    entries: list[PlanEntry]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        return cls.model_validate_json(text)


@dataclass(frozen=True)
class PlanTable:
    """One application at one request size: every candidate configuration at every profiled
    QPS level, completed (what a live controller chooses from; :meth:`Planner.table`).

    Arrays are (levels, configs). ``allowed``: Algorithm 1's feasible set per level, or its
    fallback where none is feasible; ``attainment_lower`` is what the SLO target is compared
    with (after the safety margin). Carbon per token at intensity ``alpha`` is
    ``embodied_g_per_token + alpha * energy_kwh_per_token`` (Eq. 3 per token).
    """

    application: str
    size: tuple[int, int]
    qps_levels: np.ndarray
    configs: tuple[Configuration, ...]
    embodied_g_per_token: np.ndarray
    energy_kwh_per_token: np.ndarray
    attainment: np.ndarray
    attainment_lower: np.ndarray
    attainment_z: np.ndarray
    allowed: np.ndarray
    measured: np.ndarray
    baseline: int
    slo_target: float
    margin_sigmas: float
    matrices: ProfileMatrices = field(repr=False)
    lifetimes_years: dict[str, float] = field(default_factory=dict)

    def level(self, qps: float | np.ndarray) -> np.ndarray:
        """The row serving each rate: the next profiled level at or above it (the top level
        above every profiled one)."""
        q = np.atleast_1d(np.asarray(qps, dtype=float))
        return np.minimum(np.searchsorted(self.qps_levels, q - 1e-12), len(self.qps_levels) - 1)

    def carbon_g_per_token(self, row: int, intensity_g_per_kwh: float) -> np.ndarray:
        """Each configuration's carbon per token at ``row`` and this intensity (Eq. 3)."""
        return self.embodied_g_per_token[row] + intensity_g_per_kwh * self.energy_kwh_per_token[row]

    def slo_choice(
        self, row: int, intensity_g_per_kwh: float, exclude: Sequence[int] = ()
    ) -> int:
        """Algorithm 1 with ``priority="slo"`` at ``row``: the lowest-carbon configuration that
        meets the SLO, else the one most likely to; ``exclude``: configurations known to miss
        it (e.g. observed live), taken as attaining 0."""
        one = slice(row, row + 1)
        att, low = self.attainment[one].copy(), self.attainment_lower[one].copy()
        if len(exclude):
            att[0, list(exclude)] = low[0, list(exclude)] = 0.0
        bounds = AttainmentBounds(att, low, self.attainment_z[one])
        carbon = self.carbon_g_per_token(row, intensity_g_per_kwh)[None, :]
        return int(choose_with_margin(carbon, bounds, self.slo_target, "slo", self.baseline,
                                      self.margin_sigmas)[0])  # fmt: skip

    def switch_cost(
        self,
        configs: Sequence[int] | np.ndarray | None = None,
        engine_start_s: float = ENGINE_START_S,
    ) -> tuple[float, float]:
        """(kWh, g embodied) of one switch to the costliest of ``configs``
        (:func:`estimate_switch_cost`)."""
        return estimate_switch_cost(self.matrices, self.lifetimes_years, configs, engine_start_s)


class Planner:
    """Profiles + intensity + lifetimes + SLO target -> :class:`Plan`.

    ``lifetimes_years`` is one number for every GPU or a mapping ``{"T4": 10, "default": 7}``.
    ``default`` is the configuration Algorithm 1 falls back to with ``priority="default"`` and
    the baseline that savings are measured against (Standalone when None). ``method`` and
    ``rank`` choose the completion (ALS by default, chosen on development masks of the
    simulator's matrices; SGD is within noise on held-out masks, docs/planner.md).
    ``margin_sigmas`` is the safety margin on filled attainment, in errors estimated in logit
    space per configuration (``error_by="row+column"``: per row and column;
    :mod:`~greenllm.scheduler.margin`; 0: the paper's rule on the point estimates).
    ``monotone`` clamps filled cells to the load orders of
    :mod:`~greenllm.scheduler.constraints`; ``carbon_model="direct"`` completes embodied and
    operational carbon per token as they are instead of through their physical factors.
    """

    def __init__(
        self,
        *,
        intensity_g_per_kwh: float | None = None,
        region: str | None = None,
        lifetimes_years: float | Mapping[str, float] = 7.0,
        slo_target: Annotated[float, "0..1"] = 0.9,
        priority: Priority = "slo",
        default: Configuration | str | int | None = None,
        method: str = "als",
        margin_sigmas: float = 2.0,
        rank: int | None = None,
        seed: int = 0,
        monotone: bool = True,
        carbon_model: CarbonModel = "factors",
        error_by: Literal["column", "row+column"] = "column",
    ) -> None:
        if intensity_g_per_kwh is not None and region is not None:
            raise ConfigError("give intensity_g_per_kwh or region, not both")
        if region is not None and not isinstance(region, str):
            raise ConfigError(f"region = {_show(region)}: must be a region name (str) or None")
        if intensity_g_per_kwh is not None:
            _number("intensity_g_per_kwh", intensity_g_per_kwh, 0.0, MAX_INTENSITY_G_PER_KWH)
        slo_target = _number("slo_target", slo_target, 0.0, 1.0)
        if priority not in ("slo", "default"):
            raise ConfigError(f"priority = {priority!r}: choose 'slo' or 'default'")
        margin_sigmas = _number("margin_sigmas", margin_sigmas, 0.0, _MAX_MARGIN_SIGMAS)
        if not isinstance(method, str) or method not in METHODS:
            raise ConfigError(f"method = {_show(method)}: must be one of {sorted(METHODS)}")
        if rank is not None:
            rank = _integer("rank", rank, 1, _MAX_RANK, none_ok=True)
        seed = _integer("seed", seed, 0, _MAX_SEED)
        if not isinstance(monotone, bool | np.bool_):
            raise ConfigError(f"monotone = {_show(monotone)}: must be True or False")
        if carbon_model not in ("factors", "direct"):
            raise ConfigError(f"carbon_model = {carbon_model!r}: choose 'factors' or 'direct'")
        if error_by not in ("column", "row+column"):
            raise ConfigError(f"error_by = {error_by!r}: choose 'column' or 'row+column'")
        if default is not None and (
            isinstance(default, bool) or not isinstance(default, Configuration | str | int)
        ):
            raise ConfigError(
                f"default = {_show(default)}: must be a Configuration, its id or label (str), "
                "a column index (int), or None"
            )
        self.region = region if intensity_g_per_kwh is None else None
        self.intensity_g_per_kwh = _intensity(intensity_g_per_kwh, region)
        self.lifetimes_years = _lifetimes(lifetimes_years)
        self.slo_target = slo_target
        self.priority: Priority = priority
        self.default = default
        self.method = method
        self.margin_sigmas = margin_sigmas
        self.rank = rank
        self.seed = seed
        self.monotone = bool(monotone)
        self.carbon_model: CarbonModel = carbon_model
        self.error_by = error_by

    def complete(self, m: ProfileMatrices) -> dict[str, np.ndarray]:
        """Filled matrices: embodied and operational carbon (g/token), energy (kWh/token),
        carbon, attainment (point estimate), its error, its lower bound after the safety
        margin (``attainment_lower``, what Algorithm 1 compares with the target) and z-score
        (:mod:`~greenllm.scheduler.margin`). Energy and embodied carbon do not depend on
        the intensity, so one completion serves every hour of a trace."""
        method, rank, seed = self.method, self.rank, self.seed
        att = complete_with_uncertainty(
            m.attainment, method, rank, seed, transform="logit", error_by=self.error_by
        )
        b = attainment_bounds(att, m.rows, self.slo_target, self.margin_sigmas, self.monotone)
        if self.carbon_model == "factors":
            emb, energy = filled_carbon_per_token(
                m, self.lifetimes_years, b.lower >= self.slo_target, self.slo_target,
                method=method, rank=rank, seed=seed, monotone=self.monotone,
            )  # fmt: skip
        else:
            emb = complete_with_uncertainty(m.embodied_g_per_token(self.lifetimes_years),
                                            method, rank, seed, transform="log").values  # fmt: skip
            energy = complete_with_uncertainty(m.energy_kwh_per_token(), method, rank, seed,
                                               transform="log").values  # fmt: skip
        opr = self.intensity_g_per_kwh * energy
        return {
            "embodied": emb,
            "energy_kwh": energy,
            "operational": opr,
            "carbon": emb + opr,
            "attainment": b.point,
            "attainment_stderr": att.stderr,
            "attainment_lower": b.lower,
            "attainment_z": b.z,
        }

    def _effective_attainment(self, filled: dict[str, np.ndarray]) -> np.ndarray:
        return filled["attainment_lower"]

    def choose(self, filled: dict[str, np.ndarray], base: int) -> np.ndarray:
        """The configuration per row: Algorithm 1 on ``carbon`` and ``attainment_lower``, with
        the fallback of :func:`~greenllm.scheduler.margin.choose_with_margin`."""
        bounds = AttainmentBounds(
            filled["attainment"], filled["attainment_lower"], filled["attainment_z"]
        )
        return choose_with_margin(filled["carbon"], bounds, self.slo_target, self.priority,
                                  base, self.margin_sigmas)  # fmt: skip

    def candidates(self, m: ProfileMatrices) -> tuple[ProfileMatrices, int]:
        """Drop configurations that never served a token (no carbon per token can be known);
        return the matrices and the default column's index in them."""
        default = m.configs[m.default_column() if self.default is None else m.column(self.default)]
        empty = np.flatnonzero(~m.carbon_observed.any(axis=1))
        if empty.size:  # refuse: CF would fill the row from biases alone (no measurement)
            names = ", ".join(f"row {i} ({m.rows[i].label})" for i in empty[:20])
            more = f" and {empty.size - 20} more" if empty.size > 20 else ""
            raise ProfileError(
                f"{empty.size} workload(s) without a profiled configuration that served a "
                f"token: {names}{more}; profile one configuration that can serve each "
                "(e.g. Standalone)"
            )
        keep = np.flatnonzero(m.carbon_observed.any(axis=0))
        if len(keep) < m.shape[1]:
            dropped = [m.configs[i].label for i in range(m.shape[1]) if i not in set(keep)]
            logger.info("configurations that served no token, left out: %s", dropped)
            if default.id not in {m.configs[i].id for i in keep}:
                raise ConfigError(f"the default configuration {default.label} served no token")
            m = m.select_columns(keep)
        return m, m.column(default)

    def plan(
        self,
        source: ProfileMatrices | ProfileSource,
        backend: str | None = None,
        *,
        prefer_measured: bool = False,
    ) -> Plan:
        """Plan from :class:`ProfileMatrices` or a ``ProfileStore`` (run ids averaged).

        ``prefer_measured``: a workload with a *measured* configuration that meets the SLO
        gets the cheapest such one, never a filled (predicted) one; filled cells decide only
        where nothing measured meets the target (used after :func:`verify_plan
        <greenllm.scheduler.refine.verify_plan>` has profiled the promising filled cells).
        """
        m = _matrices(source, backend)
        m, base = self.candidates(m)
        filled = self.complete(m)
        choice = self.choose(filled, base)
        if prefer_measured:
            choice = measured_choice(choice, filled["carbon"], m, self.slo_target)
        feasible = self._effective_attainment(filled) >= self.slo_target
        rows = np.arange(m.shape[0])
        carbon = filled["carbon"]
        entries = [
            PlanEntry(
                application=key.application,
                input_tokens=key.input_tokens,
                output_tokens=key.output_tokens,
                qps=key.qps,
                configuration=m.configs[c],
                carbon_g_per_token=float(carbon[r, c]),
                embodied_g_per_token=float(filled["embodied"][r, c]),
                operational_g_per_token=float(filled["operational"][r, c]),
                slo_attainment=float(filled["attainment"][r, c]),
                slo_attainment_stderr=float(filled["attainment_stderr"][r, c]),
                measured=bool(m.carbon_observed[r, c]),
                fallback=not bool(feasible[r].any()),
                feasible_configs=int(feasible[r].sum()),
                baseline_carbon_g_per_token=float(carbon[r, base]),
                baseline_measured=bool(m.carbon_observed[r, base]),
                savings=float(1.0 - carbon[r, c] / carbon[r, base]),
                energy_source=_energy_source(m, int(r), int(c)),
                baseline_energy_source=_energy_source(m, int(r), base),
            )
            for r, c, key in zip(rows, choice, m.rows, strict=True)
        ]
        return Plan(
            intensity_g_per_kwh=self.intensity_g_per_kwh,
            region=self.region,
            lifetimes_years=self.lifetimes_years,
            slo_target=self.slo_target,
            priority=self.priority,
            method=self.method,
            margin_sigmas=self.margin_sigmas,
            baseline=m.configs[base],
            entries=entries,
        )

    def plan_hourly(
        self,
        source: ProfileMatrices | ProfileSource,
        trace: CarbonIntensityTrace,
        application: str,
        qps_by_hour: float | np.ndarray,
        *,
        backend: str | None = None,
        switch_energy_kwh: float | None = None,
        switch_embodied_g: float | None = None,
        solver: Literal["offline", "online"] = "offline",
        hysteresis: float = 1.0,
        size: tuple[int, int] | None = None,
        engine_start_s: float = ENGINE_START_S,
    ) -> HourlyPlan:
        """A configuration per hour of ``trace`` for one application (beyond the paper).

        ``qps_by_hour`` is one rate, or 24 values (hour of day, UTC), or one per hour of the
        trace; ``size`` = (input, output tokens) picks the request size when the application was
        profiled at several (default: the size with the most QPS levels, the median size on a
        tie, e.g. ShareGPT's P50). Each hour is served by the profiled row of the next QPS
        level at or above it (the conservative choice; the top level if it exceeds every
        profiled one). Allowed
        configurations per row are Algorithm 1's feasible set, or its fallback when empty.

        A rate outside the profiled QPS range is logged (``logging.warning``) and recorded in
        the result (``hours_above_profiled``, ``qps_over_profiled``, ...; :class:`HourlyPlan`).
        ``switch_energy_kwh`` / ``switch_embodied_g`` None (the default): estimated from the
        profiles by :func:`estimate_switch_cost` (restarting the engines of a configuration:
        ``engine_start_s`` seconds at its profiled power and with its GPUs allocated).
        """
        t = self.table(source, application, backend=backend, size=size)
        qps = _qps_per_hour(qps_by_hour, trace)
        level = t.level(qps)
        alpha = np.asarray(trace.g_per_kwh, dtype=float)
        allowed = t.allowed
        source_note = "given"
        if switch_energy_kwh is None or switch_embodied_g is None:
            cand = np.flatnonzero(allowed[np.unique(level)].any(axis=0))
            est_kwh, est_g = t.switch_cost(cand, engine_start_s)
            given = (("energy", switch_energy_kwh), ("embodied carbon", switch_embodied_g))
            what = [w for w, v in given if v is None]
            switch_energy_kwh = est_kwh if switch_energy_kwh is None else switch_energy_kwh
            switch_embodied_g = est_g if switch_embodied_g is None else switch_embodied_g
            source_note = (
                f"estimated {' and '.join(what)}: an engine restart of {engine_start_s:g} s at "
                "the profiled power of the costliest allowed configuration"
            )
        hp = plan_hourly(
            t.embodied_g_per_token,
            t.energy_kwh_per_token,
            allowed,
            row_of_hour=level,
            intensity_g_per_kwh=alpha,
            tokens_per_hour=qps * 3600.0 * t.size[1],
            baseline=t.baseline,
            switch_energy_kwh=switch_energy_kwh,
            switch_embodied_g=switch_embodied_g,
            solver=solver,
            hysteresis=hysteresis,
        )
        return _with_load_range(replace(hp, switch_cost_source=source_note), qps, t.qps_levels,
                                t.application, t.size)  # fmt: skip

    def table(
        self,
        source: ProfileMatrices | ProfileSource,
        application: str,
        *,
        backend: str | None = None,
        size: tuple[int, int] | None = None,
    ) -> PlanTable:
        """The completed :class:`PlanTable` of ``application`` (at ``size`` = (input, output
        tokens); default: the size with the most QPS levels, the median size on a tie)."""
        m = _matrices(source, backend)
        if not isinstance(application, str):
            raise ConfigError(f"application = {_show(application)}: must be an application name")
        rows = [i for i, k in enumerate(m.rows) if k.application == application.lower()]
        if not rows:
            apps = sorted({k.application for k in m.rows})
            raise ConfigError(f"application {application!r} is not profiled; profiled: {apps}")
        size = _pick_size([(m.rows[i].input_tokens, m.rows[i].output_tokens) for i in rows], size)
        rows = [i for i in rows if (m.rows[i].input_tokens, m.rows[i].output_tokens) == size]
        m, base = self.candidates(m)
        filled = self.complete(m)
        allowed = self._effective_attainment(filled)[rows] >= self.slo_target
        fallback = self.choose({k: v[rows] for k, v in filled.items()}, base)
        none = ~allowed.any(axis=1)
        allowed[none, fallback[none]] = True
        return PlanTable(
            application=application.lower(), size=size,
            qps_levels=np.array([m.rows[i].qps for i in rows]), configs=tuple(m.configs),
            embodied_g_per_token=filled["embodied"][rows],
            energy_kwh_per_token=filled["energy_kwh"][rows],
            attainment=filled["attainment"][rows],
            attainment_lower=filled["attainment_lower"][rows],
            attainment_z=filled["attainment_z"][rows], allowed=allowed,
            measured=m.carbon_observed[rows], baseline=base, slo_target=self.slo_target,
            margin_sigmas=self.margin_sigmas, matrices=m, lifetimes_years=self.lifetimes_years,
        )  # fmt: skip


def _energy_source(m: ProfileMatrices, r: int, c: int) -> EnergySource:
    """The energy source of cell (r, c): its profiled one, or "filled" where CF filled it."""
    if not m.carbon_observed[r, c]:
        return "filled"
    source: EnergySource = m.energy_source[r, c]
    return source


def _show(value: object) -> str:
    """A one-line repr for an error message."""
    text = repr(value)
    return text if len(text) <= 60 and "\n" not in text else f"<{type(value).__name__}>"


def _number(name: str, value: object, lo: float, hi: float) -> float:
    """``value`` as a float in [lo, hi], or :class:`ConfigError` naming ``name`` and the range."""
    return finite_number(name, value, lo, hi)


def _integer(name: str, value: object, lo: int, hi: int, none_ok: bool = False) -> int:
    """``value`` as an int in [lo, hi], or :class:`ConfigError` naming ``name`` and the range."""
    allowed = f"an integer in [{lo}, {hi}]" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} = {_show(value)}: must be {allowed}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} = {_show(value)}: must be {allowed}")
    return int(value)


def _matrices(source: object, backend: str | None) -> ProfileMatrices:
    """``source`` as :class:`ProfileMatrices` (given, or read from a store), or ConfigError."""
    if isinstance(source, ProfileMatrices):
        return source
    if not callable(getattr(source, "query", None)):
        raise ConfigError(
            f"source = {_show(source)}: must be ProfileMatrices or a ProfileStore "
            "(an object with .query(backend=..., application=...))"
        )
    if backend is not None and not isinstance(backend, str):
        raise ConfigError(f"backend = {_show(backend)}: must be a backend name (str) or None")
    return _from_store(source, backend)  # type: ignore[arg-type]


def estimate_switch_cost(
    m: ProfileMatrices,
    lifetimes_years: float | Mapping[str, float],
    configs: Sequence[int] | np.ndarray | None = None,
    engine_start_s: float = ENGINE_START_S,
) -> tuple[float, float]:
    """(kWh, g embodied) of one switch, estimated from the profiles: the engines of the new
    configuration run for ``engine_start_s`` seconds before serving, drawing the median power
    measured on that configuration and holding its GPUs (Eq. 1 per allocated second); the
    costliest of ``configs`` (all columns when None), so the planner does not switch for a
    saving smaller than a restart."""
    _number("engine_start_s", engine_start_s, 0.0, 86_400.0)
    f = carbon_factors(m, lifetimes_years)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        power = np.nanmedian(f.power_w, axis=0)
        emb = np.nanmedian(f.embodied_g_per_s, axis=0)
    cols = np.arange(m.shape[1]) if configs is None else np.asarray(configs, dtype=int)
    power, emb = np.nan_to_num(power[cols]), np.nan_to_num(emb[cols])
    if cols.size == 0:
        return 0.0, 0.0
    return float(power.max() * engine_start_s / J_PER_KWH), float(emb.max() * engine_start_s)


def _with_load_range(
    hp: HourlyPlan, qps: np.ndarray, levels: np.ndarray, application: str, size: tuple[int, int]
) -> HourlyPlan:
    """``hp`` with its load fields set, and a warning when a rate is out of range."""
    lo, hi = float(levels.min()), float(levels.max())
    above, below = int((qps > hi * (1 + 1e-9)).sum()), int((qps < lo * (1 - 1e-9)).sum())
    over, under = float(qps.max() / hi), float(qps.min() / lo)
    msg = None
    if above or below:
        parts = []
        if above:
            parts.append(
                f"{above} hours above the highest profiled {hi:g} QPS (up to {qps.max():g} QPS, "
                f"{over:.2f}x; served as {hi:g} QPS: its attainment there is not measured)"
            )
        if below:
            parts.append(
                f"{below} hours below the lowest profiled {lo:g} QPS (down to {qps.min():g} "
                f"QPS, {under:.2f}x; served as {lo:g} QPS, which is conservative)"
            )
        msg = f"{application} {size}: load outside the profiled range: " + "; ".join(parts)
        logger.warning(msg)
    return replace(
        hp,
        profiled_qps=(lo, hi),
        hours_above_profiled=above,
        hours_below_profiled=below,
        qps_over_profiled=over,
        qps_under_profiled=under,
        load_warning=msg,
    )


def _pick_size(sizes: list[tuple[int, int]], wanted: tuple[int, int] | None) -> tuple[int, int]:
    counts = {s: sizes.count(s) for s in sorted(set(sizes))}
    if wanted is not None:
        match = [s for s in counts if s == tuple(wanted)]
        if not match:
            raise ConfigError(f"size {tuple(wanted)} is not profiled; profiled: {list(counts)}")
        return match[0]
    best = max(counts.values())
    tied = [s for s, n in counts.items() if n == best]
    return tied[(len(tied) - 1) // 2]


def _qps_per_hour(qps_by_hour: float | np.ndarray, trace: CarbonIntensityTrace) -> np.ndarray:
    q = np.atleast_1d(np.asarray(qps_by_hour, dtype=float))
    n = len(trace)
    if q.size == 1:
        q = np.full(n, q[0])
    elif q.size == 24:
        hours = (np.asarray(trace.timestamps_s) // 3600 % 24).astype(int)
        q = q[hours]
    elif q.size != n:
        raise ConfigError(f"qps_by_hour has {q.size} values: give 1, 24 (hour of day) or {n}")
    if not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ConfigError("qps_by_hour must be finite and > 0 every hour")
    return q


def _intensity(value: float | None, region: str | None) -> float:
    from greenllm.carbon import carbon_intensity

    if value is None:
        return carbon_intensity(region or "CISO")
    if not np.isfinite(value) or value < 0:
        raise ConfigError(f"intensity_g_per_kwh = {value!r}: must be a finite number >= 0")
    return float(value)


def _lifetimes(value: float | Mapping[str, float]) -> dict[str, float]:
    items = dict(value) if isinstance(value, Mapping) else {"default": value}
    out: dict[str, float] = {}
    for gpu, years in items.items():
        if not isinstance(gpu, str):
            raise ConfigError(f"lifetimes_years key {_show(gpu)}: must be a GPU name or 'default'")
        bad = isinstance(years, bool) or not isinstance(years, int | float | np.number)
        if bad or not np.isfinite(float(years)) or not 0 < float(years) <= _MAX_LIFETIME_YEARS:
            raise ConfigError(
                f"lifetimes_years[{gpu!r}] = {_show(years)}: must be a number of years in "
                f"(0, {_MAX_LIFETIME_YEARS:g}]"
            )
        out[gpu] = float(years)
    out.setdefault("default", 7.0)
    return out


def measured_feasible(m: ProfileMatrices, slo_target: float) -> np.ndarray:
    """Cells measured to serve tokens and to meet ``slo_target``."""
    return m.carbon_observed & (np.nan_to_num(m.attainment, nan=0.0) >= slo_target)


def measured_choice(
    choice: np.ndarray, carbon: np.ndarray, m: ProfileMatrices, slo_target: float
) -> np.ndarray:
    """``choice`` with every filled pick replaced by the cheapest measured-feasible cell of its
    row, where the row has one."""
    ok = measured_feasible(m, slo_target)
    rows = np.arange(len(choice))
    swap = ~m.carbon_observed[rows, choice] & ok.any(axis=1)
    best = np.argmin(np.where(ok, carbon, np.inf), axis=1)
    return np.where(swap, best, choice).astype(np.intp)


def _from_store(store: ProfileSource, backend: str | None) -> ProfileMatrices:
    from greenllm.scheduler.matrix import matrices_from_store

    return matrices_from_store(store, backend=backend)
