"""Energy: power samplers (NVML, RAPL, a power model, a replayed trace, nothing), their windowed
integration, the GPU power model, and :class:`CarbonMeter` (Eq. 1-3 around any serving code).

The hardware modules (``pynvml``) are imported only when a sampler starts.
"""

from greenllm.energy.default import default_sampler
from greenllm.energy.integration import (
    EnergyMeasurement,
    cumulative_j,
    epoch_clock,
    measure_window,
    trapezoid_j,
    window_series,
)
from greenllm.energy.meter import CarbonMeter, CarbonReport, MeterWindow
from greenllm.energy.nvml import NVMLSampler, nvml_available
from greenllm.energy.power_model import (
    NVML_PERIOD_S,
    PowerModel,
    energy_j,
    power_model,
    power_trace,
    power_w,
)
from greenllm.energy.rapl import RAPLSampler, RaplZone, find_rapl_zones, rapl_available
from greenllm.energy.replay import (
    ModelledSampler,
    NullSampler,
    ReplaySampler,
    read_power_csv,
    write_power_csv,
)
from greenllm.energy.sampler import PowerSampler, Sample

__all__ = [
    "NVML_PERIOD_S",
    "CarbonMeter",
    "CarbonReport",
    "EnergyMeasurement",
    "MeterWindow",
    "ModelledSampler",
    "NVMLSampler",
    "NullSampler",
    "PowerModel",
    "PowerSampler",
    "RAPLSampler",
    "RaplZone",
    "ReplaySampler",
    "Sample",
    "cumulative_j",
    "default_sampler",
    "energy_j",
    "epoch_clock",
    "find_rapl_zones",
    "measure_window",
    "nvml_available",
    "power_model",
    "power_trace",
    "power_w",
    "rapl_available",
    "read_power_csv",
    "trapezoid_j",
    "window_series",
    "write_power_csv",
]
