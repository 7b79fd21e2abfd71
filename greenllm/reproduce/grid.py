"""The paper's evaluation grid (Section 7.1) and a resumable runner that profiles it.

Configurations: Standalone A100 (Llama-2-7B); SpecDecode on the A100 with a 1B or 300M draft;
DPD with prefill on the A100 and decode on a T4 or V100; DSD with the 7B target on the A100 and
a 1B or 300M draft on a T4 or V100. Workloads: the applications of Table 2 at a request size
over a QPS range. :func:`run_cells` is a thin wrapper over the general sweep runner
(:func:`greenllm.profiler.sweep.run.run_sweep`): cells already stored are skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from greenllm.profiler.sweep import Cell, run_sweep

__all__ = ["run_cells"]


def run_cells(
    cells: Sequence[Cell],
    store: object,
    *,
    backend: str = "sim",
    n_requests: int = 300,
    seed: int = 0,
    run_id: str = "default",
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Measure every cell not yet in ``store`` and write it there (one transaction per batch).

    Each cell serves ``n_requests`` Poisson arrivals at the workload's QPS. Cells whose model
    does not fit the GPU are counted as ``infeasible``. Returns the counts ``total``,
    ``skipped`` (already stored), ``measured``, ``infeasible`` and ``failed``. ``workers``
    defaults to 2 forked processes (1 on a one-core machine).
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    report = run_sweep(
        cells,
        store,
        backend=backend,
        n_requests=n_requests,
        seed=seed,
        run_id=run_id,
        workers=workers,
        progress=progress or False,
        batch_size=32,
    )
    return {
        "total": report.total,
        "skipped": report.already_done,
        "measured": report.measured,
        "infeasible": report.infeasible,
        "failed": report.failed,
    }
