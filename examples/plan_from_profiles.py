"""Profile a small grid on the simulator, keep 40% of the cells, and let the planner fill the rest.

Run: python examples/plan_from_profiles.py   (about 20 s)
"""

import random
import tempfile
from pathlib import Path

from greenllm.carbon import CarbonIntensityTrace
from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import Cell, paper_configurations
from greenllm.reproduce import run_cells
from greenllm.scheduler import Planner
from greenllm.workloads import workload

rng = random.Random(0)
cells = [
    Cell(workload("sharegpt", q), c) for q in (0.5, 1, 2, 4, 6, 8) for c in paper_configurations()
]
standalone = [c for c in cells if c.configuration.kind.value == "standalone"]
sample = standalone + rng.sample([c for c in cells if c not in standalone], k=int(0.4 * len(cells)))

with tempfile.TemporaryDirectory() as tmp, ProfileStore(Path(tmp) / "p.sqlite") as store:
    print(run_cells(sample, store, n_requests=200))
    plan = Planner(region="CISO", slo_target=0.9).plan(store)
    for e in plan.entries:
        cell = "measured" if e.measured else "filled"
        print(f"{e.qps:>4} QPS  {e.configuration.label:32} {e.savings:+.1%} vs Standalone ({cell})")
    year = Planner(region="CISO").plan_hourly(store, CarbonIntensityTrace.from_region("CISO"),
                                              "sharegpt", qps_by_hour=2.0)  # fmt: skip
    print(
        f"a year at 2 QPS in CISO: {year.total_g / 1e3:.1f} kg, Standalone "
        f"{year.baseline_total_g / 1e3:.1f} kg, {year.switches} switches"
    )
