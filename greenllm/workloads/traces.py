"""Real request traces shipped with greenllm, replayed as :class:`RequestSet` objects.

=================  ======================================================  ========  ========
name               file (``greenllm/workloads/data/``)                     requests  arrivals
=================  ======================================================  ========  ========
``conversation``   ``splitwise_conv.csv``                                  19,366    yes (1 h)
``code``           ``splitwise_code.csv``                                  8,819     yes (1 h)
``summarization``  ``arxiv_summarization_stats_llama2_tokenizer_...csv``   28,257    no
=================  ======================================================  ========  ========

Sources and licences are in ``data/README.md`` (Vidur's processed traces, MIT). Replay uses the
trace's own arrival times where it has them, compressed or stretched to a target QPS; a trace
without arrival times gets Poisson arrivals at the QPS the caller gives.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import numpy as np

from greenllm.config import RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError
from greenllm.units import MAX_QPS, MAX_REQUESTS, MAX_TIME_S, MAX_TOKENS, MIN_QPS
from greenllm.workloads.requests import RequestSet, poisson_arrivals_s

__all__ = ["TRACES", "TraceSpec", "TraceStats", "list_traces", "load_trace", "trace_stats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TraceSpec:
    """One shipped trace file and what it stands for."""

    name: str
    filename: str
    application: str  # the Table 2 application of the same kind
    description: str


TRACES: dict[str, TraceSpec] = {
    "conversation": TraceSpec(
        "conversation",
        "splitwise_conv.csv",
        "sharegpt",
        "Azure LLM inference trace 2023, conversation service (1 hour)",
    ),
    "code": TraceSpec(
        "code",
        "splitwise_code.csv",
        "humaneval",
        "Azure LLM inference trace 2023, code-completion service (1 hour)",
    ),
    "summarization": TraceSpec(
        "summarization",
        "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        "longbench",
        "arXiv summarization papers, Llama-2 tokenizer, <= 4096 tokens (no arrival times)",
    ),
}
_ALIASES = {"conv": "conversation", "chat": "conversation", "summarisation": "summarization",
            "arxiv": "summarization"}  # fmt: skip


def list_traces() -> list[str]:
    """Names of the shipped traces."""
    return list(TRACES)


def _spec(name: str) -> TraceSpec:
    if not isinstance(name, str):
        raise ConfigError(f"trace = {name!r:.60}: must be a name, one of {', '.join(TRACES)}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TRACES:
        raise ConfigError(f"unknown trace {name!r}: known traces are {', '.join(TRACES)}")
    return TRACES[key]


@functools.cache
def _columns(name: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(arrival_s or None, prompt tokens, output tokens) of a trace, parsed once, read-only."""
    spec = TRACES[name]
    path = resources.files("greenllm.workloads").joinpath("data").joinpath(spec.filename)
    with io.TextIOWrapper(path.open("rb"), encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = np.array(list(reader), dtype=float)
    col = {h: i for i, h in enumerate(header)}
    arrivals = rows[:, col["arrived_at"]] if "arrived_at" in col else None
    ins = np.maximum(rows[:, col["num_prefill_tokens"]].round(), 1).astype(np.int64)
    outs = np.maximum(rows[:, col["num_decode_tokens"]].round(), 1).astype(np.int64)
    if arrivals is not None:
        arrivals = arrivals - arrivals[0]
    for arr in (arrivals, ins, outs):
        if arr is not None:
            arr.flags.writeable = False
    logger.debug("parsed trace %s: %d rows", name, len(ins))
    return arrivals, ins, outs


@dataclass(frozen=True)
class TraceStats:
    """Summary of a trace, in the same terms as Table 2 (percentiles of tokens per request)."""

    name: str
    n_requests: int
    p25: RequestSize
    p50: RequestSize
    p75: RequestSize
    mean_input_tokens: float
    mean_output_tokens: float
    max_input_tokens: int
    max_output_tokens: int
    duration_s: float | None  # first to last arrival; None without arrival times
    mean_qps: float | None  # 1 / mean inter-arrival time; None without arrival times

    @property
    def distribution(self) -> RequestSizeDistribution:
        """A distribution through the trace's percentiles (comparable to an Application's)."""
        return RequestSizeDistribution(p25=self.p25, p50=self.p50, p75=self.p75)


def trace_stats(name: str) -> TraceStats:
    """Size percentiles and mean arrival rate of trace ``name``.

    Prompt and output tokens are summarised separately (as in Table 2), with numpy's linear
    interpolation between order statistics, rounded to whole tokens.
    """
    spec = _spec(name)
    arrivals, ins, outs = _columns(spec.name)
    qi = np.rint(np.percentile(ins, [25, 50, 75])).astype(int)
    qo = np.rint(np.percentile(outs, [25, 50, 75])).astype(int)
    duration = mean_qps = None
    if arrivals is not None and len(arrivals) > 1:
        duration = float(arrivals[-1] - arrivals[0])
        mean_qps = (len(arrivals) - 1) / duration
    return TraceStats(
        name=spec.name,
        n_requests=len(ins),
        p25=RequestSize(input_tokens=int(qi[0]), output_tokens=int(qo[0])),
        p50=RequestSize(input_tokens=int(qi[1]), output_tokens=int(qo[1])),
        p75=RequestSize(input_tokens=int(qi[2]), output_tokens=int(qo[2])),
        mean_input_tokens=float(ins.mean()),
        mean_output_tokens=float(outs.mean()),
        max_input_tokens=int(ins.max()),
        max_output_tokens=int(outs.max()),
        duration_s=duration,
        mean_qps=mean_qps,
    )


def _period(base: np.ndarray) -> float:
    """Length of one lap of a replay: the trace's span plus one mean gap."""
    span = float(base[-1]) if len(base) else 0.0
    return span + span / (len(base) - 1) if span > 0 else 1.0


def _tiled_arrivals(base: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` arrivals of ``base`` repeated end to end (one mean gap between laps)."""
    laps = max(1, -(-count // len(base)))
    return (base[None, :] + _period(base) * np.arange(laps)[:, None]).ravel()[:count]


def _positive(field: str, value: float, lo: float, hi: float) -> float:
    """``value`` as a float in ``(lo, hi]`` (``[lo, hi]`` when ``lo > 0``), else ConfigError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    try:
        x = float(value) if ok else float("nan")
    except OverflowError:  # an int beyond float range
        x = float("inf")
    if not (ok and (x >= lo if lo > 0 else x > 0) and x <= hi):
        rng = f"{lo:g} <= {field}" if lo > 0 else f"0 < {field}"
        raise ConfigError(f"{field} = {value!r:.60}: must be a finite number, {rng} <= {hi:g}")
    return x


def _cap(field: str, value: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or not 1 <= value <= MAX_TOKENS
    ):
        raise ConfigError(
            f"{field} = {value!r:.60}: must be an integer, 1 <= {field} <= {MAX_TOKENS} "
            "(or None: no cap)"
        )
    return int(value)


def load_trace(
    name: str,
    *,
    qps: float | None = None,
    n: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    arrivals: Literal["auto", "trace", "poisson"] = "auto",
    sizes: Literal["trace", "sampled"] = "trace",
    max_input_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> RequestSet:
    """Requests from trace ``name`` (see :func:`list_traces`).

    * ``arrivals="auto"`` replays the trace's arrival times when it has them, else Poisson.
      Replayed times are scaled by ``mean_qps / qps`` when ``qps`` is given, so the mean rate
      over the replay is exactly ``qps``; ``"poisson"`` (needs ``qps``) ignores the trace's times.
    * ``n`` requests, or all arrivals before ``duration_s``, or (neither) the whole trace once.
      A replay longer than the trace wraps around to its start (with the trace's sizes).
    * ``sizes="trace"`` keeps the trace's sizes in trace order; ``"sampled"`` draws rows
      uniformly with replacement (``seed``). Sizes are clipped to ``[1, max_*_tokens]``.

    Limits (ConfigError beyond them): ``MIN_QPS <= qps <= MAX_QPS``, ``0 < duration_s <=
    MAX_TIME_S``, at most ``MAX_REQUESTS`` requests in all, ``seed`` an integer >= 0.
    """
    spec = _spec(name)
    trace_arr, ins, outs = _columns(spec.name)
    if n is not None and duration_s is not None:
        raise ConfigError("give at most one of n or duration_s (neither: the whole trace once)")
    if n is not None and (
        isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= n <= MAX_REQUESTS
    ):
        raise ConfigError(f"n = {n!r:.60}: must be an integer, 0 <= n <= {MAX_REQUESTS}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed = {seed!r:.60}: must be an integer >= 0")
    duration_s = None if duration_s is None else _positive("duration_s", duration_s, 0.0,
                                                             MAX_TIME_S)  # fmt: skip
    qps = None if qps is None else _positive("qps", qps, MIN_QPS, MAX_QPS)
    if arrivals not in ("auto", "trace", "poisson"):
        raise ConfigError(f"arrivals = {arrivals!r}: must be one of 'auto', 'trace', 'poisson'")
    if sizes not in ("trace", "sampled"):
        raise ConfigError(f"sizes = {sizes!r}: must be 'trace' or 'sampled'")
    in_cap = None if max_input_tokens is None else _cap("max_input_tokens", max_input_tokens)
    out_cap = None if max_output_tokens is None else _cap("max_output_tokens", max_output_tokens)
    mode = arrivals if arrivals != "auto" else ("trace" if trace_arr is not None else "poisson")
    if mode == "trace" and trace_arr is None:
        raise ConfigError(f"trace {spec.name!r} has no arrival times: use arrivals='poisson'")
    if mode == "poisson" and qps is None:
        raise ConfigError(
            f"trace {spec.name!r} with Poisson arrivals needs qps=... (a rate > 0), "
            "since the trace records no arrival times"
        )

    if mode == "trace":
        base = np.asarray(trace_arr, dtype=float)
        span = float(base[-1]) if len(base) > 1 else 0.0
        if qps is not None and span > 0:
            base = base * (((len(base) - 1) / span) / qps)
        if n is not None:
            count = n
        elif duration_s is not None:
            period = _period(base)
            laps = duration_s / period + 1
            if len(base) * laps > MAX_REQUESTS:
                raise ConfigError(
                    f"trace {spec.name!r} replayed for duration_s = {duration_s:g} s holds about "
                    f"{len(base) * laps:.3g} requests; at most {MAX_REQUESTS}"
                )
            count = len(base) * (int(duration_s // period) + 1)
        else:
            count = len(base)
        times = _tiled_arrivals(base, count)
        if duration_s is not None:
            times = times[times < duration_s]
    else:
        times = poisson_arrivals_s(
            float(qps),  # type: ignore[arg-type]
            n=None if duration_s is not None else (len(ins) if n is None else int(n)),
            duration_s=duration_s,
            seed=seed,
        )
    count = len(times)
    if sizes == "trace":
        idx = np.arange(count) % len(ins)
    else:
        idx = np.random.default_rng([seed, 2]).integers(0, len(ins), count)
    req_in, req_out = ins[idx], outs[idx]
    if in_cap is not None:
        req_in = np.minimum(req_in, in_cap)
    if out_cap is not None:
        req_out = np.minimum(req_out, out_cap)
    if count > len(ins) and sizes == "trace":
        logger.info("trace %s: %d requests wrap around its %d rows", spec.name, count, len(ins))
    return RequestSet(times, req_in, req_out)
