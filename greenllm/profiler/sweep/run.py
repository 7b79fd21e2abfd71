"""Resumable profiling sweeps (paper, Section 4.2): cells measured on a backend into the store.

>>> from greenllm.profiler.sweep.run import SweepGrid, parse_configurations, run_sweep
>>> grid = SweepGrid.build(parse_configurations("standalone,dsd:T4:llama-1b"),
...                        ["sharegpt"], qps=[1.0, 2.0])           # doctest: +SKIP
>>> with ProfileStore("profiles.sqlite") as store:                  # doctest: +SKIP
...     report = run_sweep(grid.cells(fraction=0.5), store, backend="sim", n_requests=200)

Resume: cells are keyed by the store's cell id (application, size, QPS, configuration, backend,
run id); those already stored are skipped, so rerunning the same call after Ctrl-C or SIGKILL
measures only what is missing. Records are written in small batches, one transaction each, so a
kill leaves whole batches. Cells whose model does not fit (:class:`InfeasibleError`) are listed
in a JSON sidecar beside the store (``<store>.infeasible.json``) and not retried unless
``retry_infeasible=True``. Details: ``docs/sweeps.md``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store.records import cell_id
from greenllm.profiler.sweep.execute import CellJob, CellOutcome, close_backends, run_local
from greenllm.profiler.sweep.grid import (
    Cell,
    SweepGrid,
    legacy_configuration_id,
)
from greenllm.profiler.sweep.progress import SweepProgress

__all__ = [
    "SweepInterrupted",
    "SweepReport",
    "infeasible_sidecar_path",
    "run_sweep",
]

logger = logging.getLogger(__name__)

DEFAULT_REQUESTS = 300
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,127}$")


@dataclass(frozen=True)
class SweepReport:
    """What one :func:`run_sweep` call did. ``total = already_done + measured + infeasible +
    failed + remaining``."""

    backend: str
    run_id: str
    total: int  # distinct cells asked for
    already_done: int  # found in the store: reused, not measured again
    measured: int  # measured and stored by this call
    infeasible: int  # the model does not fit (found now or listed in the sidecar)
    failed: int  # ProfileError / WorkerError / lost Ray task: not stored, retried on resume
    remaining: int  # not processed because the sweep was interrupted
    interrupted: bool
    seconds: float
    failures: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every cell is stored or known infeasible."""
        return self.remaining == 0 and self.failed == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failures": list(self.failures), "complete": self.complete}


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: every finished cell was stored first; ``report`` says how far."""

    def __init__(self, report: SweepReport) -> None:
        super().__init__(
            f"sweep interrupted: {report.measured} cells stored now, "
            f"{report.remaining} left; run the same sweep again to resume"
        )
        self.report = report


def infeasible_sidecar_path(store_path: str | os.PathLike[str]) -> Path | None:
    """``<store>.infeasible.json`` beside a store file (None for ``:memory:``)."""
    text = str(store_path)
    return None if text == ":memory:" else Path(text + ".infeasible.json")


class _Sidecar:
    """Infeasible cells by cell id, merged into the JSON file atomically at each flush."""

    def __init__(self, path: Path | None, backend: str, run_id: str) -> None:
        self.path, self.backend, self.run_id = path, backend, run_id
        self.cells: dict[str, dict[str, Any]] = self._read()
        self.dirty: dict[str, dict[str, Any]] = {}
        self.renamed: set[str] = set()

    def adopt_legacy(self, cells: Mapping[str, Cell]) -> None:
        """Move entries keyed by greenllm 0.1.0's cell ids to the ids of ``cells`` (by id)."""
        stale = set(self.cells) - set(cells)
        if not stale:
            return
        for cid, cell in cells.items():
            w, c = cell.workload, cell.configuration
            old = cell_id(w.application, w.request_size, w.qps, legacy_configuration_id(c),
                          self.backend, self.run_id)  # fmt: skip
            if old in stale and cid not in self.cells:
                entry = {**self.cells.pop(old), "configuration_id": c.id}
                self.cells[cid] = self.dirty[cid] = entry
                self.renamed.add(old)

    def _read(self) -> dict[str, dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            return dict(data["cells"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning(
                "ignoring unreadable %s (%s): infeasible cells will be retried", self.path, err
            )
            return {}

    def add(self, cell_id: str, cell: Cell, reason: str) -> None:
        w = cell.workload
        entry = {
            "backend": self.backend,
            "run_id": self.run_id,
            "application": w.application,
            "size": cell.row[1],
            "qps": w.qps,
            "configuration": cell.configuration.label,
            "configuration_id": cell.configuration.id,
            "target_model": cell.configuration.target_model,
            "reason": reason,
        }
        self.cells[cell_id] = self.dirty[cell_id] = entry

    def flush(self) -> None:
        if not self.dirty or self.path is None:
            self.dirty.clear()
            return
        merged = {k: v for k, v in self._read().items() if k not in self.renamed}
        merged.update(self.dirty)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps({"version": 1, "cells": merged}, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ProfileError(
                f"cannot write {self.path}: {err}; check the folder is writable"
            ) from err
        self.dirty.clear()


def _check(
    backend: str,
    run_id: str,
    seed: int,
    workers: int,
    batch_size: int,
    n_requests: int | None,
    duration_s: float | None,
    executor: str,
) -> None:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ConfigError(
            f"run_id = {run_id!r}: 1-128 characters of letters, digits and _.:+- "
            "starting with a letter or digit"
        )
    for name, value, lo in (
        ("seed", seed, 0),
        ("workers", workers, 1),
        ("batch_size", batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= {lo}")
    if n_requests is not None and duration_s is not None:
        raise ConfigError("give n_requests (--requests) or duration_s (--duration-s), not both")
    if n_requests is not None and (
        isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1
    ):
        raise ConfigError(f"n_requests = {n_requests!r}: must be an integer >= 1")
    if duration_s is not None and not (
        isinstance(duration_s, (int, float)) and 0 < duration_s < float("inf")
    ):
        raise ConfigError(f"duration_s = {duration_s!r}: must be a number of seconds > 0")
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor = {executor!r}: must be 'local' or 'ray'")


def run_sweep(
    cells: Iterable[Cell] | SweepGrid,
    store: Any,
    *,
    backend: str = "sim",
    backend_options: Mapping[str, Any] | None = None,
    n_requests: int | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    run_id: str = "default",
    workers: int = 1,
    executor: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    resources: Callable[[Any, str], dict[str, float]] | None = None,
    progress: bool | Callable[[int, int], None] = False,
    batch_size: int = 16,
    flush_interval_s: float = 2.0,
    retry_infeasible: bool = False,
) -> SweepReport:
    """Measure every cell of ``cells`` not yet in ``store`` on ``backend``; return a report.

    Each cell serves ``n_requests`` Poisson arrivals (default 300) or arrivals for
    ``duration_s``, seeded by ``seed``. ``workers > 1`` forks local processes;
    ``executor="ray"`` runs one Ray task per cell (``resources`` maps a configuration to the
    task's custom resources, default :func:`ray_resources`). Records are stored by the calling
    process every ``batch_size`` cells or ``flush_interval_s`` seconds, one transaction each.
    ``progress``: True for a bar on stderr (tqdm if installed), or a callable ``(i, n)``.
    Ctrl-C stores what is finished and raises :class:`SweepInterrupted`; rerun to resume.
    """
    n_req = None if duration_s is not None else n_requests
    if n_req is None and duration_s is None:
        n_req = DEFAULT_REQUESTS
    _check(backend, run_id, seed, workers, batch_size, n_requests, duration_s, executor)
    t0 = time.perf_counter()
    if executor == "local":
        from greenllm.backends import backend_class

        backend_class(backend)  # unknown name or missing extra: fail before any work
    all_cells = list(cells.cells() if isinstance(cells, SweepGrid) else cells)
    by_id = {c.cell_id(backend, run_id): c for c in all_cells}
    done = store.done_cells(backend=backend, run_id=run_id) & set(by_id)
    sidecar = _Sidecar(infeasible_sidecar_path(store.path), backend, run_id)
    sidecar.adopt_legacy(by_id)
    known_bad = set() if retry_infeasible else set(sidecar.cells) & set(by_id) - done
    options = tuple(sorted((backend_options or {}).items()))
    jobs = [
        CellJob(c, cid, backend, run_id, seed, n_req, duration_s, options)
        for cid, c in by_id.items()
        if cid not in done and cid not in known_bad
    ]
    counts = {"ok": 0, "infeasible": 0, "failed": 0}
    failures: list[str] = []
    batch: list[Any] = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if batch:
            store.put_many(batch)
            batch.clear()
        sidecar.flush()
        last_flush = time.monotonic()

    def report(interrupted: bool) -> SweepReport:
        processed = sum(counts.values())
        return SweepReport(
            backend,
            run_id,
            len(by_id),
            len(done),
            counts["ok"],
            counts["infeasible"] + len(known_bad),
            counts["failed"],
            len(jobs) - processed,
            interrupted,
            time.perf_counter() - t0,
            tuple(failures[:10]),
        )

    logger.info(
        "sweep %s/%s: %d cells, %d stored, %d known infeasible, %d to measure",
        backend,
        run_id,
        len(by_id),
        len(done),
        len(known_bad),
        len(jobs),
    )
    if executor == "ray":
        from greenllm.profiler.sweep.ray import run_ray

        outcomes: Any = run_ray(jobs, address=ray_address, resources=resources)
    else:
        outcomes = run_local(jobs, workers)  # a pool forks now, before the bar's thread starts
    bar = SweepProgress(len(jobs), initial=len(done) + len(known_bad), desc=f"profile {backend}")
    if progress is True and jobs:
        bar.start()
    interrupted = False
    try:
        for out in outcomes:
            _record(out, by_id[out.cell_id], batch, sidecar, counts, failures)
            if len(batch) >= batch_size or time.monotonic() - last_flush >= flush_interval_s:
                flush()
            bar.update("ok" if out.status == "ok" else out.status)
            if callable(progress):
                progress(sum(counts.values()), len(jobs))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        outcomes.close()
        bar.close()
        try:
            flush()
        finally:
            if executor == "local":
                close_backends()
    result = report(interrupted)
    logger.info("sweep %s/%s: %s", backend, run_id, result)
    if interrupted:
        raise SweepInterrupted(result)
    return result


def _record(
    out: CellOutcome,
    cell: Cell,
    batch: list[Any],
    sidecar: _Sidecar,
    counts: dict[str, int],
    failures: list[str],
) -> None:
    """File one outcome: a record into the batch, an infeasible cell into the sidecar."""
    if out.status == "error":
        out.raise_error(cell.label)
    if out.status == "ok":
        batch.append(out.record)
    elif out.status == "infeasible":
        sidecar.add(out.cell_id, cell, out.message)
        logger.info("infeasible: %s: %s", cell.label, out.message)
    else:
        failures.append(f"{cell.label}: {out.message}")
    counts[out.status] += 1
