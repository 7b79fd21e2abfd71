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
        w = self.load_window_s
        if w is not None and (isinstance(w, bool) or not isinstance(w, int | float) or w <= 0):
            raise ConfigError(f"ControllerSettings.load_window_s = {w!r}: seconds > 0 or None")
        for name in ("guard_window", "guard_min_requests"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ControllerSettings.{name} = {v!r}: must be an integer >= 1")


class LoadMonitor:
    """What the gateway served: arrivals (QPS), output tokens and SLO outcomes (thread-safe)."""

    def __init__(self, clock: Callable[[], float], horizon_s: float, guard_window: int) -> None:
        self.clock = clock
        self.horizon_s = horizon_s
        self._lock = threading.Lock()
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

    def load(self, window_s: float) -> tuple[float, float | None]:
        """(QPS, mean output tokens per request) over the last ``window_s`` (None: no request)."""
        now = self.clock()
        with self._lock:
            recent = [(t, n) for t, n, _ in self._done if t >= now - window_s]
        if not recent:
            return 0.0, None
        return len(recent) / window_s, sum(n for _, n in recent) / len(recent)

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
        self._guard = asyncio.Event()
        self._busy = asyncio.Lock()
        gateway.observers.append(self._observe)

    # ---- state ---------------------------------------------------------------------------------
    def _current(self) -> int | None:
        ids = [c.id for c in self.table.configs]
        current = self.gateway.upstream.configuration.id
        return ids.index(current) if current in ids else None

    def _observe(self, seen: Observation) -> None:
        self.monitor.observe(seen)
        attainment, n = self.monitor.attainment()
        if n >= self.settings.guard_min_requests and attainment < self.table.slo_target:
            self._guard.set()

    # ---- the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Decide now, then every period (or when the SLO guard fires), until cancelled. A
        decision that fails (a switch that did not start) is logged and retried next period."""
        reason = "start"
        while True:
            self._guard.clear()  # a guard firing during this decision counts for the next one
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
            return await self._decide(reason)

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
        why = reason
        if reason == "slo_guard":
            target = t.slo_choice(row, alpha)
            if target == current and row + 1 < len(t.qps_levels):
                row += 1
                target = t.slo_choice(row, alpha)
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
            self.monitor.reset_guard()
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

