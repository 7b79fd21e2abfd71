"""Check a deployment by simulating it: every (workload, configuration) it uses, one replica
at the load the split gives it, with the workload's requests and SLO."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.config import Configuration
from greenllm.fleet.capacity import workload_application
from greenllm.fleet.optimize import FleetSolution
from greenllm.fleet.spec import FleetSpec

__all__ = ["simulated_attainment"]


def simulated_attainment(
    spec: FleetSpec,
    solution: FleetSolution,
    configurations: Mapping[str, Configuration],
    store_path: str | Path,
    *,
    duration_s: float = 60.0,
    seed: int = 0,
) -> dict[str, float]:
    """SLO attainment per workload (load-weighted over its replicas) and ``"all"`` (weighted
    by QPS), measured by the simulator at each replica's load, on requests drawn with
    ``seed + 1`` into a store of its own (``store_path``), so that no profile that made the
    plan is reused to check it; ``configurations`` maps the problem's labels to
    :class:`~greenllm.config.Configuration` objects."""
    from greenllm.profiler.store import ProfileStore
    from greenllm.profiler.sweep import Cell, run_sweep
    from greenllm.scheduler import matrices_from_store
    from greenllm.workloads import workload

    p = solution.problem
    cells: list[Any] = []
    where: list[tuple[int, int, float, str]] = []
    for w, c in zip(*np.nonzero(solution.replicas), strict=True):
        q = round(float(solution.load_qps[w, c]) / int(solution.replicas[w, c]), 6)
        if q <= 0:
            continue
        app = workload_application(spec.workloads[w])
        cells.append(Cell(workload(app, q, "sampled"), configurations[p.configs[c]]))
        where.append((int(w), int(c), q, app.name))
    with ProfileStore(store_path) as store:
        run_sweep(cells, store, backend="sim", duration_s=duration_s, seed=seed + 1)
        m = matrices_from_store(store, backend="sim")
    ids = [k.id for k in m.configs]
    att = np.zeros(p.capacity_qps.shape)
    for w, c, q, name in where:
        rows = [i for i, k in enumerate(m.rows) if k.application == name and abs(k.qps - q) < 1e-9]
        j = ids.index(configurations[p.configs[c]].id)
        values = [m.attainment[i, j] for i in rows if np.isfinite(m.attainment[i, j])]
        att[w, c] = float(np.mean(values)) if values else np.nan
    out: dict[str, float] = {}
    total = weight = 0.0
    for w, name in enumerate(p.workloads):
        used = solution.load_qps[w] > 0
        x = solution.load_qps[w, used]
        a = float((att[w, used] * x).sum() / x.sum()) if x.sum() > 0 else np.nan
        out[name] = a
        total += a * float(x.sum())
        weight += float(x.sum())
    out["all"] = total / weight if weight else float("nan")
    return out
