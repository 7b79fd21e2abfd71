"""The paper's evaluation (Section 7) computed from profiled cells: every figure's data.

Everything here is derived from the records in a profile store by the planner (Algorithm 1
over the measured matrices), so the same code serves the simulator, the PyTorch engine and vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from greenllm.config import ConfigKind, Configuration
from greenllm.profiler.sweep import Cell, paper_configurations
from greenllm.scheduler import Planner, ProfileMatrices, RowKey
from greenllm.scheduler.matrix import cells_from_records
from greenllm.workloads import paper_qps_range

__all__ = ["Experiment", "analyse", "summary_rows"]

REGIONS = ("NCSW", "CISO", "MISO")


@dataclass(frozen=True)
class Experiment:
    """The grid the demo profiles (QPS levels: :func:`greenllm.workloads.paper_qps_range`)."""

    qps: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        app: paper_qps_range(app) for app in ("sharegpt", "humaneval", "longbench")
    })  # fmt: skip
    sharegpt_sizes: tuple[str, ...] = ("p25", "p50", "p75")
    bandwidths_gbps: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    default_gbps: float = 16.0
    region: str = "CISO"
    slo_target: float = 0.9

    def cells(self) -> list[Cell]:
        from greenllm.workloads import workload

        configs = paper_configurations(self.default_gbps)
        cells = []
        for app, levels in self.qps.items():
            sizes = self.sharegpt_sizes if app == "sharegpt" else ("p50",)
            for size in sizes:
                cells += [Cell(workload(app, q, size=size), c) for q in levels for c in configs]
        link_configs = [c for gbps in self.bandwidths_gbps if gbps != self.default_gbps
                        for c in paper_configurations(gbps) if c.link_gbps is not None]  # fmt: skip
        cells += [Cell(workload("sharegpt", q, size="p50"), c)
                  for q in self.qps["sharegpt"] for c in link_configs]  # fmt: skip
        return cells


def _matrices(records: Sequence[Any], configs: Sequence[Configuration], rows: set[RowKey] | None
              ) -> ProfileMatrices:  # fmt: skip
    cells = [c for c in cells_from_records(records) if rows is None or c["row"] in rows]
    ids = {c.id for c in configs}
    measured = [c for c in configs if any(x["config"].id == c.id for x in cells)]
    return ProfileMatrices.from_cells([c for c in cells if c["config"].id in ids], configs=measured)


def _plan_rows(m: ProfileMatrices, planner: Planner) -> list[dict[str, Any]]:
    m, _ = planner.candidates(m)
    plan = planner.plan(m)
    base = plan.baseline
    filled = planner.complete(m)
    b = m.column(base)
    out = []
    for r, e in enumerate(plan.entries):
        c = m.column(e.configuration)
        total_base = float(filled["carbon"][r, b])
        out.append({
            "qps": e.qps, "size": f"({e.input_tokens},{e.output_tokens})",
            "configuration": e.configuration.label, "kind": e.configuration.kind.value,
            "carbon_g_per_token": e.carbon_g_per_token,
            "baseline_g_per_token": e.baseline_carbon_g_per_token,
            "savings": e.savings, "slo_attainment": e.slo_attainment,
            "baseline_slo_attainment": float(filled["attainment"][r, b]),
            "fallback": e.fallback,
            "embodied_savings": float(filled["embodied"][r, b] - filled["embodied"][r, c])
            / total_base,
            "operational_savings": float(filled["operational"][r, b] - filled["operational"][r, c])
            / total_base,
        })  # fmt: skip
    return out


def _peak(rows: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    ok = [r for r in rows if not r["fallback"] and r["slo_attainment"] >= target]
    return max(ok, key=lambda r: r["savings"]) if ok else None


def analyse(records: Sequence[Any], exp: Experiment | None = None) -> dict[str, Any]:
    """Every figure's data (Figures 4 and 9-15) plus the headline, from profile records."""
    exp = exp or Experiment()
    planner = Planner(region=exp.region, slo_target=exp.slo_target)
    main_cfgs = paper_configurations(exp.default_gbps)
    by_app: dict[str, set[RowKey]] = {}
    for cell in cells_from_records(records):
        by_app.setdefault(cell["row"].application, set()).add(cell["row"])
    out: dict[str, Any] = {"region": exp.region, "slo_target": exp.slo_target,
                           "configurations": [c.label for c in main_cfgs]}  # fmt: skip

    def p50_rows(app: str) -> set[RowKey]:
        key = _p50(app)
        return {r for r in by_app.get(app, ()) if (r.input_tokens, r.output_tokens) == key}

    # Figure 9 + headline: each application at P50.
    out["fig9"] = {}
    for app in exp.qps:
        rows = _plan_rows(_matrices(records, main_cfgs, p50_rows(app)), planner)
        out["fig9"][app] = {"rows": rows, "peak": _peak(rows, exp.slo_target)}
    # Figures 10 and 12: ShareGPT at P25/P50/P75.
    out["fig10"] = {}
    for size in exp.sharegpt_sizes:
        key = _size("sharegpt", size)
        rows = {r for r in by_app.get("sharegpt", ()) if (r.input_tokens, r.output_tokens) == key}
        out["fig10"][size] = _plan_rows(_matrices(records, main_cfgs, rows), planner)
    # Figure 11: latency of the chosen configuration and of Standalone vs QPS.
    out["fig11"] = {app: _latency(records, out["fig9"][app]["rows"], app, main_cfgs[0])
                    for app in exp.qps}  # fmt: skip
    # Figure 13: the best configuration per QPS at each link bandwidth.
    out["fig13"] = {}
    for gbps in exp.bandwidths_gbps:
        cfgs = [c for c in paper_configurations(gbps)]
        rows = _plan_rows(_matrices(records, cfgs, p50_rows("sharegpt")), planner)
        out["fig13"][f"{gbps:g}"] = rows
    # Figure 14: regions (same profiles, carbon recomputed).
    out["fig14"] = {}
    for region in REGIONS:
        rp = Planner(region=region, slo_target=exp.slo_target)
        rows = _plan_rows(_matrices(records, main_cfgs, p50_rows("sharegpt")), rp)
        out["fig14"][region] = {"rows": rows, "peak": _peak(rows, exp.slo_target)}
    out["fig15"] = _lifetimes(records, main_cfgs, p50_rows("sharegpt"), exp)
    out["fig4"] = _bandwidth_needed(records, main_cfgs, p50_rows("sharegpt"))
    return out


def _p50(app: str) -> tuple[int, int]:
    return _size(app, "p50")


def _size(app: str, which: str) -> tuple[int, int]:
    from greenllm.workloads import get_application

    s = getattr(get_application(app), which)
    return (s.input_tokens, s.output_tokens)


def _record_index(records: Sequence[Any]) -> dict[tuple[str, tuple[int, int], float, str], Any]:
    index = {}
    for rec in records:
        w = rec.workload
        size = w.request_size if hasattr(w.request_size, "input_tokens") else w.request_size.p50
        index[(w.application, (size.input_tokens, size.output_tokens), float(w.qps),
               rec.configuration.label)] = rec  # fmt: skip
    return index


def _latency(records, rows, app, standalone) -> list[dict[str, Any]]:
    index = _record_index(records)
    key = _p50(app)
    out = []
    for r in rows:
        chosen = index.get((app, key, r["qps"], r["configuration"]))
        base = index.get((app, key, r["qps"], standalone.label))
        out.append({
            "qps": r["qps"], "configuration": r["configuration"],
            "ttft_mean_s": chosen.ttft.mean_s if chosen else None,
            "tpot_mean_s": chosen.tpot.mean_s if chosen else None,
            "standalone_ttft_mean_s": base.ttft.mean_s if base else None,
            "standalone_tpot_mean_s": base.tpot.mean_s if base else None,
            "slo": chosen.workload.slo.model_dump() if chosen else None,
        })  # fmt: skip
    return out


def _lifetimes(records, configs, rows, exp: Experiment) -> dict[str, Any]:
    """Figure 15: DSD A100+T4 (1B draft) savings vs old and new GPU lifetimes, at QPS 1 and 4."""
    m = _matrices(records, configs, rows)
    dsd = next((c for c in m.configs if c.kind is ConfigKind.DSD and c.old_gpu == "T4"
                and c.draft_model == "llama-1b"), None)  # fmt: skip
    if dsd is None:
        return {}
    j, b = m.column(dsd), m.default_column()
    out: dict[str, Any] = {"configuration": dsd.label}
    for qps in (1.0, 4.0):
        r = next((i for i, k in enumerate(m.rows) if k.qps == qps), None)
        if r is None or not (m.observed[r, j] and m.observed[r, b]):
            continue
        old = {f"{y:g}": _saving(m, r, j, b, {"T4": y, "A100": 7.0}, exp) for y in range(5, 11)}
        new = {f"{y:g}": _saving(m, r, j, b, {"T4": 7.0, "A100": y}, exp) for y in range(2, 8)}
        out[f"qps_{qps:g}"] = {"old_lifetime": old, "new_lifetime": new}
    return out


def _saving(m: ProfileMatrices, r: int, j: int, b: int, life: dict[str, float],
            exp: Experiment) -> float:  # fmt: skip
    from greenllm.carbon import carbon_intensity

    c = m.carbon_g_per_token(carbon_intensity(exp.region), {**life, "default": 7.0})
    return float(1 - c[r, j] / c[r, b])


def _bandwidth_needed(records, configs, rows) -> list[dict[str, Any]]:
    """Figure 4: link bandwidth used by DPD and DSD vs QPS (ShareGPT P50): mean Gbps over the
    run and MB moved per served request."""
    index = _record_index(records)
    key = _p50("sharegpt")
    out = []
    for row in sorted(rows, key=lambda k: k.qps):
        entry: dict[str, Any] = {"qps": row.qps}
        for c in configs:
            if c.kind in (ConfigKind.DPD, ConfigKind.DSD):
                rec = index.get(("sharegpt", key, row.qps, c.label))
                if rec is not None and rec.duration_s > 0 and rec.ttft.count:
                    entry[c.label] = {
                        "gbps": rec.link_bytes * 8 / rec.duration_s / 1e9,
                        "mb_per_request": rec.link_bytes / rec.ttft.count / 1e6,
                    }
        out.append(entry)
    return out


def summary_rows(result: dict[str, Any]) -> list[list[Any]]:
    """The headline: peak savings per application at >= target attainment."""
    rows = []
    for app, data in result["fig9"].items():
        p = data["peak"]
        rows.append([app, p["qps"], p["configuration"], p["savings"], p["slo_attainment"]]
                    if p else [app, None, "none meets the SLO", None, None])  # fmt: skip
    return rows
