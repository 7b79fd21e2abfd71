"""Measuring one sweep cell, and the local executors (in process, or a pool of forked workers).

:func:`measure` runs one :class:`CellJob` on its backend and turns the outcome into a
:class:`CellOutcome`; it never raises for a cell's own failure, so the same function serves the
driver, forked workers and Ray tasks. Executors are generators of outcomes in completion order;
closing one abandons the cells still running (a pool is terminated). Only the driver writes the
store.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from greenllm.errors import (
    BackendUnavailableError,
    ConfigError,
    InfeasibleError,
    ProfileError,
    WorkerError,
)
from greenllm.profiler.store.records import ProfileRecord
from greenllm.profiler.sweep.grid import Cell

__all__ = ["CellJob", "CellOutcome", "close_backends", "measure", "run_local"]

logger = logging.getLogger(__name__)

_BACKENDS: dict[tuple[str, str], Any] = {}  # one backend instance per process and options


@dataclass(frozen=True)
class CellJob:
    """Everything a worker needs to measure one cell (picklable)."""

    cell: Cell
    cell_id: str
    backend: str
    run_id: str
    seed: int
    n_requests: int | None = None
    duration_s: float | None = None
    backend_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class CellOutcome:
    """What became of a cell: ``ok`` (with its record), ``infeasible``, ``failed`` or ``error``.

    ``failed`` (a :class:`ProfileError` or :class:`WorkerError`, e.g. a GPU that vanished) is not
    stored and is retried on resume; ``error`` (bad input, a missing extra, a bug) stops the sweep.
    """

    cell_id: str
    status: str
    record: Any = None
    message: str = ""
    error_type: str = ""
    wall_s: float = 0.0
    exception: BaseException | None = field(default=None, compare=False)

    def raise_error(self, label: str) -> None:
        """Re-raise an ``error`` outcome in the driver (as the original class where known)."""
        if self.exception is not None:
            raise self.exception
        if self.error_type == "ConfigError":
            raise ConfigError(self.message)
        if self.error_type == "BackendUnavailableError":
            raise BackendUnavailableError(self.message)
        raise ProfileError(
            f"cell {label} failed with {self.error_type}: {self.message} (traceback in the log)"
        )


def _backend(name: str, options: tuple[tuple[str, Any], ...]) -> Any:
    from greenllm.backends import get_backend

    key = (name, json.dumps(options, sort_keys=True, default=repr))
    backend = _BACKENDS.get(key)
    if backend is None:
        backend = _BACKENDS[key] = get_backend(name, **dict(options))
    return backend


def close_backends() -> None:
    """Close the backends this process opened (idempotent)."""
    while _BACKENDS:
        _, backend = _BACKENDS.popitem()
        try:
            backend.close()
        except Exception as err:  # closing must not hide the sweep's own outcome
            logger.warning("closing backend %s failed: %s", getattr(backend, "name", "?"), err)


def measure(job: CellJob, keep_exception: bool = False) -> CellOutcome:
    """Run ``job``'s cell and return its outcome (its record carries seed and size in provenance).

    Each cell serves ``n_requests`` Poisson arrivals at the workload's QPS (or arrivals for
    ``duration_s``), drawn with the sweep's ``seed``: every configuration of a row sees the same
    arrivals (common random numbers).
    """
    from greenllm.workloads import RequestSet

    cell, t0 = job.cell, time.perf_counter()
    try:
        backend = _backend(job.backend, job.backend_options)
        w = cell.workload
        if job.duration_s is None:
            requests = RequestSet.poisson(w.qps, w.request_size, n=job.n_requests, seed=job.seed)
            result = backend.run(cell.configuration, w, requests=requests, seed=job.seed)
        else:
            result = backend.run(cell.configuration, w, duration_s=job.duration_s, seed=job.seed)
        record = ProfileRecord.from_run(result, run_id=job.run_id)
    except InfeasibleError as err:
        return CellOutcome(
            job.cell_id, "infeasible", message=str(err), wall_s=time.perf_counter() - t0
        )
    except (ProfileError, WorkerError) as err:
        logger.warning("cell %s failed (will be retried on resume): %s", cell.label, err)
        return CellOutcome(
            job.cell_id,
            "failed",
            message=f"{type(err).__name__}: {err}",
            wall_s=time.perf_counter() - t0,
        )
    except Exception as err:
        if not isinstance(err, (ConfigError, BackendUnavailableError)):
            logger.error("cell %s raised:\n%s", cell.label, traceback.format_exc())
        return CellOutcome(
            job.cell_id,
            "error",
            message=str(err),
            error_type=type(err).__name__,
            exception=err if keep_exception else None,
        )
    wall_s = time.perf_counter() - t0
    if record.n_requests <= 0:  # e.g. a duration shorter than the first arrival
        size = (
            f"n_requests = {job.n_requests}"
            if job.duration_s is None
            else f"duration_s = {job.duration_s:g}"
        )
        message = (
            f"served no requests ({size}): nothing to measure, not stored; "
            "give it more requests or a longer duration"
        )
        logger.warning("cell %s %s", cell.label, message)
        return CellOutcome(job.cell_id, "failed", message=message, wall_s=wall_s)
    if record.backend != job.backend:  # an alias registration: key the row by the asked name
        record = record.model_copy(update={"backend": job.backend})
    extra = {**record.provenance.extra, "seed": job.seed, "wall_s": round(wall_s, 6)}
    extra.update(
        {"n_requests": job.n_requests} if job.duration_s is None else {"duration_s": job.duration_s}
    )
    record = record.model_copy(
        update={"provenance": record.provenance.model_copy(update={"extra": extra})}
    )
    if record.cell_id != job.cell_id:
        return CellOutcome(
            job.cell_id,
            "error",
            error_type="ProfileError",
            message=(
                f"backend {job.backend!r} returned a record for another cell ({record.cell_id}, "
                f"expected {job.cell_id}): it must keep the workload and configuration it was given"
            ),
        )
    return CellOutcome(job.cell_id, "ok", record=record, wall_s=wall_s)


def _worker_init() -> None:
    """Pool workers leave Ctrl-C to the driver (which then terminates them) and exit quietly.

    SIGINT is ignored; SIGTERM (what ``Pool.terminate`` sends) gets its default action back, in
    case the driver installed a handler that raises (``greenllm profile`` turns SIGTERM into
    KeyboardInterrupt): a forked worker would inherit it and print a traceback when the pool is
    closed. A worker whose driver is killed exits by itself: its task queue reaches end-of-file.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _PoolOutcomes:
    """Outcomes from a pool started now (before any progress-bar thread), in completion order."""

    def __init__(self, jobs: Sequence[CellJob], workers: int) -> None:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else None)
        self.pool = ctx.Pool(min(workers, len(jobs)), initializer=_worker_init)
        logger.debug(
            "pool of %d %s workers (driver pid %d)", workers, ctx.get_start_method(), os.getpid()
        )
        self._it = self.pool.imap_unordered(measure, jobs, chunksize=1)

    def __iter__(self) -> _PoolOutcomes:
        return self

    def __next__(self) -> CellOutcome:
        try:
            return next(self._it)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Terminate the workers: cells still running are abandoned (idempotent)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


def _in_process(jobs: Sequence[CellJob]) -> Iterator[CellOutcome]:
    for job in jobs:
        yield measure(job, keep_exception=True)


def run_local(jobs: Sequence[CellJob], workers: int = 1) -> Iterator[CellOutcome]:
    """Outcomes of ``jobs`` in completion order: in this process, or in ``workers`` forked ones.

    The pool starts at once; closing the returned iterator (``.close()``) terminates it: cells
    still running are abandoned and not stored.
    """
    if workers <= 1 or len(jobs) <= 1:
        return _in_process(jobs)
    return _PoolOutcomes(jobs, workers)
