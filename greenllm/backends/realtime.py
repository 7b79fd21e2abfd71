"""What the backends that serve in real time (``torch``, ``vllm``) share.

Both submit every request at its arrival time (open loop), a lead of :data:`LEAD_S` after the
run starts; both turn the time of every token into per-request timings (:func:`request_timings`)
and report each GPU's energy as NVML measured it when a GPU answers (:func:`measuring_sampler`,
:func:`measured_j`), else as the simulator's power model of the nominal GPU over the busy
intervals they measured (:func:`gpu_trace`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from greenllm.backends.base import GPUTrace
from greenllm.energy import power_model
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = ["LEAD_S", "gpu_trace", "measured_j", "measuring_sampler", "request_timings"]

logger = logging.getLogger(__name__)

LEAD_S = 0.3
"""Seconds between the start of a run and its arrival time 0: time to hand every request to
the workers before the first one is due."""


def request_timings(
    requests: RequestSet, token_times: Sequence[Sequence[float] | None], t0: float
) -> RequestTimings:
    """Per-request timings relative to ``t0`` with every token's time, from the absolute time of
    each token of each request (``None`` or empty: the request failed and keeps NaN times).
    Token times are made non-decreasing."""
    n = len(requests)
    first, finish = np.full(n, np.nan), np.full(n, np.nan)
    times: list[float] = []
    counts = np.zeros(n, dtype=np.int64)
    for i, tokens in enumerate(token_times):
        if tokens is None or not len(tokens):
            continue
        ts = np.maximum.accumulate(np.asarray(tokens, dtype=float) - t0)
        first[i], finish[i] = ts[0], ts[-1]
        times.extend(ts.tolist())
        counts[i] = len(ts)
    return RequestTimings(
        requests.arrival_s,
        first,
        finish,
        requests.input_tokens,
        requests.output_tokens,
        token_times_s=np.asarray(times, dtype=float),
        token_offsets=np.concatenate([[0], np.cumsum(counts)]),
    )


def gpu_trace(
    gpu: str,
    role: str,
    intervals: tuple[np.ndarray, np.ndarray, np.ndarray],
    duration_s: float,
    period_s: float,
    measured_j: float | None = None,
) -> GPUTrace:
    """One GPU's trace: busy time from ``intervals`` (``starts, ends, utilisation``); energy
    ``measured_j`` if given, else modelled with the simulator's power model of ``gpu``."""
    s, e, u = (np.asarray(x, dtype=float) for x in intervals)
    s, e = np.clip(s, 0.0, duration_s), np.clip(e, 0.0, duration_s)
    busy = float(np.sum(e - s))
    pm = power_model(gpu)  # also checks that the catalog knows ``gpu``
    if measured_j is not None:
        return GPUTrace(gpu, role, busy, duration_s, float(measured_j))
    times, watts = pm.trace(s, e, u, 0.0, duration_s, period_s)
    return GPUTrace(
        gpu=gpu,
        role=role,
        busy_s=busy,
        allocated_s=duration_s,
        energy_j=pm.energy_j(s, e, u, 0.0, duration_s),
        power_times_s=times,
        power_w=watts,
    )


def measuring_sampler(period_s: float) -> Any:
    """The profiler's NVML sampler when a GPU answers, else None (energy is then modelled)."""
    from greenllm.energy import NVMLSampler, default_sampler

    sampler = default_sampler(period_s)
    return sampler if isinstance(sampler, NVMLSampler) else None


def measured_j(sampler: Any, n_gpus: int) -> list[float] | None:
    """Joules of the first ``n_gpus`` GPUs over the ``"run"`` window of ``sampler`` (which is
    stopped); None without a sampler or with fewer GPUs than roles (energy is then modelled)."""
    if sampler is None:
        return None
    m = sampler.end_window("run")
    sampler.stop()
    devices = list(sampler.devices)
    if len(devices) < n_gpus:
        logger.warning("NVML sees %d GPUs for %d roles: modelling energy", len(devices), n_gpus)
        return None
    return [float(m.energy_j[d]) for d in devices[:n_gpus]]
