"""Simulator settings and a configuration resolved for simulation, before any run.

:class:`SimOptions` holds what a :class:`~greenllm.config.Configuration` does not say (engine
knobs, acceptance rates, DSD overlap, link latency, memory share); :func:`plan` resolves the
configuration's GPUs and models against the catalogs and sizes every KV cache into a
:class:`SimPlan`, failing fast with ``ConfigError`` / ``InfeasibleError`` (docs/simulator.md,
"Before anything is simulated"). :func:`~greenllm.backends.sim.configs.simulate` runs a plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from greenllm.backends.base import ROLES
from greenllm.backends.sim.instance import EngineParams
from greenllm.backends.sim.link import DEFAULT_LINK_LATENCY_S
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.roofline import kv_capacity_tokens
from greenllm.backends.sim.speculation import acceptance_rate_for
from greenllm.carbon import GPUSpec, get_gpu
from greenllm.config import ConfigKind, Configuration, ModelSpec
from greenllm.errors import ConfigError

__all__ = ["SimOptions", "SimPlan", "plan"]


@dataclass(frozen=True)
class SimOptions:
    """Simulator settings that are not part of a :class:`~greenllm.config.Configuration`."""

    engine: EngineParams = field(default_factory=EngineParams)
    acceptance_rate: float | Mapping[tuple[str, str], float] | None = None
    dsd_overlap: bool = True
    dsd_draft_ahead: bool = False
    """DSD's draft drafts the next round while the target verifies (draft-ahead), hitting at
    :func:`greenllm.speculation.ahead_hit_rate` of the acceptance rate and K."""
    link_latency_s: float = DEFAULT_LINK_LATENCY_S
    gpu_memory_utilization: float = 0.9


@dataclass(frozen=True)
class SimPlan:
    """A configuration resolved against the catalogs and checked for memory, before any run."""

    configuration: Configuration
    gpus: tuple[GPUSpec, ...]  # configuration.gpus order (new first)
    roles: tuple[str, ...]
    target: ModelSpec
    draft: ModelSpec | None
    kv_capacity_tokens: tuple[int, ...]  # per GPU (SpecDecode: target + draft tokens)
    acceptance_rate: float | None
    k: int


def plan(configuration: Configuration, options: SimOptions) -> SimPlan:
    """Resolve GPUs and models and size the KV caches; ``ConfigError``/``InfeasibleError``
    (a model that does not fit) before anything is simulated."""
    c = configuration
    gpus = tuple(get_gpu(g) for g in c.gpus)
    target = get_model(c.target_model)
    draft = get_model(c.draft_model) if c.draft_model is not None else None
    if draft is not None and draft.vocab_size != target.vocab_size:
        raise ConfigError(
            f"draft {draft.name} (vocab {draft.vocab_size}) and target {target.name} (vocab "
            f"{target.vocab_size}) must share a vocabulary for speculative decoding"
        )
    mem = {
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "max_batched_tokens": options.engine.max_batched_tokens,
    }
    if c.kind is ConfigKind.STANDALONE:
        caps = (kv_capacity_tokens(target, gpus[0], **mem),)
    elif c.kind is ConfigKind.SPEC_DECODE:  # both models' weights, KV of both per token
        assert draft is not None
        caps = (kv_capacity_tokens(target, gpus[0], other_models=(draft,), **mem),)
    elif c.kind is ConfigKind.DPD:
        caps = tuple(kv_capacity_tokens(target, g, **mem) for g in gpus)
    else:
        assert draft is not None
        caps = (
            kv_capacity_tokens(target, gpus[0], **mem),
            kv_capacity_tokens(draft, gpus[1], **mem),
        )
    rate = None
    if draft is not None:
        rate = acceptance_rate_for(draft.name, target.name, options.acceptance_rate)
    return SimPlan(c, gpus, ROLES[c.kind], target, draft, caps, rate, c.num_speculative_tokens)
