"""Section 5 in the paper's own setting: Table 1's GPUs in its three regions (Eq. 1-5 only)."""

from __future__ import annotations

from typing import TypedDict

from greenllm.carbon.accounting import embodied_carbon_g, operational_carbon_g
from greenllm.carbon.analysis.ratios import carbon_ratio
from greenllm.carbon.catalog.registry import get_gpu
from greenllm.carbon.intensity.regions import carbon_intensity
from greenllm.errors import ConfigError
from greenllm.units import J_PER_KWH, SECONDS_PER_HOUR

__all__ = [
    "NEW_GPU",
    "OLD_GPUS",
    "PAPER_REGIONS",
    "WHAT_IF_ENERGY_CUTS",
    "BreakEvenRow",
    "GPUHourRow",
    "PaperSetting",
    "WhatIfRow",
    "paper_setting",
]

PAPER_REGIONS = ("NCSW", "CISO", "MISO")
NEW_GPU = "A100"
OLD_GPUS = ("T4", "V100")
HOUR_S = SECONDS_PER_HOUR
WHAT_IF_ENERGY_CUTS = (0.1, 0.2, 0.3)


class GPUHourRow(TypedDict):
    """One GPU's carbon per hour allocated (Eq. 1) and per hour at its power limit (Eq. 2)."""

    gpu: str
    year: int
    embodied_kg: float
    embodied_g_per_hour: float
    operational_g_per_hour_at_max_power: dict[str, float]  # region -> g


class BreakEvenRow(TypedDict):
    """The least energy an old GPU's pair must save per hour to break even in one region."""

    old_gpu: str
    region: str
    intensity_g_per_kwh: float
    min_energy_saving_wh_per_hour: float
    ratio_at_breakeven: float


class WhatIfRow(TypedDict):
    """The carbon saved when the pair cuts the A100's energy by ``energy_cut``."""

    old_gpu: str
    region: str
    energy_cut: float
    carbon_savings: float


class PaperSetting(TypedDict):
    """What :func:`paper_setting` returns (JSON-ready)."""

    lifetime_years: float
    intensity_g_per_kwh: dict[str, float]  # region -> g/kWh
    gpus: list[GPUHourRow]
    breakeven: list[BreakEvenRow]
    what_if_a100_at_max_power: list[WhatIfRow]


def paper_setting(lifetime_years: float = 7.0) -> PaperSetting:
    """Section 5 in the paper's setting, from Table 1 and Eq. 1-5 only: carbon per GPU-hour, the
    least energy a disaggregated pair must save per hour to break even, and what-if savings."""
    if not (isinstance(lifetime_years, (int, float)) and not isinstance(lifetime_years, bool)
            and 0 < lifetime_years <= 1e6):  # fmt: skip
        raise ConfigError(
            f"lifetime_years = {lifetime_years!r:.60}: must be a number, 0 < lifetime_years <= 1e6"
        )
    alphas = {r: carbon_intensity(r) for r in PAPER_REGIONS}
    gpus: list[GPUHourRow] = []
    for name in (NEW_GPU, *OLD_GPUS):
        spec = get_gpu(name)
        max_j = spec.max_power_w * HOUR_S
        gpus.append(
            {
                "gpu": spec.name,
                "year": spec.year,
                "embodied_kg": spec.embodied_kg,
                "embodied_g_per_hour": float(embodied_carbon_g(HOUR_S, spec, lifetime_years)),
                "operational_g_per_hour_at_max_power": {
                    r: float(operational_carbon_g(max_j, a)) for r, a in alphas.items()
                },
            }
        )

    # Section 5 with t'_A = t_A = t_B = one hour (the A100 stays allocated in both cases):
    # E'_A = E_A, so Eq. 5 < 1  <=>  N_A - N'_A - N_B > E_B / alpha (Eq. 4 plus the old GPU's
    # embodied carbon). The break-even is the least energy the pair must save per hour.
    e_a = float(embodied_carbon_g(HOUR_S, NEW_GPU, lifetime_years))
    n_a_kwh = get_gpu(NEW_GPU).max_power_w * HOUR_S / J_PER_KWH
    breakeven: list[BreakEvenRow] = []
    what_if: list[WhatIfRow] = []
    for old in OLD_GPUS:
        e_b = float(embodied_carbon_g(HOUR_S, old, lifetime_years))
        for region, alpha in alphas.items():
            min_saving_kwh = e_b / alpha if alpha > 0 else float("inf")
            at_breakeven = carbon_ratio(
                n_a_kwh, n_a_kwh - min_saving_kwh, 0.0, e_a, e_a, e_b, alpha
            )
            breakeven.append(
                {
                    "old_gpu": old,
                    "region": region,
                    "intensity_g_per_kwh": alpha,
                    "min_energy_saving_wh_per_hour": 1000 * min_saving_kwh,
                    "ratio_at_breakeven": float(at_breakeven),
                }
            )
            for cut in WHAT_IF_ENERGY_CUTS:
                ratio = float(carbon_ratio(n_a_kwh, n_a_kwh * (1 - cut), 0.0, e_a, e_a, e_b, alpha))
                what_if.append(
                    {
                        "old_gpu": old,
                        "region": region,
                        "energy_cut": cut,
                        "carbon_savings": 1 - ratio,
                    }
                )
    return {
        "lifetime_years": lifetime_years,
        "intensity_g_per_kwh": alphas,
        "gpus": gpus,
        "breakeven": breakeven,
        "what_if_a100_at_max_power": what_if,
    }
