"""Your own measurements: vLLM's serving benchmark results as profile records.

Reads the JSON that ``vllm bench serve --save-result --save-detailed`` (and the older
``benchmarks/benchmark_serving.py``) writes. The fields used, as vLLM 0.32's
``vllm/benchmarks/serve.py`` names them: ``duration`` (s), ``completed``, ``failed``,
``request_rate`` (a number or ``"inf"``), ``request_throughput``, ``date``
(``%Y%m%d-%H%M%S``, local time, written when the run ended), ``model_id``, ``backend``,
``max_concurrency``, ``burstiness``, and per request (``--save-detailed`` only): ``input_lens``,
``output_lens``, ``ttfts`` (s), ``itls`` (a list of inter-token gaps per request, s),
``latencies`` (s), ``start_times`` and ``errors`` (``""`` for a success). Without the
per-request lists the SLO attainment cannot be computed, and the reader says so.

Energy comes from a power log per GPU of the configuration (new GPU first), as
``nvidia-smi --query-gpu=timestamp,power.draw --format=csv -lms 200`` writes it (with or
without units, local timestamps like the benchmark's ``date``), integrated over the run
(``date - duration`` to ``date``); without logs it is **modelled** and flagged: each GPU at
the power model's idle power throughout, plus its dynamic power while at least one request was
in flight (``start_times`` + ``latencies``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.config import Configuration, Workload
from greenllm.energy import power_model, trapezoid_j
from greenllm.errors import ConfigError
from greenllm.profiler.store.records import ProfileRecord, Provenance

__all__ = ["read_nvidia_smi_csv", "record_from_vllm_bench", "request_rate"]

_DETAILED = ("ttfts", "itls", "output_lens", "errors")


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a vLLM benchmark result (JSON): {err}") from None
    if not isinstance(data, dict) or "duration" not in data or "completed" not in data:
        raise ConfigError(f"{path}: not a vLLM serving benchmark result (no duration/completed)")
    missing = [k for k in _DETAILED if k not in data]
    if missing:
        raise ConfigError(f"{path}: no per-request {', '.join(missing)}: rerun `vllm bench "
                          "serve` with --save-result --save-detailed")  # fmt: skip
    return data


def _number(path: Path, data: dict[str, Any], key: str) -> float:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ConfigError(f"{path}: {key} = {v!r}: expected a finite number >= 0")
    return float(v)


def _end_s(path: Path, data: dict[str, Any]) -> float:
    try:
        return datetime.strptime(str(data.get("date")), "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        raise ConfigError(f"{path}: date = {data.get('date')!r}: expected %Y%m%d-%H%M%S (vLLM's "
                          "format); needed to line the power log up with the run") from None


def read_nvidia_smi_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(epoch seconds, watts) of one GPU from an ``nvidia-smi --query-gpu=timestamp,power.draw
    --format=csv`` log (local timestamps; ``W`` units optional; an ``index`` column, if any,
    must name one GPU)."""
    p = Path(path)
    times, watts, indices = [], [], set()
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            header = [h.strip().lower() for h in next(reader, [])]
            t_col = next((i for i, h in enumerate(header) if h.startswith("timestamp")), None)
            p_col = next((i for i, h in enumerate(header) if h.startswith("power.draw")), None)
            i_col = next((i for i, h in enumerate(header) if h == "index"), None)
            if t_col is None or p_col is None:
                raise ConfigError(f"{p}, line 1: header {header}: need timestamp and power.draw "
                                  "(nvidia-smi --query-gpu=timestamp,power.draw --format=csv)")
            for row in reader:
                if not row or not "".join(row).strip():
                    continue
                try:
                    when = datetime.strptime(row[t_col].strip(), "%Y/%m/%d %H:%M:%S.%f")
                    w = float(row[p_col].strip().removesuffix("W").strip())
                except (ValueError, IndexError):
                    raise ConfigError(f"{p}, line {reader.line_num}: cannot read {row!r} as "
                                      "(timestamp, power.draw)") from None
                if i_col is not None:
                    indices.add(row[i_col].strip())
                times.append(when.timestamp())
                watts.append(w)
    except OSError as err:
        raise ConfigError(f"cannot read power log {str(p)!r}: {err}") from None
    if len(indices) > 1:
        raise ConfigError(f"{p}: samples of GPUs {sorted(indices)}: give one log per GPU "
                          "(nvidia-smi -i INDEX)")  # fmt: skip
    if len(times) < 2:
        raise ConfigError(f"{p}: fewer than two samples")
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.asarray(watts)[order]


def _window_j(t: np.ndarray, w: np.ndarray, t0: float, t1: float, log: str) -> float:
    if t[0] > t0 + 1.0 or t[-1] < t1 - 1.0:
        raise ConfigError(f"{log}: samples from {datetime.fromtimestamp(t[0])} to "
                          f"{datetime.fromtimestamp(t[-1])} do not cover the run "
                          f"({datetime.fromtimestamp(t0)} to {datetime.fromtimestamp(t1)})")
    inside = (t > t0) & (t < t1)
    ts = np.concatenate([[t0], t[inside], [t1]])
    ws = np.concatenate([[np.interp(t0, t, w)], w[inside], [np.interp(t1, t, w)]])
    return trapezoid_j(ts, ws)


def _busy_s(starts: np.ndarray, ends: np.ndarray) -> float:
    """Seconds with at least one request in flight (the union of the intervals)."""
    total, reach = 0.0, -math.inf
    for s, e in sorted(zip(starts.tolist(), ends.tolist(), strict=True)):
        if e <= reach:
            continue
        total += e - max(s, reach)
        reach = e
    return total


def record_from_vllm_bench(
    path: str | Path,
    configuration: Configuration,
    workload: Workload,
    *,
    power_logs: Sequence[str | Path] = (),
    run_id: str = "default",
) -> ProfileRecord:
    """One :class:`ProfileRecord` from a benchmark result (see the module docstring).
    ``workload`` gives the row (application, size, QPS) and the SLO the attainment is
    computed against; ``power_logs``: one per GPU of ``configuration`` (new GPU first)."""
    p = Path(path)
    data = _load(p)
    duration = _number(p, data, "duration")
    errors = data["errors"]
    ok = np.array([not e for e in errors], dtype=bool)
    ttfts = np.asarray(data["ttfts"], dtype=float)
    outs = np.asarray(data["output_lens"], dtype=int)
    itls = data["itls"]
    if not (len(ttfts) == len(outs) == len(itls) == len(ok)):
        raise ConfigError(f"{p}: ttfts, itls, output_lens and errors differ in length")
    tpots = np.array([float(np.mean(g)) if len(g) else math.nan for g in itls])
    gpus = configuration.gpus
    if power_logs and len(power_logs) != len(gpus):
        raise ConfigError(f"{len(power_logs)} power log(s) for {configuration.label}: give one "
                          f"per GPU, in order: {', '.join(gpus)}")  # fmt: skip
    if power_logs:
        t1 = _end_s(p, data)
        energy = [_window_j(*read_nvidia_smi_csv(log), t1 - duration, t1, str(log))
                  for log in power_logs]  # fmt: skip
        source = "measured"
    else:
        starts = np.asarray(data.get("start_times", []), dtype=float)
        lat = np.asarray(data.get("latencies", []), dtype=float)
        busy = min(_busy_s(starts, starts + lat), duration) if len(starts) == len(lat) else duration
        energy = [power_model(g).idle_w * duration + power_model(g).dynamic_w * busy for g in gpus]
        source = "modelled"
    extra = {
        "source": "vllm bench serve", "file": p.name, "model_id": data.get("model_id"),
        "backend": data.get("backend"), "date": data.get("date"),
        "request_rate": data.get("request_rate"),
        "request_throughput": data.get("request_throughput"),
        "max_concurrency": data.get("max_concurrency"), "burstiness": data.get("burstiness"),
        "mean_input_tokens": float(np.mean(data.get("input_lens") or [0])),
        "mean_output_tokens": float(outs.mean()) if len(outs) else 0.0,
        "power_logs": [Path(x).name for x in power_logs], "energy": source,
    }  # fmt: skip
    return ProfileRecord.from_requests(
        workload, configuration, "vllm", ttft_s=ttfts[ok], tpot_s=tpots[ok], energy_j=energy,
        duration_s=duration, n_failed=int((~ok).sum()), run_id=run_id,
        input_tokens=int(np.sum(np.asarray(data.get("input_lens") or [0])[ok]))
        if data.get("input_lens") else 0,
        output_tokens=int(outs[ok].sum()), provenance=Provenance.capture(extra=extra),
        energy_source=source,
    )  # fmt: skip


def request_rate(path: str | Path) -> float:
    """The QPS a result was run at: ``request_rate``, or the measured ``request_throughput``
    when the rate was ``inf`` (all requests at once)."""
    p = Path(path)
    data = _load(p)
    rate = data.get("request_rate")
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and math.isfinite(rate):
        return float(rate)
    return _number(p, data, "request_throughput")
