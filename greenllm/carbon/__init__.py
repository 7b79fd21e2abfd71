"""Carbon accounting: GPU catalog, Eq. 1-3, grid carbon intensity, Section 5's analysis.

Imports numpy only; never torch, vLLM, Ray or pynvml.
"""

from greenllm.carbon.accounting import (
    CarbonBreakdown,
    DeviceUsage,
    embodied_carbon_g,
    lifetime_for,
    operational_carbon_g,
    split_by_tokens,
    total_carbon_g,
    window_carbon,
)
from greenllm.carbon.hardware import GPUSpec, act_embodied_kg, get_gpu, list_gpus, register_gpu
from greenllm.carbon.intensity import (
    CarbonIntensityTrace,
    RegionInfo,
    carbon_intensity,
    list_regions,
    region_info,
)

__all__ = [
    "CarbonBreakdown",
    "CarbonIntensityTrace",
    "DeviceUsage",
    "GPUSpec",
    "RegionInfo",
    "act_embodied_kg",
    "carbon_intensity",
    "embodied_carbon_g",
    "get_gpu",
    "lifetime_for",
    "list_gpus",
    "list_regions",
    "operational_carbon_g",
    "region_info",
    "register_gpu",
    "split_by_tokens",
    "total_carbon_g",
    "window_carbon",
]
