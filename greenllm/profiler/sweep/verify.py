"""Profile the cells a plan chose, through a sweep into the store (for ``verify_plan``).

:func:`sweep_measure` turns a profile store and a backend into the ``measure`` callable of
:func:`greenllm.scheduler.refine.verify_plan`: each call sweeps the given (row, configuration)
cells on the backend (resumable and idempotent like every sweep: a cell already stored is not
measured again) and rebuilds the matrices from the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from greenllm.config import RequestSize, Workload
from greenllm.errors import ConfigError
from greenllm.profiler.sweep.grid import Cell
from greenllm.profiler.sweep.run import run_sweep
from greenllm.scheduler import ProfileMatrices, RowKey, matrices_from_store
from greenllm.scheduler.refine import Measure
from greenllm.workloads import get_application

__all__ = ["row_workload", "sweep_measure"]


def row_workload(row: RowKey) -> Workload:
    """The workload of a matrix row: its application (and that application's SLO), request
    size and QPS."""
    try:
        slo = get_application(row.application).slo
    except ConfigError as err:
        raise ConfigError(
            f"cannot profile row {row.label}: {err}; profile it with `greenllm profile`"
        ) from err
    return Workload(
        application=row.application,
        request_size=RequestSize(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
        qps=row.qps,
        slo=slo,
    )


def sweep_measure(
    store: Any,
    *,
    backend: str = "sim",
    n_requests: int = 300,
    seed: int = 0,
    run_id: str = "verify",
    **sweep_options: Any,
) -> Measure:
    """A ``measure`` for :func:`~greenllm.scheduler.refine.verify_plan` that sweeps the cells
    on ``backend`` into ``store`` and returns the store's matrices for ``backend``."""

    def measure(cells: Sequence[tuple[RowKey, Any]]) -> ProfileMatrices:
        jobs = [Cell(row_workload(row), config) for row, config in cells]
        run_sweep(jobs, store, backend=backend, n_requests=n_requests, seed=seed,
                  run_id=run_id, **sweep_options)  # fmt: skip
        return matrices_from_store(store, backend=backend)

    return measure
