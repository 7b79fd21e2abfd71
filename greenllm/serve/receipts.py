"""The carbon receipt of every response, from the gateway's :class:`~greenllm.energy.CarbonMeter`.

Each request is a meter window from the moment the gateway admits it to its last token. The
meter shares the devices' energy and allocated time among the windows open at each instant
(equal parts), so concurrent requests split what the GPUs drew (Eq. 2 on the energy) and their
embodied carbon (Eq. 1 on the allocated time). Idle time is not dropped: while no request is
open the ledger keeps an ``idle`` window, and the first request to finish after an idle stretch
carries it (``idle_*`` fields). So over any stretch that starts and ends with the gateway idle,
the receipts add up to the devices' energy, operational and embodied carbon (tested).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from greenllm.energy import CarbonMeter, CarbonReport, MeterWindow

__all__ = ["LedgerTotals", "Receipt", "ReceiptLedger"]


@dataclass(frozen=True)
class Receipt:
    """Energy and carbon charged to one request (``usage.greenllm`` in the response)."""

    request_id: str
    configuration: str
    energy_j: dict[str, float]
    """Device energy (J, before PUE) per ``"<role>:<gpu>"``, idle share included."""
    embodied_g: float
    operational_g: float
    intensity_g_per_kwh: float
    intensity_source: str
    energy_source: Literal["measured", "modelled"]
    prompt_tokens: int
    completion_tokens: int
    duration_s: float
    """From admission to the last token, on the upstream's clock."""
    idle_energy_j: float = 0.0
    idle_g: float = 0.0
    """The part of ``energy_j`` / ``total_g`` that is idle time carried by this request."""

    @property
    def total_g(self) -> float:
        return self.embodied_g + self.operational_g

    def to_dict(self) -> dict[str, Any]:
        tokens = self.completion_tokens
        return {
            "energy_j": dict(self.energy_j),
            "energy_j_total": sum(self.energy_j.values()),
            "embodied_g": self.embodied_g,
            "operational_g": self.operational_g,
            "total_g": self.total_g,
            "total_g_per_token": self.total_g / tokens if tokens else None,
            "intensity_g_per_kwh": self.intensity_g_per_kwh,
            "intensity_source": self.intensity_source,
            "energy": self.energy_source,
            "configuration": self.configuration,
            "duration_s": self.duration_s,
            "idle_energy_j": self.idle_energy_j,
            "idle_g": self.idle_g,
        }


@dataclass
class LedgerTotals:
    """Everything charged so far (receipts plus idle time not yet carried)."""

    requests: int = 0
    completion_tokens: int = 0
    energy_j: dict[str, float] = field(default_factory=dict)
    embodied_g: float = 0.0
    operational_g: float = 0.0

    def add(self, report: CarbonReport) -> None:
        for key, joules in report.device_energy_j.items():
            self.energy_j[key] = self.energy_j.get(key, 0.0) + joules
        self.embodied_g += report.embodied_g
        self.operational_g += report.operational_g


class ReceiptLedger:
    """Opens a meter window per request and turns it into a :class:`Receipt` when it ends."""

    def __init__(
        self,
        meter: CarbonMeter,
        configuration: str,
        energy_source: Literal["measured", "modelled"],
    ) -> None:
        self.meter, self.configuration, self.energy_source = meter, configuration, energy_source
        self._lock = threading.Lock()
        self._open = 0
        self._idle: MeterWindow | None = None
        self._idle_due = False
        self._carry: list[CarbonReport] = []
        self.totals = LedgerTotals()
        """Charged to finished requests."""
        self._idle_open()

    def _idle_open(self) -> None:
        self._idle = self.meter.begin("idle")

    def _idle_close(self) -> None:
        if self._idle is not None:
            self._carry.append(self._end(self._idle))
            self._idle = None

    def _end(self, win: MeterWindow) -> CarbonReport:
        report = self.meter.end(win)
        self.meter.reports.clear()  # the ledger keeps totals; a server must not grow per request
        return report

    def open(self, request_id: str) -> MeterWindow:
        """Start charging ``request_id``. If the gateway was idle, the idle window is only
        marked for closing: :meth:`settle` (after the request's first token, off the path to
        it) or the next :meth:`close` ends it. Until then it overlaps the request and shares
        the devices' energy with it; whoever carries it, nothing is lost or counted twice."""
        with self._lock:  # open before closing idle: no gap between windows loses energy
            win = self.meter.begin(request_id)
            if self._open == 0 and self._idle is not None:
                self._idle_due = True
            self._open += 1
            return win

    def settle(self) -> None:
        """End an idle window that :meth:`open` marked (cheap when there is none)."""
        if self._idle_due:
            with self._lock:
                if self._idle_due and self._open > 0:
                    self._idle_close()
                self._idle_due = False

    def close(
        self, win: MeterWindow, request_id: str, prompt_tokens: int, completion_tokens: int
    ) -> Receipt:
        """Stop charging the request of ``win``; its receipt (with any idle time it carries)."""
        with self._lock:
            if self._idle_due:
                self._idle_close()
                self._idle_due = False
            self._open -= 1
            if self._open == 0:
                self._idle_open()  # before the request's window ends: no gap
            report = self._end(win)
            carry, self._carry = self._carry, []
            self.totals.requests += 1
            self.totals.completion_tokens += completion_tokens
            for r in (report, *carry):
                self.totals.add(r)
        energy: dict[str, float] = {}
        for r in (report, *carry):
            for key, joules in r.device_energy_j.items():
                energy[key] = energy.get(key, 0.0) + joules
        idle_j = sum(sum(r.device_energy_j.values()) for r in carry)
        return Receipt(
            request_id=request_id,
            configuration=self.configuration,
            energy_j=energy,
            embodied_g=report.embodied_g + sum(r.embodied_g for r in carry),
            operational_g=report.operational_g + sum(r.operational_g for r in carry),
            intensity_g_per_kwh=report.intensity_g_per_kwh,
            intensity_source=report.intensity_source,
            energy_source=self.energy_source,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            duration_s=report.duration_s,
            idle_energy_j=idle_j,
            idle_g=sum(r.total_g for r in carry),
        )

    def close_idle(self) -> LedgerTotals:
        """At shutdown: the idle time no request carried, as totals (not charged to anyone)."""
        out = LedgerTotals()
        with self._lock:
            self._idle_close()
            for r in self._carry:
                out.add(r)
            self._carry = []
        return out
