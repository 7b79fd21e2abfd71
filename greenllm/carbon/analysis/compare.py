"""Section 5 of the paper: when does moving work onto an old GPU save carbon? (Eq. 4-6)

Notation follows the paper. ``A`` is the new GPU serving alone (Case 1), ``A2`` the same new GPU
in the disaggregated Case 2 (the paper's A'), ``B`` the old GPU. ``N`` = energy (kWh), ``E`` =
amortised embodied carbon (g, Eq. 1), ``alpha`` = grid intensity (g/kWh), ``t`` = busy time (s),
``T`` = lifetime (years), ``total_A_g``/``total_B_g`` = a GPU's whole embodied carbon (the
paper's script A and B). The equations (pure numpy, vectorised) live in
:mod:`greenllm.carbon.analysis.ratios`; :func:`compare` turns measurements into a
:class:`SavingsReport` with the GPU catalog and Eq. 1-3 of :mod:`greenllm.carbon.accounting`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

from greenllm.carbon.accounting import amortized_embodied_g
from greenllm.carbon.analysis.ratios import (
    ANALYSIS_MAX,
    BreakEven,
    Num,
    breakeven_intensity,
    breakeven_old_lifetime_years,
    carbon_ratio,
    energy_condition,
)
from greenllm.checks import finite_array
from greenllm.errors import ConfigError
from greenllm.units import J_PER_KWH

if TYPE_CHECKING:
    from greenllm.carbon.accounting import DeviceUsage

__all__ = ["SavingsDict", "SavingsReport", "Scenario", "compare"]

logger = logging.getLogger(__name__)

SavingsDict: TypeAlias = dict[str, float | bool | str | dict[str, float | str | None]]
""":meth:`SavingsReport.to_dict`: numbers, flags and the summary; the scenario and the
break-evens (``value``, ``saves_when``, ``unit``) as nested dicts."""


@dataclass(frozen=True)
class Scenario:
    """The pure numbers of Section 5 for one comparison (kWh, g, s, years)."""

    N_A: float
    N_A2: float
    N_B: float
    E_A: float
    E_A2: float
    E_B: float
    t_A_s: float  # noqa: N815
    t_A2_s: float  # noqa: N815
    t_B_s: float  # noqa: N815
    total_A_g: float  # noqa: N815
    total_A2_g: float  # noqa: N815
    total_B_g: float  # noqa: N815

    def ratio(self, alpha: Num) -> Num:
        """Eq. 5 at intensity ``alpha`` (g/kWh)."""
        return carbon_ratio(self.N_A, self.N_A2, self.N_B, self.E_A, self.E_A2, self.E_B, alpha)

    def ratio_vs_intensity(self, alphas: npt.ArrayLike) -> np.ndarray:
        """Eq. 5 over an array of intensities (g/kWh)."""
        return np.asarray(self.ratio(np.asarray(alphas, dtype=float)))

    def ratio_vs_lifetime(
        self, alpha: float, new_years: npt.ArrayLike, old_years: npt.ArrayLike
    ) -> np.ndarray:
        """Eq. 6 grid ``out[i, j]`` at ``T_A = new_years[i]`` (both new GPUs), ``T_B = old[j]``."""
        T_A = np.asarray(new_years, dtype=float).reshape(-1, 1)
        T_B = np.asarray(old_years, dtype=float).reshape(1, -1)
        e_a = amortized_embodied_g(self.t_A_s, self.total_A_g, T_A)
        e_a2 = amortized_embodied_g(self.t_A2_s, self.total_A2_g, T_A)
        e_b = amortized_embodied_g(self.t_B_s, self.total_B_g, T_B)
        return np.asarray(carbon_ratio(self.N_A, self.N_A2, self.N_B, e_a, e_a2, e_b, alpha))


@dataclass(frozen=True)
class SavingsReport:
    """Disaggregated vs standalone carbon at one intensity; ``ratio < 1`` means savings."""

    intensity_g_per_kwh: float
    standalone_g: float
    disaggregated_g: float
    standalone_embodied_g: float
    standalone_operational_g: float
    disaggregated_embodied_g: float
    disaggregated_operational_g: float
    ratio: float
    savings_fraction: float
    embodied_savings_g: float
    operational_savings_g: float
    energy_condition: bool
    breakeven_intensity: BreakEven
    breakeven_old_lifetime: BreakEven
    scenario: Scenario
    summary: str

    def to_dict(self) -> SavingsDict:
        """JSON-ready dict (infinite break-evens become ``None``)."""
        out = asdict(self)
        for key in ("breakeven_intensity", "breakeven_old_lifetime"):
            if not math.isfinite(out[key]["value"]):
                out[key]["value"] = None
        return out


def compare(
    standalone: DeviceUsage,
    disaggregated: Sequence[DeviceUsage],
    intensity_g_per_kwh: float = 261.0,
    *,
    region: str | None = None,
) -> SavingsReport:
    """Section 5 on measurements: ``standalone`` = GPU A alone, ``disaggregated`` = (A', B).

    Each run is a :class:`~greenllm.carbon.accounting.DeviceUsage` (``gpu``, busy ``seconds``,
    ``energy_j``, ``lifetime_years``) or any object with those attributes. ``region`` (e.g.
    ``"MISO"``) overrides ``intensity_g_per_kwh`` with
    :func:`~greenllm.carbon.carbon_intensity`. Embodied carbon is Eq. 1 with each
    GPU's catalog value, operational carbon Eq. 2.
    """
    from greenllm.carbon.accounting import embodied_carbon_g, operational_carbon_g
    from greenllm.carbon.catalog.registry import get_gpu

    if isinstance(disaggregated, (str, bytes)) or not isinstance(disaggregated, Sequence):
        raise ConfigError(
            f"disaggregated = {disaggregated!r:.60}: must be (new_gpu_run, old_gpu_run)"
        )
    if len(disaggregated) != 2:
        raise ConfigError(
            f"disaggregated must be (new_gpu_run, old_gpu_run), got {len(disaggregated)} runs"
        )
    for name, run in (("standalone", standalone), ("disaggregated[0]", disaggregated[0]),
                      ("disaggregated[1]", disaggregated[1])):  # fmt: skip
        if not all(hasattr(run, a) for a in ("gpu", "seconds", "energy_j", "lifetime_years")):
            raise ConfigError(
                f"{name} = {run!r:.60}: must be a DeviceUsage (gpu, seconds, energy_j, "
                "lifetime_years)"
            )
    if region is not None and not isinstance(region, str):
        raise ConfigError(f"region = {region!r:.60}: must be a region code such as 'CISO'")
    if region is not None:
        from greenllm.carbon.intensity.regions import carbon_intensity

        intensity_g_per_kwh = carbon_intensity(region)
    alpha = float(finite_array("intensity_g_per_kwh", intensity_g_per_kwh, 0.0, ANALYSIS_MAX))
    runs = (standalone, *disaggregated)
    for r in runs:
        finite_array(f"{r.gpu} energy_j", r.energy_j, 0.0, ANALYSIS_MAX)
    emb = [float(embodied_carbon_g(r.seconds, r.gpu, r.lifetime_years)) for r in runs]
    ops = [float(operational_carbon_g(r.energy_j, alpha)) for r in runs]
    totals = [get_gpu(r.gpu).embodied_kg * 1000.0 for r in runs]
    n_a, n_a2, n_b = (r.energy_j / J_PER_KWH for r in runs)
    e_a, e_a2, e_b = emb
    sc = Scenario(n_a, n_a2, n_b, e_a, e_a2, e_b, *(r.seconds for r in runs), *totals)
    before, after = emb[0] + ops[0], sum(emb[1:]) + sum(ops[1:])
    ratio = float(sc.ratio(alpha))
    be_alpha = breakeven_intensity(n_a, n_a2, n_b, e_a, e_a2, e_b)
    be_life = breakeven_old_lifetime_years(
        n_a, n_a2, n_b, e_a, e_a2, runs[2].seconds, totals[2], alpha
    )
    alone, new, old = (get_gpu(r.gpu).name for r in runs)
    summary = (
        f"{new}+{old} emits {ratio:.3f}x the carbon of {alone} alone at {alpha:g} g/kWh "
        f"({1 - ratio:+.1%} saved; operational {(ops[0] - sum(ops[1:])) / before:+.1%}, embodied "
        f"{(emb[0] - sum(emb[1:])) / before:+.1%}); saves at intensities {be_alpha} and "
        f"old-GPU lifetimes {be_life}"
    )
    logger.debug("compare: %s", summary)
    return SavingsReport(
        intensity_g_per_kwh=alpha,
        standalone_g=before,
        disaggregated_g=after,
        standalone_embodied_g=emb[0],
        standalone_operational_g=ops[0],
        disaggregated_embodied_g=sum(emb[1:]),
        disaggregated_operational_g=sum(ops[1:]),
        ratio=ratio,
        savings_fraction=1.0 - ratio,
        embodied_savings_g=emb[0] - sum(emb[1:]),
        operational_savings_g=ops[0] - sum(ops[1:]),
        energy_condition=bool(energy_condition(n_a, n_a2, n_b)),
        breakeven_intensity=be_alpha,
        breakeven_old_lifetime=be_life,
        scenario=sc,
        summary=summary,
    )
