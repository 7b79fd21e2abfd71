"""Carbon accounting: the GPU catalog, Eq. 1-3, grid carbon intensity (Section 5's analysis is
:mod:`greenllm.carbon.analysis`).

Imports numpy only; never torch, vLLM, Ray or pynvml.
"""

from greenllm.carbon.accounting import (
    CarbonBreakdown,
    DeviceUsage,
    amortized_embodied_g,
    embodied_carbon_g,
    lifetime_for,
    operational_carbon_g,
    split_by_tokens,
    total_carbon_g,
    window_carbon,
)
from greenllm.carbon.catalog.act import act_embodied_breakdown_kg, act_embodied_kg
from greenllm.carbon.catalog.registry import (
    GPUSpec,
    get_gpu,
    list_gpus,
    register_gpu,
    unregister_gpu,
)
from greenllm.carbon.intensity.data import PAPER_REGIONS, TRACE_REGIONS
from greenllm.carbon.intensity.providers import (
    CachedProvider,
    ElectricityMapsProvider,
    IntensityProvider,
    IntensityReading,
    IntensityUnavailableError,
    StaticProvider,
    TraceProvider,
    WattTimeProvider,
    make_provider,
)
from greenllm.carbon.intensity.regions import (
    RegionInfo,
    carbon_intensity,
    list_regions,
    region_info,
)
from greenllm.carbon.intensity.trace import CarbonIntensityTrace

__all__ = [
    "PAPER_REGIONS",
    "TRACE_REGIONS",
    "CachedProvider",
    "CarbonBreakdown",
    "CarbonIntensityTrace",
    "DeviceUsage",
    "ElectricityMapsProvider",
    "GPUSpec",
    "IntensityProvider",
    "IntensityReading",
    "IntensityUnavailableError",
    "RegionInfo",
    "StaticProvider",
    "TraceProvider",
    "WattTimeProvider",
    "act_embodied_breakdown_kg",
    "act_embodied_kg",
    "amortized_embodied_g",
    "carbon_intensity",
    "embodied_carbon_g",
    "get_gpu",
    "lifetime_for",
    "list_gpus",
    "list_regions",
    "make_provider",
    "operational_carbon_g",
    "region_info",
    "register_gpu",
    "split_by_tokens",
    "total_carbon_g",
    "unregister_gpu",
    "window_carbon",
]
