"""Power and energy measurement: one :class:`PowerSampler` interface over NVML (NVIDIA GPUs),
RAPL (CPU package/DRAM), a power model (the simulator), a recorded trace (tests) and nothing.

>>> with ModelledSampler(300.0) as sampler:           # doctest: +SKIP
...     sampler.begin_window("prefill")
...     run_prefill()
...     m = sampler.end_window("prefill")
>>> m.energy_j, m.mean_power_w, m.flags               # doctest: +SKIP

The hardware modules (``pynvml``) are imported only when a sampler starts. See docs/energy.md
for how each kind of hardware measures energy and its known errors.
"""

from __future__ import annotations

import logging

from greenllm.checks import finite_number
from greenllm.energy.nvml import NVMLSampler, nvml_available
from greenllm.energy.rapl import RAPLSampler, rapl_available
from greenllm.energy.replay import (
    NullSampler,
)
from greenllm.energy.sampler import PowerSampler
from greenllm.units import MAX_PERIOD_S

__all__ = ["default_sampler"]

logger = logging.getLogger(__name__)


def default_sampler(period_s: float = 0.2) -> PowerSampler:
    """The best sampler this machine has: NVML if a GPU answers, else RAPL if its counters are
    readable, else :class:`NullSampler` (energy unmeasured). Logs which one and why."""
    period_s = finite_number(
        "period_s", period_s, 0.0, MAX_PERIOD_S, lo_open=True, where="default_sampler"
    )
    if nvml_available():
        logger.info("power: NVML (NVIDIA GPUs) every %.3g s", period_s)
        return NVMLSampler(period_s)
    if rapl_available():
        logger.info("power: no NVML GPU; RAPL (CPU package/DRAM) every %.3g s", period_s)
        return RAPLSampler(period_s)
    logger.info(
        "power: no NVML GPU and no readable RAPL counters; energy is not measured (NullSampler)"
    )
    return NullSampler(period_s)
