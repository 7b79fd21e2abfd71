"""GPU simulator backend: roofline step times, a power model and an event-driven serving loop.

``SimBackend().run(configuration, workload, duration_s=...)`` simulates Standalone,
SpecDecode, Disg-Pref-Decode and Disg-Spec-Decode on catalog GPUs without a GPU; see
docs/simulator.md for how it works, its parameters and its limits. :func:`register_cpu` adds
this machine's CPU as the device ``cpu`` (a profile measured here by
:func:`greenllm.backends.torch.cpu_profile.measure_cpu`, docs/simulator-model.md).
"""

from __future__ import annotations

from greenllm.backends.sim.backend import SimBackend
from greenllm.backends.sim.cpu import CPU_DEVICE, CpuProfile, register_cpu
from greenllm.backends.sim.instance import EngineParams
from greenllm.backends.sim.link import DEFAULT_LINK_LATENCY_S, Link
from greenllm.backends.sim.live import LiveSim
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.options import SimOptions
from greenllm.backends.sim.roofline import StepModel, forward_time_s
from greenllm.backends.sim.speculation import (
    ACCEPTANCE_RATES,
    DEFAULT_ACCEPTANCE_RATE,
    AcceptanceSampler,
    acceptance_rate_for,
)

__all__ = [
    "ACCEPTANCE_RATES",
    "CPU_DEVICE",
    "DEFAULT_ACCEPTANCE_RATE",
    "DEFAULT_LINK_LATENCY_S",
    "AcceptanceSampler",
    "CpuProfile",
    "EngineParams",
    "Link",
    "LiveSim",
    "SimBackend",
    "SimOptions",
    "StepModel",
    "acceptance_rate_for",
    "forward_time_s",
    "get_model",
    "register_cpu",
]
