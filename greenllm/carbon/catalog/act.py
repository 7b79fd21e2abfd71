"""ACT-style embodied carbon of a GPU package (Gupta et al., ISCA 2022; facebookresearch/ACT).

:func:`act_embodied_kg` estimates ``C_e`` (Eq. 1) from die area, process node and memory for
GPUs without a published figure; :meth:`~greenllm.carbon.catalog.registry.GPUSpec.create` uses
it when ``embodied_kg`` is omitted. The per-node tables are ACT's; ``HBM_G_PER_GB`` is fitted to the
paper's Table 1 (docs/carbon.md).
"""

from __future__ import annotations

import math
from typing import Literal

from greenllm.checks import finite_number
from greenllm.errors import ConfigError
from greenllm.units import MAX_INTENSITY_G_PER_KWH

__all__ = [
    "ACT_FAB_INTENSITY_G_PER_KWH",
    "ACT_FAB_YIELD",
    "ACT_PACKAGE_G",
    "DRAM_G_PER_GB",
    "HBM_G_PER_GB",
    "MEMORY_TYPES",
    "act_embodied_breakdown_kg",
    "act_embodied_kg",
    "act_node_nm",
    "canonical_memory_type",
]

MEMORY_TYPES = (
    "HBM2", "HBM2e", "HBM3", "HBM3e", "GDDR5", "GDDR5X", "GDDR6", "GDDR6X", "GDDR7", "LPDDR5",
)  # fmt: skip

# --- ACT parameters (facebookresearch/ACT, act/models/logic/*.yaml, act/core/common.py) -------
_ACT_EPA_KWH_PER_CM2 = {28: 0.90, 20: 1.20, 14: 1.20, 10: 1.475, 8: 1.52, 7: 2.15, 5: 2.75, 3: 3.25}
_ACT_GPA95_G_PER_CM2 = {28: 175, 20: 190, 14: 200, 10: 240, 8: 240, 7: 350, 5: 430, 3: 470}
_ACT_GPA99_G_PER_CM2 = {28: 100, 20: 110, 14: 125, 10: 150, 8: 150, 7: 200, 5: 225, 3: 275}
_ACT_MPA_G_PER_CM2 = 500.0  # raw materials, every node
ACT_FAB_INTENSITY_G_PER_KWH = 583.0  # ACT's "taiwan" fab grid (carbon_intensity/location.json)
ACT_FAB_YIELD = 0.875  # ACT DEFAULT_FAB_YIELD
ACT_PACKAGE_G = 150.0  # ACT CARBON_PER_IC_PACKAGE
DRAM_G_PER_GB = 65.0  # ACT dram_hynix "ddr4_10nm" (before yield); used for GDDR/LPDDR
# HBM: ACT has no HBM entry. Least-squares fit of Table 1's V100 and A100 (both HBM2) residuals
# after their logic die and package; reproduced by tests/carbon/test_catalog.py. ~2.9x DRAM.
HBM_G_PER_GB = 187.0
# Process families onto ACT's node rows: TSMC 16FF/12FFN -> 14, N6 -> 7, 4N/N4 -> 5.
_NODE_FAMILY = {16: 14, 12: 14, 6: 7, 4: 5}


#: Largest die area (mm2) and memory (GB) the ACT estimate takes: far beyond any GPU package.
ACT_MAX_DIE_AREA_MM2 = 1e6
ACT_MAX_MEMORY_GB = 1e6
#: Largest process node (nm) and package carbon (g) the ACT estimate takes.
ACT_MAX_NODE_NM = 1e5
ACT_MAX_PACKAGE_G = 1e9


def act_node_nm(node_nm: float) -> int:
    """The ACT table row used for ``node_nm``: its process family, else the nearest (log) row."""
    node_nm = finite_number("node_nm", node_nm, 0.0, ACT_MAX_NODE_NM, lo_open=True)
    if node_nm in _NODE_FAMILY:
        return _NODE_FAMILY[int(node_nm)]
    rows = sorted(_ACT_EPA_KWH_PER_CM2)
    return min(rows, key=lambda r: (abs(math.log(node_nm / r)), -r))  # ties -> the older node


def act_embodied_breakdown_kg(
    die_area_mm2: float,
    node_nm: float,
    memory_gb: float,
    memory_type: str = "HBM2",
    *,
    fab_intensity_g_per_kwh: float = ACT_FAB_INTENSITY_G_PER_KWH,
    abatement: Literal[95, 97, 99] = 97,
    fab_yield: float = ACT_FAB_YIELD,
    package_g: float = ACT_PACKAGE_G,
) -> dict[str, float]:
    """ACT-style embodied carbon split into ``logic_kg``, ``memory_kg``, ``package_kg``.

    logic  = area_cm2 * (EPA[node] * fab_intensity + GPA[node] + MPA) / fab_yield
    memory = memory_gb * CPG[memory_type] / fab_yield
    EPA (kWh/cm2), GPA (g/cm2; 97 = mean of ACT's 95 % and 99 % abatement tables) and MPA
    (500 g/cm2) are ACT's per-node tables; CPG is :data:`DRAM_G_PER_GB` (ACT's DDR4 10 nm,
    for GDDR/LPDDR) or :data:`HBM_G_PER_GB`. Board, cooler and PCB are not counted (as in ACT's
    IC model).
    """
    die_area_mm2 = finite_number("die_area_mm2", die_area_mm2, 0.0, ACT_MAX_DIE_AREA_MM2)
    memory_gb = finite_number("memory_gb", memory_gb, 0.0, ACT_MAX_MEMORY_GB)
    if isinstance(abatement, bool) or abatement not in (95, 97, 99):
        raise ConfigError(f"abatement = {abatement!r}: must be 95, 97 or 99 (% gas abatement)")
    fab_yield = finite_number("fab_yield", fab_yield, 0.0, 1.0, lo_open=True)  # ACT default 0.875
    fab_intensity_g_per_kwh = finite_number(
        "fab_intensity_g_per_kwh", fab_intensity_g_per_kwh, 0.0, MAX_INTENSITY_G_PER_KWH
    )
    package_g = finite_number("package_g", package_g, 0.0, ACT_MAX_PACKAGE_G)
    row = act_node_nm(node_nm)
    g95, g99 = _ACT_GPA95_G_PER_CM2[row], _ACT_GPA99_G_PER_CM2[row]
    gpa = {95: g95, 99: g99, 97: (g95 + g99) / 2.0}[abatement]
    cpa_g_per_cm2 = _ACT_EPA_KWH_PER_CM2[row] * fab_intensity_g_per_kwh + gpa + _ACT_MPA_G_PER_CM2
    logic_g = die_area_mm2 / 100.0 * cpa_g_per_cm2 / fab_yield
    memory_g = memory_gb * _memory_g_per_gb(memory_type) / fab_yield
    return {"logic_kg": logic_g / 1e3, "memory_kg": memory_g / 1e3, "package_kg": package_g / 1e3}


def act_embodied_kg(
    die_area_mm2: float,
    node_nm: float,
    memory_gb: float,
    memory_type: str = "HBM2",
    *,
    fab_intensity_g_per_kwh: float = ACT_FAB_INTENSITY_G_PER_KWH,
    abatement: Literal[95, 97, 99] = 97,
    fab_yield: float = ACT_FAB_YIELD,
    package_g: float = ACT_PACKAGE_G,
) -> float:
    """ACT-style embodied carbon of one GPU package, kg CO2e (sum of
    :func:`act_embodied_breakdown_kg`; keyword overrides pass through)."""
    parts = act_embodied_breakdown_kg(
        die_area_mm2,
        node_nm,
        memory_gb,
        memory_type,
        fab_intensity_g_per_kwh=fab_intensity_g_per_kwh,
        abatement=abatement,
        fab_yield=fab_yield,
        package_g=package_g,
    )
    return math.fsum(parts.values())


def _memory_g_per_gb(memory_type: str) -> float:
    kind = canonical_memory_type(memory_type)
    return HBM_G_PER_GB if kind.startswith("HBM") else DRAM_G_PER_GB


def canonical_memory_type(memory_type: str) -> str:
    """The canonical spelling of ``memory_type`` (case-insensitive), else :class:`ConfigError`."""
    by_lower = {m.lower(): m for m in MEMORY_TYPES}
    if not isinstance(memory_type, str) or memory_type.lower() not in by_lower:
        raise ConfigError(
            f"memory_type = {memory_type!r}: unknown; allowed: {', '.join(MEMORY_TYPES)}"
        )
    return by_lower[memory_type.lower()]
