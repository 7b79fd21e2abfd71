"""Turn what the vLLM workers reported into the Backend protocol's RunResult pieces.

Times: every worker reports ``time.monotonic()`` of this host (vLLM's engine-core timestamps
are monotonic too); the run's origin ``t0`` maps them to seconds from the start of the run.

Busy time per GPU role: an engine is busy from a request's scheduling to its last token
(:func:`~greenllm.backends.vllm.metrics.busy_intervals`: utilisation 1 while some request is in
prefill, :data:`~greenllm.backends.sim.calibration.MEMORY_POWER_FRACTION` in pure decode). The
DSD draft server's busy time is the compute time it reports per call (on the proposer's clock).

Energy: measured by NVML when the profiler's default sampler is NVML; otherwise (this CPU
machine) modelled from the busy intervals with the simulator's power model of the configured
GPU (:mod:`greenllm.energy.power_model`: idle power over the allocation plus dynamic power
while busy), and ``RunResult.energy == "modelled"``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.backends.base import GPUTrace
from greenllm.backends.sim.calibration import MEMORY_POWER_FRACTION
from greenllm.backends.vllm.metrics import Snapshot, busy_intervals, prompt_tokens_by_source
from greenllm.backends.vllm.pool import Engine
from greenllm.backends.vllm.router import RequestRecord
from greenllm.energy import power_model
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = [
    "dpd_link",
    "draft_log",
    "engine_intervals",
    "folder_bytes",
    "gpu_trace",
    "measured_j",
    "measuring_sampler",
    "run_extra",
    "timings",
]

logger = logging.getLogger(__name__)


def timings(requests: RequestSet, records: Sequence[RequestRecord], t0: float) -> RequestTimings:
    """Per-request timings relative to ``t0``, with every token's time."""
    n = len(requests)
    first = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    times: list[float] = []
    counts = np.zeros(n, dtype=np.int64)
    for rec in records:
        ts = np.maximum.accumulate(np.asarray(rec.token_times_s, dtype=float) - t0)
        if rec.finished and len(ts):
            first[rec.index], finish[rec.index] = ts[0], ts[-1]
            times.extend(ts.tolist())
            counts[rec.index] = len(ts)
    return RequestTimings(
        requests.arrival_s,
        first,
        finish,
        requests.input_tokens,
        requests.output_tokens,
        token_times_s=np.asarray(times, dtype=float),
        token_offsets=np.concatenate([[0], np.cumsum(counts)]),
    )


def engine_intervals(
    records: Sequence[RequestRecord], engine: str, t0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Busy ``(starts, ends, utilisation)`` of ``engine`` relative to ``t0``."""
    pre, dec = [], []
    for rec in records:
        st = rec.stats.get(engine)
        if not st or "first_token_ts" not in st:
            continue
        start = st.get("scheduled_ts", st.get("queued_ts", st["first_token_ts"]))
        pre.append((start - t0, st["first_token_ts"] - t0))
        dec.append((st["first_token_ts"] - t0, st.get("last_token_ts", st["first_token_ts"]) - t0))
    return busy_intervals(pre, dec, MEMORY_POWER_FRACTION)


def draft_log(path: Path, offset_bytes: int, t0: float) -> dict[str, Any]:
    """Sum the proposer's call log from ``offset_bytes`` on: bytes, outcomes, busy intervals."""
    out: dict[str, Any] = {"calls": 0, "ok": 0, "fallbacks": 0, "timeouts": 0, "errors": 0,
                           "bytes": 0, "busy_s": 0.0, "proposed_tokens": 0}  # fmt: skip
    starts: list[float] = []
    ends: list[float] = []
    if path.is_file():
        with path.open("rb") as f:
            f.seek(offset_bytes)
            lines = f.read().splitlines()
        for raw in lines:
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                continue
            out["calls"] += 1
            out["bytes"] += int(rec.get("sent", 0)) + int(rec.get("received", 0))
            outcome = rec.get("outcome")
            if outcome == "ok":
                out["ok"] += 1
                busy = float(rec.get("busy_s", 0.0))
                out["busy_s"] += busy
                out["proposed_tokens"] += int(rec.get("tokens", 0))
                end = float(rec["t"]) - t0
                starts.append(min(end, max(end - busy, ends[-1] if ends else -math.inf)))
                ends.append(end)
            else:
                out["fallbacks"] += 1
                out["timeouts"] += outcome == "timeout"
                out["errors"] += outcome == "error"
    out["intervals"] = (np.asarray(starts), np.asarray(ends))
    return out


def gpu_trace(
    gpu: str,
    role: str,
    intervals: tuple[np.ndarray, np.ndarray, np.ndarray],
    duration_s: float,
    period_s: float,
    measured_j: float | None = None,
) -> GPUTrace:
    """One GPU's trace: busy time from ``intervals``; energy ``measured_j`` if given, else
    modelled with the simulator's power model of ``gpu``."""
    s, e, u = (np.asarray(x, dtype=float) for x in intervals)
    s, e = np.clip(s, 0.0, duration_s), np.clip(e, 0.0, duration_s)
    busy = float(np.sum(e - s))
    pm = power_model(gpu)
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


def run_extra(
    engines: list[Engine], records: list[RequestRecord], measured: bool
) -> dict[str, Any]:
    """``RunResult.extra`` entries every configuration has."""
    first = engines[0].worker.name
    lags = [r.submit_s[first] - r.arrival_s for r in records if first in r.submit_s]
    return {
        "device": engines[0].ready.get("device", "cpu"),
        "vllm_version": engines[0].ready.get("version"),
        "vllm_features": engines[0].ready.get("features", {}),
        "engine_start_s": {
            e.spec.role: round(float(e.ready.get("start_s", 0.0)), 2) for e in engines
        },
        "cpu_cores": {
            e.spec.role: e.spec.env.get("VLLM_CPU_OMP_THREADS_BIND", "auto") for e in engines
        },
        "models": {e.spec.role: e.spec.engine.get("model") for e in engines},
        "token_ids": [r.token_ids for r in records],
        "max_submit_lag_s": float(max(lags, default=0.0)),
        "energy_model": "measured: NVML"
        if measured
        else "modelled: the simulator's power model "
        "of each nominal GPU over the engines' busy intervals (no GPU power sampler here)",
    }


def dpd_link(
    before: Snapshot,
    after: Snapshot,
    kv_bytes_per_token: int,
    records: Sequence[RequestRecord],
    store: Path,
) -> tuple[int, dict[str, Any]]:
    """DPD's link bytes (external-KV prompt tokens x KV bytes per token + hand-off messages)
    and the numbers behind them, from the decode engine's metric snapshots."""
    by_source = prompt_tokens_by_source(before, after)
    external = by_source.get("external_kv_transfer", 0)
    handoff = sum(r.handoff_bytes for r in records)
    return external * kv_bytes_per_token + handoff, {
        "prompt_tokens_by_source": by_source,
        "external_kv_tokens": external,
        "kv_bytes_per_token": kv_bytes_per_token,
        "kv_bytes": external * kv_bytes_per_token,
        "handoff_bytes": handoff,
        "kv_store_bytes": folder_bytes(store),
    }


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def measuring_sampler(period_s: float) -> Any:
    """The profiler's NVML sampler when a GPU answers, else None (energy is then modelled)."""
    from greenllm.energy import NVMLSampler, default_sampler

    sampler = default_sampler(period_s)
    return sampler if isinstance(sampler, NVMLSampler) else None


def measured_j(sampler: Any, n_gpus: int) -> list[float] | None:
    if sampler is None:
        return None
    m = sampler.end_window("run")
    sampler.stop()
    devices = list(sampler.devices)
    if len(devices) < n_gpus:
        logger.warning("NVML sees %d GPUs for %d roles: modelling energy", len(devices), n_gpus)
        return None
    return [float(m.energy_j[d]) for d in devices[:n_gpus]]
