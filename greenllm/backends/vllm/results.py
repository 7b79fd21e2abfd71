"""Turn what the vLLM workers reported into the Backend protocol's RunResult pieces.

Times: every worker reports ``time.monotonic()`` of this host (vLLM's engine-core timestamps
are monotonic too); the run's origin ``t0`` maps them to seconds from the start of the run
(:func:`~greenllm.backends.realtime.request_timings`).

Busy time per GPU role: an engine is busy from a request's scheduling to its last token
(:func:`~greenllm.backends.vllm.metrics.busy_intervals`: utilisation 1 while some request is in
prefill, :data:`~greenllm.backends.sim.efficiency.MEMORY_POWER_FRACTION` in pure decode). The
DSD draft server's busy time is the compute time it reports per call (on the proposer's clock).

Energy: measured by NVML when the profiler's default sampler is NVML; otherwise (this CPU
machine) modelled from the busy intervals (:func:`~greenllm.backends.realtime.gpu_trace`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from greenllm.backends.base import RunExtra
from greenllm.backends.sim.efficiency import MEMORY_POWER_FRACTION
from greenllm.backends.vllm.metrics import Snapshot, busy_intervals, prompt_tokens_by_source
from greenllm.backends.vllm.pool import Engine
from greenllm.backends.vllm.protocol import DraftCall, decode
from greenllm.backends.vllm.router import RequestRecord

__all__ = ["dpd_link", "draft_log", "engine_intervals", "folder_bytes", "run_extra"]


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
                message = decode(raw)
            except ValueError:  # a line cut short by a killed proposer
                continue
            if message["type"] != "draft_call":
                continue
            rec = cast(DraftCall, message)
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


def run_extra(
    engines: list[Engine], records: list[RequestRecord], measured: bool, old_device: str | None
) -> dict[str, Any]:
    """``RunResult.extra`` entries every configuration has; ``old_device`` is where the old
    GPU's side ran (None: the configuration has none)."""
    first = engines[0].worker.name
    lags = [r.submit_s[first] - r.arrival_s for r in records if first in r.submit_s]
    common: RunExtra = {
        "devices": {"new": engines[0].ready.get("device", "cpu"), "old": old_device},
        "token_ids": [r.token_ids for r in records],
        "energy_model": "measured: NVML" if measured else (
            "modelled: the simulator's power model of each nominal GPU over the engines' busy "
            "intervals (no GPU power sampler here)"),
    }  # fmt: skip
    return {
        **common,
        "vllm_version": engines[0].ready.get("version"),
        "vllm_features": engines[0].ready.get("features", {}),
        "engine_start_s": {
            e.spec.role: round(float(e.ready.get("start_s", 0.0)), 2) for e in engines
        },
        "cpu_cores": {
            e.spec.role: e.spec.env.get("VLLM_CPU_OMP_THREADS_BIND", "auto") for e in engines
        },
        "models": {e.spec.role: e.spec.engine.get("model") for e in engines},
        "max_submit_lag_s": float(max(lags, default=0.0)),
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
