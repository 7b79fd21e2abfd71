"""greenllm: cut the carbon of LLM serving by reusing old GPUs (the GreenLLM paper, and more).

Public names are imported lazily, so ``import greenllm`` is cheap and never pulls in torch,
vLLM, Ray or pynvml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.lazy import lazy_exports
from greenllm.version import __version__

_LAZY: dict[str, str] = {
    # errors and config
    "GreenLLMError": "greenllm.errors",
    "ConfigError": "greenllm.errors",
    "BackendUnavailableError": "greenllm.errors",
    "InfeasibleError": "greenllm.errors",
    "ProfileError": "greenllm.errors",
    "WorkerError": "greenllm.errors",
    "BackendClosedError": "greenllm.errors",
    "SLO": "greenllm.config",
    "RequestSize": "greenllm.config",
    "RequestSizeDistribution": "greenllm.config",
    "Workload": "greenllm.config",
    "ModelSpec": "greenllm.config",
    "ConfigKind": "greenllm.config",
    "Configuration": "greenllm.config",
    # carbon
    "GPUSpec": "greenllm.carbon",
    "get_gpu": "greenllm.carbon",
    "register_gpu": "greenllm.carbon",
    "embodied_carbon_g": "greenllm.carbon",
    "operational_carbon_g": "greenllm.carbon",
    "total_carbon_g": "greenllm.carbon",
    "CarbonBreakdown": "greenllm.carbon",
    "carbon_intensity": "greenllm.carbon",
    "CarbonIntensityTrace": "greenllm.carbon",
    # scheduler
    "complete": "greenllm.scheduler",
    "schedule": "greenllm.scheduler",
    "Planner": "greenllm.scheduler",
    "Plan": "greenllm.scheduler",
    # profiler
    "ProfileStore": "greenllm.profiler.store",
    "CarbonMeter": "greenllm.energy",
    "CarbonReport": "greenllm.energy",
}

__all__ = ["__version__", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # pragma: no cover
    from greenllm.config import (  # noqa: F401
        SLO,
        ConfigKind,
        Configuration,
        ModelSpec,
        RequestSize,
        RequestSizeDistribution,
        Workload,
    )
    from greenllm.energy import CarbonMeter, CarbonReport  # noqa: F401
    from greenllm.errors import (  # noqa: F401
        BackendClosedError,
        BackendUnavailableError,
        ConfigError,
        GreenLLMError,
        InfeasibleError,
        ProfileError,
        WorkerError,
    )
