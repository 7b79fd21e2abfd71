"""Serve a :class:`~greenllm.serve.replay.day.ReplayDay` through the gateway on the simulator.

One run per policy, each on the same requests and intensities:

* ``live``: the :class:`~greenllm.serve.Controller` re-plans at the start of every hour after
  the first (the first hour runs the static choice: the controller has seen no load yet), from
  the hour's intensity and the load it observed over the previous hour's sample, and switches
  make-before-break; a new configuration's engines are charged an ``engine_start_s`` start
  (a modelled start, at idle power: the switching cost the controller then measures) that
  takes its share of an hour's sample on the clock (``engine_start_s`` x sample / 3600 s), and
  a configuration the SLO guard left stays out of the choice for three hours of the day;
* ``static``: the paper's choice, Algorithm 1 at the region's annual average intensity and the
  day's busiest hour, served all day;
* ``standalone``: the baseline on the new GPU, all day.

Each hour: set the intensity, decide (live), then serve the hour's sample at its arrival times
on the simulator's virtual clock, ``time_scale`` virtual seconds per wall second. Every request
is a real :meth:`Gateway.generate` with its carbon receipt; an hour's carbon is the sum of its
requests' receipts (idle time included, see :mod:`greenllm.serve.receipts`), its day estimate
that x the hour's scale, plus the switches decided at its start (counted once, not scaled).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greenllm.carbon import IntensityProvider, IntensityReading, carbon_intensity
from greenllm.config import SLO, Configuration
from greenllm.errors import ConfigError
from greenllm.scheduler import PlanTable
from greenllm.serve.controller import Controller, ControllerSettings
from greenllm.serve.gateway import Finished, Gateway, GatewaySettings, Observation
from greenllm.serve.protocol import APIError
from greenllm.serve.replay.day import ReplayDay, ReplayHour
from greenllm.serve.tasks import cancel_and_wait
from greenllm.serve.upstream import GenerationRequest, UpstreamError
from greenllm.serve.upstreams.sim import SimUpstream
from greenllm.workloads import get_application

__all__ = ["HourOutcome", "PolicyOutcome", "serve_day", "static_choice"]

POLICIES = ("live", "static", "standalone")


@dataclass(frozen=True)
class HourOutcome:
    """What one policy served in one hour's sample, from its requests' receipts."""

    index: int
    configuration: str
    """The configuration that served most of the hour's requests."""
    intensity_g_per_kwh: float
    requests: int
    errors: int
    completion_tokens: int
    total_g: float
    energy_j: float
    slo_met: int
    switch_g: float
    """Switches made in the hour (new engines' start and warm-up, the old ones' idle)."""
    scale: float

    @property
    def estimate_g(self) -> float:
        """The whole hour: the sample's carbon x :attr:`scale`, plus its switches."""
        return self.total_g * self.scale + self.switch_g


@dataclass(frozen=True)
class PolicyOutcome:
    """One policy's day."""

    policy: str
    hours: tuple[HourOutcome, ...]
    receipts_g: float
    """The sum of every request's receipt (total_g)."""
    totals: dict[str, float]
    """The gateway's totals (receipts + switches)."""
    switches: tuple[dict[str, Any], ...]
    decisions: tuple[dict[str, Any], ...] = field(repr=False)
    wall_s: float = 0.0
    max_lag_s: float = 0.0

    @property
    def requests(self) -> int:
        return sum(h.requests for h in self.hours)

    @property
    def completion_tokens(self) -> int:
        return sum(h.completion_tokens for h in self.hours)

    @property
    def switch_g(self) -> float:
        return sum(h.switch_g for h in self.hours)

    @property
    def g_per_token(self) -> float:
        """The samples' receipts per output token (switches excluded: a switch's cost is
        that of a whole hour's tokens, see :attr:`day_estimate_g`)."""
        return self.receipts_g / self.completion_tokens if self.completion_tokens else math.nan

    @property
    def day_estimate_g(self) -> float:
        return sum(h.estimate_g for h in self.hours)

    @property
    def slo_attainment(self) -> float:
        n = sum(h.requests for h in self.hours)
        return sum(h.slo_met for h in self.hours) / n if n else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy, "requests": self.requests,
            "errors": sum(h.errors for h in self.hours),
            "completion_tokens": self.completion_tokens, "receipts_g": self.receipts_g,
            "g_per_token": self.g_per_token, "switch_g": self.switch_g,
            "day_estimate_g": self.day_estimate_g, "slo_attainment": self.slo_attainment,
            "switches": list(self.switches), "wall_s": self.wall_s, "max_lag_s": self.max_lag_s,
            "gateway_totals": self.totals,
            "hours": [{**h.__dict__, "estimate_g": h.estimate_g} for h in self.hours],
        }  # fmt: skip


def static_choice(table: PlanTable, day: ReplayDay) -> Configuration:
    """The paper's static plan: Algorithm 1 (lowest carbon among the configurations meeting
    the SLO) at the region's annual average intensity, at the load of the day's busiest hour."""
    row = int(table.level(day.peak_qps)[0])
    carbon = table.carbon_g_per_token(row, carbon_intensity(day.region))
    return table.configs[int(np.argmin(np.where(table.allowed[row], carbon, np.inf)))]


class _HourIntensity(IntensityProvider):
    """The replayed hour's intensity, whatever the clock says (the driver sets the hour)."""

    name, kind = "trace", "average"

    def __init__(self, region: str) -> None:
        self.region = region
        self.hour: ReplayHour | None = None

    def read(self, now_s: float | None = None) -> IntensityReading:
        h = self.hour
        assert h is not None
        return IntensityReading(g_per_kwh=h.intensity_g_per_kwh, at_s=h.start_s, kind="average",
                                source=f"trace {self.region} {h.label}",
                                fetched_s=h.start_s)  # fmt: skip


async def serve_day(
    day: ReplayDay,
    policy: str,
    table: PlanTable,
    *,
    time_scale: float = 60.0,
    engine_start_s: float = 60.0,
    hysteresis: float = 1.0,
    seed: int = 0,
    slo: SLO | None = None,
) -> PolicyOutcome:
    """Serve ``day`` under ``policy`` (``live``, ``static`` or ``standalone``) on the
    simulator; see the module docstring. ``table``: the profiles the plans come from."""
    if policy not in POLICIES:
        raise ConfigError(f"policy = {policy!r}: must be one of {', '.join(POLICIES)}")
    slo = slo or get_application(table.application).slo
    first = static_choice(table, day) if policy != "standalone" else table.configs[table.baseline]
    upstream = SimUpstream(first, time_scale=time_scale, seed=seed)
    origin = upstream.live.origin
    made = [upstream]

    def make_upstream(configuration: Configuration) -> SimUpstream:
        # the clock runs one sample per hour of the day: the start takes its share of a
        # sample on the clock, and is charged whole
        up = SimUpstream(configuration, time_scale=time_scale, seed=seed, origin=origin,
                         start_s=engine_start_s,
                         start_clock_s=engine_start_s * day.sample_s / 3600.0)  # fmt: skip
        made.append(up)
        return up

    settings = GatewaySettings(max_inflight=1_000_000, max_tokens_limit=day.max_request_tokens,
                               drain_timeout_s=3600.0)  # fmt: skip
    gateway = Gateway(upstream, settings, intensity_g_per_kwh=day.hours[0].intensity_g_per_kwh,
                      slo=slo)  # fmt: skip
    provider = _HourIntensity(day.region)
    controller = None
    if policy == "live":
        controller = Controller(
            gateway, table, provider, make_upstream,
            # the guard holds three hours of the day: three samples on the clock
            ControllerSettings(period_s=3600.0, load_window_s=day.sample_s, hysteresis=hysteresis,
                               guard_hold_s=3 * day.sample_s, engine_start_s=engine_start_s,
                               time_scale=time_scale),
        )  # fmt: skip
    seen: dict[int, list[Observation]] = defaultdict(list)
    gateway.observers.append(lambda o: seen[int(o.receipt.request_id[1:].split("-")[0])].append(o))
    switch_hour: list[int] = []  # the hour each of gateway.switches happened in
    now = [0]

    def note_switches() -> None:
        switch_hour.extend([now[0]] * (len(gateway.switches) - len(switch_hour)))

    async def guard() -> None:  # the SLO guard acts at once, as in `greenllm serve`
        assert controller is not None
        while True:
            await controller.on_guard()
            note_switches()

    wall0 = time.perf_counter()
    await gateway.start()
    guard_task = asyncio.create_task(guard()) if controller is not None else None
    try:
        tasks: list[asyncio.Task[Finished | None]] = []
        end = gateway.upstream.clock_s()
        for hour in day.hours:
            await _sleep_until(gateway, end, time_scale)
            provider.hour, now[0] = hour, hour.index
            if controller is not None and hour.index > 0:
                await controller.decide("period")
                note_switches()
            else:
                gateway.set_intensity(hour.intensity_g_per_kwh, provider.read().source)
            start = gateway.upstream.clock_s()
            end = start + day.sample_s
            sizes = zip(hour.requests.arrival_s, hour.requests.input_tokens,
                        hour.requests.output_tokens, strict=True)  # fmt: skip
            for i, (at, n_in, n_out) in enumerate(sizes):
                request_id = f"h{hour.index}-r{i}"
                tasks.append(asyncio.create_task(
                    _one(gateway, request_id, start + float(at), int(n_in), int(n_out), time_scale)
                ))  # fmt: skip
        await asyncio.gather(*tasks)
    finally:
        await cancel_and_wait(guard_task)
        await gateway.stop()
    wall_s = time.perf_counter() - wall0
    hours = []
    for hour in day.hours:
        obs = seen.get(hour.index, [])
        served = Counter(o.receipt.configuration for o in obs).most_common(1)
        hours.append(HourOutcome(
            index=hour.index, configuration=served[0][0] if served else gateway.label,
            intensity_g_per_kwh=hour.intensity_g_per_kwh,
            requests=len(obs), errors=sum(o.status != "ok" for o in obs),
            completion_tokens=sum(o.receipt.completion_tokens for o in obs),
            total_g=sum(o.receipt.total_g for o in obs),
            energy_j=sum(sum(o.receipt.energy_j.values()) for o in obs),
            slo_met=sum(o.met_slo for o in obs), scale=hour.scale,
            switch_g=sum(r.total_g for r, h in zip(gateway.switches, switch_hour, strict=True)
                         if h == hour.index),
        ))  # fmt: skip
    return PolicyOutcome(
        policy=policy, hours=tuple(hours),
        receipts_g=sum(o.receipt.total_g for obs in seen.values() for o in obs),
        totals=gateway.totals(), switches=tuple(r.to_dict() for r in gateway.switches),
        decisions=tuple(controller.decisions) if controller is not None else (),
        wall_s=wall_s, max_lag_s=max(u.live.stats().max_lag_s for u in made),
    )  # fmt: skip


async def _sleep_until(gateway: Gateway, at_s: float, time_scale: float) -> None:
    while (delay := at_s - gateway.upstream.clock_s()) > 0:
        await asyncio.sleep(delay / time_scale)


async def _one(gateway: Gateway, request_id: str, at_s: float, prompt_tokens: int,
               max_tokens: int, time_scale: float) -> Finished | None:  # fmt: skip
    await _sleep_until(gateway, at_s, time_scale)
    request = GenerationRequest(request_id, max_tokens=max_tokens,
                                prompt=tuple(range(prompt_tokens)))  # fmt: skip
    try:
        async for event in gateway.generate(request):
            if isinstance(event, Finished):
                return event
    except (APIError, UpstreamError):  # recorded as an error by the gateway's observers
        pass
    return None
