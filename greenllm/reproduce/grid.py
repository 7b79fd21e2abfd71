"""The paper's evaluation grid (Section 7.1) and a resumable runner that profiles it.

Configurations: Standalone A100 (Llama-2-7B); SpecDecode on the A100 with a 1B or 300M draft;
DPD with prefill on the A100 and decode on a T4 or V100; DSD with the 7B target on the A100 and
a 1B or 300M draft on a T4 or V100. Workloads: the applications of Table 2 at a request size
over a QPS range. Each cell runs on a backend and lands in a
:class:`~greenllm.profiler.store.ProfileStore`; cells already stored are skipped, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from greenllm.config import Configuration, Workload
from greenllm.errors import InfeasibleError

__all__ = ["Cell", "paper_configurations", "run_cells"]

logger = logging.getLogger(__name__)

TARGET = "llama-2-7b"
DRAFTS = ("llama-1b", "llama-300m")
OLD_GPUS = ("T4", "V100")


def paper_configurations(link_gbps: float = 16.0, new_gpu: str = "A100") -> list[Configuration]:
    """The nine configurations of Section 7.1 (Standalone first: the paper's baseline)."""
    configs = [Configuration(kind="standalone", new_gpu=new_gpu, target_model=TARGET)]
    configs += [
        Configuration(kind="spec_decode", new_gpu=new_gpu, target_model=TARGET, draft_model=d)
        for d in DRAFTS
    ]
    configs += [
        Configuration(kind="dpd", new_gpu=new_gpu, old_gpu=o, target_model=TARGET,
                      link_gbps=link_gbps)
        for o in OLD_GPUS
    ]  # fmt: skip
    configs += [
        Configuration(kind="dsd", new_gpu=new_gpu, old_gpu=o, target_model=TARGET, draft_model=d,
                      link_gbps=link_gbps)
        for o in OLD_GPUS
        for d in DRAFTS
    ]  # fmt: skip
    return configs


@dataclass(frozen=True)
class Cell:
    """One (workload, configuration) measurement to make."""

    workload: Workload
    configuration: Configuration

    def cell_id(self, backend: str, run_id: str) -> str:
        from greenllm.profiler.records import cell_id

        w = self.workload
        return cell_id(w.application, w.request_size, w.qps, self.configuration.id, backend,
                       run_id)  # fmt: skip


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
    does not fit the GPU are skipped and counted as ``infeasible``. Returns counts.
    """
    done = store.done_cells(backend=backend, run_id=run_id)  # type: ignore[attr-defined]
    todo = [c for c in cells if c.cell_id(backend, run_id) not in done]
    counts = {"total": len(cells), "skipped": len(cells) - len(todo), "measured": 0,
              "infeasible": 0}  # fmt: skip
    jobs = [(backend, c.workload, c.configuration, n_requests, seed, run_id) for c in todo]
    batch: list[object] = []
    for i, rec in enumerate(_map(_measure, jobs, workers), 1):
        if rec is None:
            counts["infeasible"] += 1
        else:
            batch.append(rec)
            counts["measured"] += 1
        if len(batch) >= 32 or i == len(jobs):
            store.put_many(batch)  # type: ignore[attr-defined]
            batch = []
        if progress is not None:
            progress(i, len(jobs))
    if batch:
        store.put_many(batch)  # type: ignore[attr-defined]
    return counts


_BACKENDS: dict[str, object] = {}


def _measure(job: tuple) -> object | None:
    name, workload, configuration, n_requests, seed, run_id = job
    from greenllm.backends import get_backend
    from greenllm.workloads.requests import RequestSet

    backend = _BACKENDS.get(name)
    if backend is None:
        backend = _BACKENDS[name] = get_backend(name)
    requests = RequestSet.poisson(workload.qps, workload.request_size, n=n_requests, seed=seed)
    try:
        result = backend.run(configuration, workload, requests=requests, seed=seed)  # type: ignore[attr-defined]
    except InfeasibleError as err:
        logger.info("skipping %s on %s: %s", configuration.label, workload.application, err)
        return None
    return result.to_record(run_id=run_id)


def _map(fn: Callable, jobs: list, workers: int | None) -> Iterable:
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    if workers <= 1 or len(jobs) < 8:
        yield from map(fn, jobs)
        return
    import multiprocessing as mp

    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    pool = ctx.Pool(workers)
    try:
        yield from pool.imap(fn, jobs, chunksize=4)
    finally:
        pool.terminate()
