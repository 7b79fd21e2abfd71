"""The live controller: re-plan as grid intensity and load change, and switch the gateway's
configuration make-before-break.

Every ``period_s`` (and at once when the SLO guard fires) the controller reads the grid's
intensity from an :class:`~greenllm.carbon.IntensityProvider`, the load the gateway observed
(QPS and output tokens per request over ``load_window_s``), and picks a configuration from the
application's completed profiles (:class:`~greenllm.scheduler.PlanTable`):

* the row is the profiled QPS level at or above the observed rate;
* each configuration's carbon over the next period is ``tokens * (embodied_g_per_token +
  alpha * energy_kwh_per_token)`` (Eq. 3 per token), infinite where Algorithm 1 does not allow
  it at that load;
* the online rule (:class:`~greenllm.scheduler.Hysteresis`) switches only when another
  configuration's accumulated advantage exceeds ``hysteresis`` x the cost of a switch, and not
  before ``min_dwell_s`` on the current one (an infeasible configuration is left at once). The
  switching cost starts as the profiles' estimate (an engine start of ``engine_start_s`` at the
  profiled power) and is replaced by each switch's measured cost
  (:class:`~greenllm.serve.gateway.SwitchRecord`: start time at idle power, warm-up);
* **SLO guard**: when the attainment of the last ``guard_window`` requests falls below the
  plan's target (a load spike), the controller does not wait for the period: it switches to
  Algorithm 1's SLO-priority choice for the current load (one level up if that is already
  served) and says why.

Every decision is a line of the JSONL audit log (inputs, candidates with their predicted
carbon and attainment, the choice, the switch), and the next decision adds the observed
outcome of the period before it (requests, tokens, carbon per token, attainment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.carbon import IntensityProvider, IntensityReading, IntensityUnavailableError
from greenllm.config import Configuration
from greenllm.errors import ConfigError
from greenllm.scheduler import Hysteresis, PlanTable
from greenllm.scheduler.planner import ENGINE_START_S
from greenllm.serve.gateway import Gateway, Observation
from greenllm.serve.upstream import Upstream
from greenllm.units import J_PER_KWH

__all__ = ["Controller", "ControllerSettings", "LoadMonitor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller decides (every field has a default; times in the gateway's clock)."""

    period_s: float = 3600.0
    """Seconds between two decisions."""
    hysteresis: float = 1.0
    """Switch when another configuration's accumulated saving exceeds this x a switch's cost."""
    min_dwell_s: float = 0.0
    """Least time on a configuration before a carbon-driven switch (not the SLO guard's)."""
    load_window_s: float | None = None
    """The load is the QPS over this window (default: ``period_s``)."""
    guard_window: int = 100
    """Requests in the SLO guard's rolling attainment window."""
    guard_min_requests: int = 20
    """The guard acts only on at least this many requests since the last switch."""
    guard_hold_s: float | None = None
    """How long a configuration the guard left stays out of the carbon choice (it missed the
    SLO where the profiles said it would not; default: three periods), and how long the guard
    pauses when its switch did not help (doubled after each such pause until a guard window
    meets the target again)."""
    engine_start_s: float = ENGINE_START_S
    """The start time behind the switching cost until a switch has been measured."""
    time_scale: float = 1.0
    """Gateway-clock seconds per wall second (a time-scaled simulator); sleeps are divided."""

    def __post_init__(self) -> None:
        for name in ("period_s", "time_scale", "engine_start_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
                raise ConfigError(f"ControllerSettings.{name} = {v!r}: must be a number > 0")
        for name in ("hysteresis", "min_dwell_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
                raise ConfigError(f"ControllerSettings.{name} = {v!r}: must be a number >= 0")
        for name in ("load_window_s", "guard_hold_s"):
            w = getattr(self, name)
            if w is not None and (isinstance(w, bool) or not isinstance(w, int | float)
                                  or not 0 <= w < math.inf):  # fmt: skip
                raise ConfigError(f"ControllerSettings.{name} = {w!r}: seconds >= 0 or None")
        w = self.load_window_s
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | float) or w <= 0):
            raise ConfigError(f"ControllerSettings.load_window_s = {w!r}: seconds > 0 or None")
        for name in ("guard_window", "guard_min_requests"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ControllerSettings.{name} = {v!r}: must be an integer >= 1")


_GUARD_GAIN = 0.02
"""A guard switch that raised attainment by less than this did not help."""
_GUARD_Z = 1.645
"""The guard acts when attainment is below the target with 95% confidence (one-sided)."""


def attainment_upper_bound(attainment: float, n: int, z: float = _GUARD_Z) -> float:
    """Wilson score upper bound of an attainment seen as ``attainment`` over ``n`` requests:
    17 of 20 (0.85) is no evidence against a 0.9 target (bound 0.94), 12 of 20 is (0.76)."""
    if n <= 0:
        return 1.0
    z2n = z * z / n
    centre = attainment + z2n / 2
    margin = z * math.sqrt(attainment * (1 - attainment) / n + z2n / (4 * n))
    return min(1.0, (centre + margin) / (1 + z2n))


class LoadMonitor:
    """What the gateway served: arrivals (QPS, counted at admission: a spike shows before its
    requests finish), output tokens and SLO outcomes of finished requests (thread-safe)."""

    def __init__(self, clock: Callable[[], float], horizon_s: float, guard_window: int) -> None:
        self.clock = clock
        self.horizon_s = horizon_s
        self._lock = threading.Lock()
        self._arrivals: deque[float] = deque()
        self._done: deque[tuple[float, int, int]] = deque()  # (arrival_s, tokens, ok)
        self._slo: deque[bool] = deque(maxlen=guard_window)
        self._period = [0, 0]  # met the SLO, ended (not cancelled) since the last take_period

    def observe(self, seen: Observation) -> None:
        now = self.clock()
        arrival = now - seen.receipt.duration_s
        with self._lock:
            self._done.append((arrival, seen.receipt.completion_tokens, int(seen.status == "ok")))
            while self._done and self._done[0][0] < now - self.horizon_s:
                self._done.popleft()
            if seen.status != "cancelled":
                self._slo.append(seen.met_slo)
                self._period[0] += int(seen.met_slo)
                self._period[1] += 1

    def arrive(self, at_s: float) -> None:
        """A request admitted at ``at_s`` (the clock's time)."""
        with self._lock:
            self._arrivals.append(at_s)
            while self._arrivals and self._arrivals[0] < at_s - self.horizon_s:
                self._arrivals.popleft()

    def load(self, window_s: float) -> tuple[float, float | None]:
        """(QPS of the arrivals, mean output tokens of the requests that arrived and finished)
        over the last ``window_s`` (None: no such request)."""
        now = self.clock()
        with self._lock:
            arrived = sum(1 for t in self._arrivals if t >= now - window_s)
            recent = [n for t, n, _ in self._done if t >= now - window_s]
        return arrived / window_s, (sum(recent) / len(recent) if recent else None)

    def attainment(self) -> tuple[float, int]:
        """SLO attainment over the guard window, and the number of requests it holds."""
        with self._lock:
            n = len(self._slo)
            return (sum(self._slo) / n if n else math.nan), n

    def reset_guard(self) -> None:
        """Start the guard's window afresh (after a switch)."""
        with self._lock:
            self._slo.clear()

    def take_period(self) -> float | None:
        """SLO attainment of the requests that ended since the last call (None: none did)."""
        with self._lock:
            (met, n), self._period = self._period, [0, 0]
        return met / n if n else None


class Controller:
    """Re-plans the ``gateway``'s configuration from ``table`` as ``provider``'s intensity and
    the observed load change; ``make_upstream(configuration)`` builds the engines to switch to.

    :meth:`run` loops until cancelled; :meth:`decide` makes one decision now (tests, replays).
    ``audit_path``: the JSONL audit log (appended; None: kept in :attr:`decisions` only).
    """

    def __init__(
        self,
        gateway: Gateway,
        table: PlanTable,
        provider: IntensityProvider,
        make_upstream: Callable[[Configuration], Upstream],
        settings: ControllerSettings | None = None,
        *,
        audit_path: str | Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.gateway, self.table, self.provider = gateway, table, provider
        self.make_upstream = make_upstream
        self.settings = settings or ControllerSettings()
        self.clock = clock or (lambda: self.gateway.upstream.clock_s())
        window = self.settings.load_window_s or self.settings.period_s
        self.monitor = LoadMonitor(self.clock, max(window, self.settings.period_s),
                                   self.settings.guard_window)  # fmt: skip
        self.rule = Hysteresis(len(table.configs), self.settings.hysteresis, self._current())
        kwh, grams = table.switch_cost(None, self.settings.engine_start_s)
        self.switch_kwh, self.switch_embodied_g = kwh, grams
        start_s = self.settings.engine_start_s
        self.switch_cost_source = f"estimated: an engine start of {start_s:g} s"
        self.audit_path = None if audit_path is None else Path(audit_path)
        self.decisions: list[dict[str, Any]] = []
        self.reading: IntensityReading | None = None
        self.next_check_s: float | None = None
        self._since_s: float | None = None  # set at the first decision (the gateway runs)
        self._last_totals: dict[str, float] | None = None
        self.counterfactual_g = 0.0
        """The baseline configuration's (Standalone's) predicted carbon for the tokens served
        in finished periods, at each period's load and intensity."""
        self._guard_from: tuple[int, float] | None = None  # (left, its attainment) of the last
        self._guard_paused_until = -math.inf  # guard switch; when the guard may act again
        self._guard_pauses = 0  # pauses since a guard window last met the target
        self.held: dict[int, float] = {}
        """Configurations the SLO guard left, and until when they stay out of the choice."""
        self._guard = asyncio.Event()
        self._busy = asyncio.Lock()
        gateway.observers.append(self._observe)
        gateway.admission_observers.append(self.monitor.arrive)

    # ---- state ---------------------------------------------------------------------------------
    def _current(self) -> int | None:
        ids = [c.id for c in self.table.configs]
        current = self.gateway.upstream.configuration.id
        return ids.index(current) if current in ids else None

    def _observe(self, seen: Observation) -> None:
        self.monitor.observe(seen)
        attainment, n = self.monitor.attainment()
        if n < self.settings.guard_min_requests:
            return
        if attainment >= self.table.slo_target:
            self._guard_pauses = 0
        elif (attainment_upper_bound(attainment, n) < self.table.slo_target
              and self.clock() >= self._guard_paused_until):  # fmt: skip
            self._guard.set()

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Decide now, then every period (or when the SLO guard fires), until cancelled. A
        decision that fails (a switch that did not start) is logged and retried next period."""
        reason = "start"
        while True:
            try:
                await self.decide(reason)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # keep serving on the current configuration
                logger.warning("controller: the %s decision failed: %s", reason, err)
                self.monitor.reset_guard()  # no retry on the same evidence: fresh, or the period
            self.next_check_s = self.clock() + self.settings.period_s
            wait_s = self.settings.period_s / self.settings.time_scale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._guard.wait()
            reason = "slo_guard" if self._guard.is_set() else "period"

    async def decide(self, reason: str = "period") -> dict[str, Any]:
        """One decision now (``reason``: ``start``, ``period`` or ``slo_guard``): read the
        intensity and the load, choose, switch if the choice differs; returns the audit
        record (also appended to the log)."""
        async with self._busy:
            self._guard.clear()  # a guard firing during this decision counts for the next one
            return await self._decide(reason)

    async def on_guard(self) -> dict[str, Any] | None:
        """Wait for the SLO guard to fire, then decide (``slo_guard``) and return the record;
        None when another decision came first and took the guard's evidence with it."""
        await self._guard.wait()
        async with self._busy:
            if not self._guard.is_set():
                return None
            self._guard.clear()
            return await self._decide("slo_guard")

    async def _decide(self, reason: str) -> dict[str, Any]:
        s, t = self.settings, self.table
        now = self.clock()
        if self._since_s is None:
            self._since_s, self._last_totals = now, self.gateway.totals()
        reading = self._read(now)
        alpha = reading.g_per_kwh
        if self.gateway.meter is not None and self.gateway.meter.trace is None:
            self.gateway.set_intensity(alpha, reading.source)
        window = s.load_window_s or s.period_s
        qps, tokens_per_request = self.monitor.load(window)
        tokens_per_request = tokens_per_request or float(t.size[1])
        row = int(t.level(qps if qps > 0 else float(t.qps_levels[0]))[0])
        per_token = t.carbon_g_per_token(row, alpha)
        period_tokens = max(qps, 1e-9) * tokens_per_request * s.period_s
        cost = np.where(t.allowed[row], per_token * period_tokens, np.inf)
        switch_g = self.switch_kwh * alpha + self.switch_embodied_g
        current = self._current()
        attainment, n = self.monitor.attainment()
        hold_s = s.guard_hold_s if s.guard_hold_s is not None else 3 * s.period_s
        futile = None
        if reason == "slo_guard" and self._guard_from is not None:
            left, before = self._guard_from
            if attainment <= before + _GUARD_GAIN:  # its last switch did not help
                pause_s = hold_s * 2**self._guard_pauses
                futile = (f"slo_guard: the switch from {t.configs[left].label} did not raise "
                          f"attainment ({before:.3f} -> {attainment:.3f}): the SLO looks out of "
                          f"reach at this load; back to the carbon choice, guard paused "
                          f"{pause_s:g} s")  # fmt: skip
                self.held.pop(left, None)
                self._guard_paused_until, self._guard_from = now + pause_s, None
                self._guard_pauses += 1
                reason = "period"
                self.monitor.reset_guard()
        if reason == "slo_guard" and current is not None:
            self.held[current] = now + hold_s
            self._guard_from = (current, attainment)
        self.held = {j: until for j, until in self.held.items() if until > now}
        held = sorted(self.held)
        if np.isfinite(np.delete(cost, held)).any():  # else every allowed one is held: ignore
            cost[held] = np.inf
        why = reason
        if reason == "slo_guard":
            target = t.slo_choice(row, alpha, exclude=held)
            why = (f"slo_guard: attainment {attainment:.3f} over the last {n} requests < "
                   f"target {t.slo_target:g}")  # fmt: skip
            self.rule.current, self.rule.advantage_g[:] = target, 0.0
            self.monitor.reset_guard()  # the guard needs fresh evidence before it acts again
        elif (current is not None and np.isfinite(cost[current]) and reason != "start"
              and now - self._since_s < s.min_dwell_s):  # fmt: skip
            target = current
            why = f"{reason}: within the minimum dwell time"
        else:
            self.rule.current = current
            target = self.rule.step(cost, switch_g)
            why = futile or why
            if target != current:
                self._guard_from = None  # a new configuration: the guard starts afresh
        record: dict[str, Any] = {
            "type": "decision", "at_s": now, "reason": why,
            "intensity": reading.to_dict(), "qps_observed": qps,
            "tokens_per_request": tokens_per_request, "row_qps": float(t.qps_levels[row]),
            "slo_attainment_recent": None if math.isnan(attainment) else attainment,
            "switch_cost_g": switch_g, "switch_cost_source": self.switch_cost_source,
            "baseline": t.configs[t.baseline].label,
            "baseline_g_per_token": float(per_token[t.baseline]),
            "candidates": [
                {"configuration": c.label, "carbon_g_per_token": float(per_token[j]),
                 "predicted_g": float(per_token[j] * period_tokens),
                 "attainment": float(t.attainment[row, j]), "allowed": bool(t.allowed[row, j]),
                 "advantage_g": float(self.rule.advantage_g[j])}
                for j, c in enumerate(t.configs)
            ],
            "held": [t.configs[j].label for j in held],
            "current": None if current is None else t.configs[current].label,
            "choice": t.configs[target].label, "switched": False, "switch": None,
        }  # fmt: skip
        self._outcome(now)
        if target != current:
            upstream = self.make_upstream(t.configs[target])
            sw = await self.gateway.switch(upstream, reason=why)
            self.switch_kwh, self.switch_embodied_g = sw.energy_j / J_PER_KWH, sw.embodied_g
            self.switch_cost_source = f"measured: the switch to {sw.to_label}"
            self._since_s = self.clock()
            self.monitor.reset_guard()  # what finished on the old one while it drained is not
            self._guard.clear()  # evidence against the new one
            record.update(switched=True, switch=sw.to_dict())
        self._log(record)
        return record

    def _read(self, now: float) -> IntensityReading:
        try:
            self.reading = self.provider.read(now)
        except IntensityUnavailableError as err:
            if self.reading is None:
                raise
            logger.warning("controller: %s; keeping the last intensity", err)
        assert self.reading is not None
        return self.reading

    def _outcome(self, now: float) -> None:
        """The observed outcome of the period that ends now (a line of the audit log)."""
        totals = self.gateway.totals()
        before, self._last_totals = self._last_totals, totals
        if before is None or not self.decisions:
            self.monitor.take_period()
            return
        d = {k: totals[k] - before.get(k, 0.0) for k in totals}
        tokens = d["completion_tokens"]
        self.counterfactual_g += tokens * self.decisions[-1]["baseline_g_per_token"]
        period_attainment = self.monitor.take_period()
        self._log({
            "type": "outcome", "at_s": now, "of_decision_at_s": self.decisions[-1]["at_s"],
            "configuration": self.gateway.label, "requests": int(d["requests"]),
            "completion_tokens": int(tokens), "energy_j": d["energy_j"], "total_g": d["total_g"],
            "switch_g": d["switch_g"], "g_per_token": d["total_g"] / tokens if tokens else None,
            "slo_attainment": period_attainment,
            "baseline_g": tokens * self.decisions[-1]["baseline_g_per_token"],
        })  # fmt: skip

    def _log(self, record: dict[str, Any]) -> None:
        if record["type"] == "decision":
            self.decisions.append(record)
            logger.info("controller: %s -> %s (%s)", record["current"], record["choice"],
                        record["reason"])  # fmt: skip
        if self.audit_path is not None:
            with self.audit_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, allow_nan=False) + "\n")

    def carbon(self) -> dict[str, Any]:
        """``GET /v1/greenllm/carbon``: totals so far and the baseline's estimate for the same
        tokens (finished periods, plus the current one at its decision's prediction)."""
        totals = self.gateway.totals()
        estimate = self.counterfactual_g
        if self.decisions and self._last_totals is not None:
            since = totals["completion_tokens"] - self._last_totals["completion_tokens"]
            estimate += since * self.decisions[-1]["baseline_g_per_token"]
        baseline = self.table.configs[self.table.baseline].label
        saved = 1.0 - totals["total_g"] / estimate if estimate > 0 else None
        return {**totals, "baseline": baseline, "baseline_estimate_g": estimate,
                "savings_vs_baseline": saved}  # fmt: skip

    def status(self) -> dict[str, Any]:
        """``GET /v1/greenllm/plan``: the configuration served, why, and the next check."""
        last = self.decisions[-1] if self.decisions else None
        return {
            "configuration": self.gateway.label,
            "reason": None if last is None else last["reason"],
            "decided_at_s": None if last is None else last["at_s"],
            "next_check_s": self.next_check_s,
            "intensity": None if self.reading is None else self.reading.to_dict(),
            "application": self.table.application,
            "switches": [r.to_dict() for r in self.gateway.switches],
        }

