"""Resumable profiling sweeps (paper, Section 4.2): the grid of cells, measuring a cell on a
backend, local or Ray executors, progress, and profiling the cells a plan chose."""

from greenllm.profiler.sweep.execute import CellJob, CellOutcome, close_backends, measure, run_local
from greenllm.profiler.sweep.grid import (
    DEFAULT_NEW_GPU,
    DEFAULT_TARGET,
    PAPER_DRAFTS,
    PAPER_OLD_GPUS,
    Cell,
    SweepGrid,
    paper_configurations,
    parse_configurations,
    sample_cells,
)
from greenllm.profiler.sweep.progress import SweepProgress, format_eta
from greenllm.profiler.sweep.ray import SIMULATED_BACKENDS, ray_resources, run_ray
from greenllm.profiler.sweep.run import (
    DEFAULT_REQUESTS,
    SweepInterrupted,
    SweepReport,
    infeasible_sidecar_path,
    run_sweep,
)
from greenllm.profiler.sweep.verify import row_workload, sweep_measure

__all__ = [
    "DEFAULT_NEW_GPU",
    "DEFAULT_REQUESTS",
    "DEFAULT_TARGET",
    "PAPER_DRAFTS",
    "PAPER_OLD_GPUS",
    "SIMULATED_BACKENDS",
    "Cell",
    "CellJob",
    "CellOutcome",
    "SweepGrid",
    "SweepInterrupted",
    "SweepProgress",
    "SweepReport",
    "close_backends",
    "format_eta",
    "infeasible_sidecar_path",
    "measure",
    "paper_configurations",
    "parse_configurations",
    "ray_resources",
    "row_workload",
    "run_local",
    "run_ray",
    "run_sweep",
    "sample_cells",
    "sweep_measure",
]
