"""A replayed day under each policy, side by side, and its figure."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenllm.errors import missing_extra
from greenllm.scheduler import PlanTable
from greenllm.serve.replay.day import ReplayDay
from greenllm.serve.replay.run import POLICIES, PolicyOutcome, serve_day, static_choice

__all__ = ["ReplayReport", "plot_replay", "replay"]


@dataclass(frozen=True)
class ReplayReport:
    """The day, and what each policy did with it."""

    day: ReplayDay
    application: str
    static_configuration: str
    outcomes: dict[str, PolicyOutcome]

    def savings(self, policy: str, against: str, *, estimate: bool = False) -> float | None:
        """1 - ``policy``'s carbon / ``against``'s: per output token of the samples' receipts,
        or (``estimate``) over the day's estimate, switches included; None unless both ran."""
        a, b = self.outcomes.get(policy), self.outcomes.get(against)
        if a is None or b is None:
            return None
        if estimate:
            return 1.0 - a.day_estimate_g / b.day_estimate_g
        return 1.0 - a.g_per_token / b.g_per_token

    def to_dict(self) -> dict[str, Any]:
        d = self.day
        pairs = [(p, q) for p in self.outcomes for q in self.outcomes if p != q and p == "live"]
        return {
            "requests": d.trace, "region": d.region, "application": self.application,
            "hours": len(d.hours), "start": d.hours[0].label, "sample_s": d.sample_s,
            "static_configuration": self.static_configuration,
            "max_request_tokens": d.max_request_tokens, "max_output_tokens": d.max_output_tokens,
            "intensity_g_per_kwh": [h.intensity_g_per_kwh for h in d.hours],
            "qps": [h.qps for h in d.hours], "qps_mean": sum(h.qps for h in d.hours) / len(d.hours),
            "policies": {k: v.to_dict() for k, v in self.outcomes.items()},
            "savings": {f"{p}_vs_{q}": {"per_token": self.savings(p, q),
                                        "day_estimate": self.savings(p, q, estimate=True)}
                        for p, q in pairs},
        }  # fmt: skip


def replay(
    day: ReplayDay,
    table: PlanTable,
    *,
    policies: tuple[str, ...] = POLICIES,
    time_scale: float = 60.0,
    engine_start_s: float = 60.0,
    hysteresis: float = 1.0,
    seed: int = 0,
    processes: bool = True,
) -> ReplayReport:
    """Serve ``day`` under each of ``policies`` (:func:`serve_day`), same requests and
    intensities, side by side: each in a process of its own (``processes``; the simulator of
    one policy keeps a core busy at the default speeds), else together in one event loop."""
    kwargs: dict[str, Any] = dict(time_scale=time_scale, engine_start_s=engine_start_s,
                                  hysteresis=hysteresis, seed=seed)  # fmt: skip
    if processes and len(policies) > 1:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        with ProcessPoolExecutor(len(policies), mp_context=ctx) as pool:
            futures = [pool.submit(_serve, day, policy, table, kwargs) for policy in policies]
            results = [f.result() for f in futures]
    else:

        async def together() -> list[PolicyOutcome]:
            return list(await asyncio.gather(*(serve_day(day, policy, table, **kwargs)
                                               for policy in policies)))  # fmt: skip

        results = asyncio.run(together())
    outcomes = dict(zip(policies, results, strict=True))
    return ReplayReport(day, table.application, static_choice(table, day).label, outcomes)


def _serve(day: ReplayDay, policy: str, table: PlanTable, kwargs: dict[str, Any]) -> PolicyOutcome:
    logging.getLogger("greenllm.serve").setLevel(logging.ERROR)  # switches are in the report
    return asyncio.run(serve_day(day, policy, table, **kwargs))


def plot_replay(report: ReplayReport, path: str | Path) -> Path:
    """A PNG of the day: intensity and load per hour, the configuration each policy served,
    and carbon per output token (needs the ``plot`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise missing_extra("matplotlib", "plot") from err
    hours = [h.index for h in report.day.hours]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True,
                                        gridspec_kw={"height_ratios": [1.0, 1.3, 1.0]})  # fmt: skip
    ax1.step(hours, [h.intensity_g_per_kwh for h in report.day.hours], where="post",
             color="tab:red", label="grid intensity")  # fmt: skip
    ax1.set_ylabel(f"{report.day.region} g/kWh")
    twin = ax1.twinx()
    twin.step(hours, [h.qps for h in report.day.hours], where="post", color="tab:gray",
              linestyle="--", label="load")  # fmt: skip
    twin.set_ylabel("QPS")
    ax1.set_title(f"{report.day.trace} requests, {report.day.region}, from "
                  f"{report.day.hours[0].label}")  # fmt: skip
    labels = sorted({h.configuration for o in report.outcomes.values() for h in o.hours})
    for k, (name, outcome) in enumerate(report.outcomes.items()):
        ys = [labels.index(h.configuration) + 0.12 * (k - 1) for h in outcome.hours]
        ax2.step(hours, ys, where="post", label=name, linewidth=2)
    ax2.set_yticks(range(len(labels)), labels, fontsize=8)
    ax2.set_ylabel("configuration")
    ax2.legend(loc="upper right", fontsize=8)
    for name, outcome in report.outcomes.items():
        per = [h.total_g / h.completion_tokens * 1e3 if h.completion_tokens else float("nan")
               for h in outcome.hours]  # fmt: skip
        ax3.plot(hours, per, marker="o", markersize=3, label=name)
    ax3.set_ylabel("mg CO2e / output token")
    ax3.set_xlabel("hour of the day (UTC)")
    ax3.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
