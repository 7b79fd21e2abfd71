"""``SimBackend``: the GPU simulator behind the :class:`~greenllm.backends.base.Backend` protocol.

    backend = SimBackend()
    result = backend.run(Configuration(kind="dsd", old_gpu="T4", draft_model="llama-1b"),
                         workload, duration_s=600, seed=0)
    result.slo_attainment(), result.gpus[0].energy_j, result.link_bytes

Everything a configuration needs is checked before the first simulated step: unknown GPU or
model (:class:`~greenllm.errors.ConfigError`), a model that does not fit in its GPU's memory
(:class:`~greenllm.errors.InfeasibleError`), both or neither of ``requests``/``duration_s``.
Energy is modelled (:mod:`.power`): idle power over the whole run plus each busy interval's
dynamic power; the power trace is what a 200 ms NVML sampler would record.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from greenllm.backends.base import BackendBase, Capabilities, GPUTrace, RunExtra, RunResult
from greenllm.backends.sim.configs import SimOutcome, simulate
from greenllm.backends.sim.instance import EngineParams
from greenllm.backends.sim.link import DEFAULT_LINK_LATENCY_S
from greenllm.backends.sim.options import SimOptions, plan
from greenllm.config import ConfigKind, Configuration, Workload
from greenllm.energy import NVML_PERIOD_S, power_model
from greenllm.errors import ConfigError
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = ["SimBackend"]

logger = logging.getLogger(__name__)


class SimBackend(BackendBase):
    """Simulated serving of the four configurations on catalog GPUs (no GPU needed).

    Parameters (all optional): ``acceptance_rate`` (a number for every draft/target pair, or a
    ``{(draft, target): rate}`` mapping; default :data:`.configs.ACCEPTANCE_RATES`),
    ``dsd_overlap`` (the paper's Figure 7 overlap of the probability transfer with the target
    forward), ``dsd_draft_ahead`` (DSD's draft drafts the next round while the target verifies,
    :mod:`greenllm.speculation.ahead`), ``link_latency_s`` (one way), ``engine``
    (:class:`.engine.EngineParams`: token budget, sequence cap, overload limits),
    ``gpu_memory_utilization`` (vLLM's 0.9) and ``power_period_s`` (power-trace sampling
    period, NVML's 0.2 s in the paper).
    """

    name = "sim"

    def __init__(
        self,
        *,
        acceptance_rate: float | Mapping[tuple[str, str], float] | None = None,
        dsd_overlap: bool = True,
        dsd_draft_ahead: bool = False,
        link_latency_s: float = DEFAULT_LINK_LATENCY_S,
        engine: EngineParams | None = None,
        gpu_memory_utilization: float = 0.9,
        power_period_s: float = NVML_PERIOD_S,
    ) -> None:
        for name, flag in (("dsd_overlap", dsd_overlap), ("dsd_draft_ahead", dsd_draft_ahead)):
            if not isinstance(flag, bool):
                raise ConfigError(f"{name} = {flag!r}: must be True or False")
        if not (isinstance(power_period_s, (int, float)) and 0 < power_period_s < math.inf):
            raise ConfigError(f"power_period_s = {power_period_s!r}: must be a number > 0")
        self.options = SimOptions(
            engine=engine or EngineParams(),
            acceptance_rate=acceptance_rate,
            dsd_overlap=dsd_overlap,
            dsd_draft_ahead=dsd_draft_ahead,
            link_latency_s=link_latency_s,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.power_period_s = float(power_period_s)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            kinds=frozenset(ConfigKind),
            energy="modelled",
            needs_gpu=False,
            description="event-driven simulator: roofline step times, linear power model",
        )

    def run(
        self,
        configuration: Configuration,
        workload: Workload,
        *,
        requests: RequestSet | None = None,
        duration_s: float | None = None,
        seed: int = 0,
        record_token_times: bool = False,
    ) -> RunResult:
        """Serve ``requests`` (or Poisson arrivals at ``workload.qps`` for ``duration_s``);
        ``record_token_times`` also keeps the time of every token."""
        served = self.check_run(configuration, workload, requests, duration_s, seed)
        return self._run(configuration, workload, served, int(seed), record_token_times)

    def _run(
        self,
        configuration: Configuration,
        workload: Workload,
        requests: RequestSet,
        seed: int,
        record_token_times: bool = False,
    ) -> RunResult:
        sim = plan(configuration, self.options)  # errors before any simulation
        wall = time.perf_counter()
        out = simulate(sim, requests, self.options, seed=seed,
                       record_token_times=record_token_times)  # fmt: skip
        timing: RunExtra = {"wall_s": time.perf_counter() - wall}
        out.extra.update(timing)
        return self._result(configuration, workload, requests, seed, sim.roles, out)

    def _result(
        self,
        configuration: Configuration,
        workload: Workload,
        requests: RequestSet,
        seed: int,
        roles: tuple[str, ...],
        out: SimOutcome,
    ) -> RunResult:
        duration = out.duration_s
        traces = []
        for gpu, role, log in zip(configuration.gpus, roles, out.busy, strict=True):
            pm = power_model(gpu)
            s, e, u = log.arrays()
            traces.append(
                GPUTrace(
                    gpu=gpu,  # as the configuration names it
                    role=role,
                    busy_s=float(np.sum(np.clip(e, 0, duration) - np.clip(s, 0, duration))),
                    allocated_s=duration,
                    energy_j=pm.energy_j(s, e, u, 0.0, duration),
                    power_times_s=(trace := pm.trace(s, e, u, 0.0, duration, self.power_period_s))[
                        0
                    ],
                    power_w=trace[1],
                )
            )
        timings = RequestTimings(
            requests.arrival_s,
            out.first_token_s,
            out.finish_s,
            requests.input_tokens,
            requests.output_tokens,
        )
        if out.events is not None:
            timings = _with_tokens(timings, out.events)
        return RunResult(
            backend=self.name,
            configuration=configuration,
            workload=workload,
            seed=seed,
            requests=timings,
            gpus=tuple(traces),
            duration_s=duration,
            link_bytes=int(out.link_bytes),
            spec_proposed_tokens=int(out.spec_proposed_tokens),
            spec_accepted_tokens=int(out.spec_accepted_tokens),
            overloaded=bool(out.overloaded),
            energy="modelled",
            extra=dict(out.extra),
        )

    def _close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        o = self.options
        return (
            f"SimBackend(acceptance_rate={o.acceptance_rate!r}, dsd_overlap={o.dsd_overlap}, "
            f"link_latency_s={o.link_latency_s:g})"
        )


def _with_tokens(timings: RequestTimings, events: tuple[Any, Any, Any]) -> RequestTimings:
    """Expand (request, time, count) events into per-request token times in time order."""
    ids, times, counts = (np.asarray(x) for x in events)
    n = len(timings)
    order = np.lexsort((times, ids))
    ids, times, counts = ids[order], times[order], counts[order]
    per_req = np.bincount(ids, weights=counts, minlength=n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_req)])
    return RequestTimings(
        timings.arrival_s,
        timings.first_token_s,
        timings.finish_s,
        timings.input_tokens,
        timings.output_tokens,
        token_times_s=np.repeat(times, counts),
        token_offsets=offsets,
    )
