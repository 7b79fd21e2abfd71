"""The day a replay serves: each hour's grid intensity, load and the requests that sample it.

Hour ``h`` (UTC, from ``start``) takes its intensity from the region's hourly trace (the shipped
2022 traces, read at that hour: no year is mapped silently, the date says which day). Its load
is ``qps x load[h % len(load)]``, and its requests are the request trace thinned to that rate:
the shipped traces are one hour long, so every hour of the day replays the same hour of real
arrivals, each request kept with probability ``rate / trace rate`` (seeded; above the trace's
own rate, copies of the hour shifted in time are laid over it first), which keeps the trace's
minute-to-minute ups and downs at every rate.

Serving a whole day token by token is far beyond two minutes here (the conversation trace at
2 QPS is 172,800 requests and 36 million tokens), so each hour is served as a **sample**: the
``sample_s`` seconds of that hour's arrivals starting at ``sample_offset_s(h)`` (spread over
the hour, so that the sample's load follows the trace's own ups and downs). The sample's
measured carbon per token stands for its hour (:attr:`ReplayHour.scale` = the hour's output
tokens / the sample's).

Request sizes are clipped as every candidate configuration can serve them: at most
``max_output_tokens`` output tokens, and the prompt to ``max_request_tokens`` minus those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from greenllm.carbon import CarbonIntensityTrace
from greenllm.errors import ConfigError
from greenllm.units import SECONDS_PER_HOUR
from greenllm.workloads import RequestSet, load_trace

__all__ = ["ReplayDay", "ReplayHour", "plan_day", "sample_offset_s"]


@dataclass(frozen=True)
class ReplayHour:
    """One hour of the replayed day and the requests that sample it."""

    index: int
    start_s: float
    """Epoch seconds of the hour's start (UTC, the intensity trace's clock)."""
    intensity_g_per_kwh: float
    qps: float
    """The hour's request rate."""
    requests: RequestSet
    """The sample: arrivals in seconds from the sample's start."""
    hour_requests: int
    hour_output_tokens: int
    """Requests and output tokens of the whole hour at :attr:`qps` (clipped as the sample)."""

    @property
    def scale(self) -> float:
        """The hour's output tokens per output token of the sample (0 for an empty sample)."""
        tokens = int(self.requests.output_tokens.sum())
        return self.hour_output_tokens / tokens if tokens else 0.0

    @property
    def label(self) -> str:
        return datetime.fromtimestamp(self.start_s, UTC).strftime("%Y-%m-%d %H:00Z")


@dataclass(frozen=True)
class ReplayDay:
    """The hours a replay serves, and how they were made."""

    trace: str
    region: str
    hours: tuple[ReplayHour, ...]
    sample_s: float
    max_request_tokens: int
    max_output_tokens: int

    @property
    def peak_qps(self) -> float:
        return max(h.qps for h in self.hours)


def sample_offset_s(index: int, sample_s: float) -> float:
    """Where hour ``index``'s sample starts in its hour: 24 starts spread evenly over the hour
    (``index`` mod 24), each leaving room for ``sample_s`` seconds, none at the very start
    (the traces' first seconds are a collection edge: the conversation trace's first 20 s
    hold a quarter of its mean rate)."""
    return (index % 24 + 0.5) * (SECONDS_PER_HOUR - sample_s) / 24


def _start_s(start: str | float) -> float:
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        t = float(start)
    elif isinstance(start, str):
        try:
            when = datetime.fromisoformat(start.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"start = {start!r}: not a date; write e.g. 2022-07-01 or "
                              "2022-07-01T06:00Z") from None  # fmt: skip
        t = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    else:
        raise ConfigError(f"start = {start!r:.60}: a date such as 2022-07-01 or epoch seconds")
    if not math.isfinite(t) or t % SECONDS_PER_HOUR:
        raise ConfigError(f"start = {start!r}: must be the start of an hour (UTC)")
    return t


def plan_day(
    requests: str,
    region: str,
    *,
    hours: int = 24,
    start: str | float = "2022-07-01",
    qps: float = 2.0,
    load: tuple[float, ...] = (1.0,),
    sample_s: float = 60.0,
    max_request_tokens: int = 4096,
    max_output_tokens: int = 1024,
    seed: int = 0,
) -> ReplayDay:
    """The :class:`ReplayDay` of request trace ``requests`` under ``region``'s hourly
    intensity (see the module docstring). ``load``: relative load per hour, cycled (default
    flat); ``start``: the first hour (a date or ISO time, UTC), inside the region's trace."""
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= 24 * 31:
        raise ConfigError(f"hours = {hours!r}: must be an integer from 1 to 744 (31 days)")
    if not isinstance(sample_s, (int, float)) or not 1 <= sample_s <= SECONDS_PER_HOUR:
        raise ConfigError(f"sample_s = {sample_s!r}: must be seconds from 1 to 3600")
    if not load or any(
        isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x < math.inf
        for x in load
    ):
        raise ConfigError(f"load = {load!r:.80}: must be relative loads > 0 (e.g. 1,1.5,0.5)")
    if not isinstance(max_output_tokens, int) or not 1 <= max_output_tokens < max_request_tokens:
        raise ConfigError(f"max_output_tokens = {max_output_tokens!r}: an integer from 1 to "
                          f"max_request_tokens - 1 ({max_request_tokens - 1})")  # fmt: skip
    if not isinstance(region, str):
        raise ConfigError(f"region = {region!r:.60}: a region code such as CISO")
    intensity = CarbonIntensityTrace.from_region(region, periodic=False)
    t0 = _start_s(start)
    t1 = t0 + hours * SECONDS_PER_HOUR
    if t0 < intensity.start_s or t1 > intensity.end_s:
        span = (f"{datetime.fromtimestamp(intensity.start_s, UTC):%Y-%m-%d} to "
                f"{datetime.fromtimestamp(intensity.end_s, UTC):%Y-%m-%d %H:00}")  # fmt: skip
        raise ConfigError(f"start = {start!r} with hours = {hours}: {region}'s hourly trace "
                          f"covers {span} UTC; choose a start inside it")  # fmt: skip
    whole: dict[float, RequestSet] = {}
    out = []
    for h in range(hours):
        rate = float(qps) * float(load[h % len(load)])
        if rate not in whole:
            whole[rate] = _clipped(_thinned(requests, rate, seed), max_request_tokens,
                                   max_output_tokens)  # fmt: skip
        hour = whole[rate]
        lo = sample_offset_s(h, sample_s)
        keep = (hour.arrival_s >= lo) & (hour.arrival_s < lo + sample_s)
        sample = RequestSet(hour.arrival_s[keep] - lo, hour.input_tokens[keep],
                            hour.output_tokens[keep])  # fmt: skip
        at = t0 + h * SECONDS_PER_HOUR
        out.append(ReplayHour(
            index=h, start_s=at, intensity_g_per_kwh=float(intensity.mean(at, at + 3600.0)),
            qps=rate, requests=sample, hour_requests=len(hour),
            hour_output_tokens=int(hour.output_tokens.sum()),
        ))  # fmt: skip
    return ReplayDay(requests, region.upper(), tuple(out), float(sample_s),
                     int(max_request_tokens), int(max_output_tokens))  # fmt: skip


def _thinned(name: str, qps: float, seed: int) -> RequestSet:
    """The trace's hour of arrivals at ``qps`` on average (see the module docstring)."""
    trace = load_trace(name)
    if trace.duration_s <= 0:
        raise ConfigError(f"trace {name!r} has no arrival times to replay")
    native = len(trace) / SECONDS_PER_HOUR
    copies = max(1, math.ceil(qps / native))
    rng = np.random.default_rng([seed, copies, round(qps * 1e6)])
    times, ins, outs = [], [], []
    for k in range(copies):
        shift = 0.0 if k == 0 else float(rng.uniform(0, SECONDS_PER_HOUR))
        keep = rng.random(len(trace)) < qps / (native * copies)
        times.append((trace.arrival_s[keep] + shift) % SECONDS_PER_HOUR)
        ins.append(trace.input_tokens[keep])
        outs.append(trace.output_tokens[keep])
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return RequestSet(t[order], np.concatenate(ins)[order], np.concatenate(outs)[order])


def _clipped(requests: RequestSet, max_request_tokens: int, max_output_tokens: int) -> RequestSet:
    outs = np.minimum(requests.output_tokens, max_output_tokens)
    ins = np.clip(requests.input_tokens, 1, max_request_tokens - outs)
    return RequestSet(requests.arrival_s, ins, outs)
