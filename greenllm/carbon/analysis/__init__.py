"""Section 5 of the paper: when does moving work onto an old GPU save carbon? (Eq. 4-6)

The equations in the paper's notation (:mod:`.ratios`), applied to measurements
(:mod:`.compare`) and to the paper's own setting (:mod:`.paper_setting`).
"""

from greenllm.carbon.analysis.compare import SavingsReport, Scenario, compare
from greenllm.carbon.analysis.paper_setting import paper_setting
from greenllm.carbon.analysis.ratios import (
    BreakEven,
    Eq6Terms,
    breakeven_intensity,
    breakeven_new_lifetime_years,
    breakeven_old_lifetime_years,
    carbon_ratio,
    carbon_ratio_direct,
    energy_condition,
    lifetime_ratio,
    lifetime_ratio_terms,
    ratio_slope_vs_intensity,
    ratio_vs_intensity,
    ratio_vs_lifetime,
    shorter_new_lifetime_saves,
)

__all__ = [
    "BreakEven",
    "Eq6Terms",
    "SavingsReport",
    "Scenario",
    "breakeven_intensity",
    "breakeven_new_lifetime_years",
    "breakeven_old_lifetime_years",
    "carbon_ratio",
    "carbon_ratio_direct",
    "compare",
    "energy_condition",
    "lifetime_ratio",
    "lifetime_ratio_terms",
    "paper_setting",
    "ratio_slope_vs_intensity",
    "ratio_vs_intensity",
    "ratio_vs_lifetime",
    "shorter_new_lifetime_saves",
]
