"""Profile records to and from the store's SQLite rows (``profiles`` + ``gpu_usage``).

:class:`RowCache` turns a :class:`~greenllm.profiler.store.records.ProfileRecord` into one
``profiles`` row (:data:`COLUMNS` order) and its ``gpu_usage`` rows; :class:`ModelCache` turns
them back. Both serialise or parse each distinct workload / configuration once per batch, which
is most of the cost of reading or writing many cells.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import numbers
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from greenllm.config import (
    ConfigKind,
    Configuration,
    RequestSize,
    RequestSizeDistribution,
    Workload,
)
from greenllm.errors import ConfigError
from greenllm.profiler.store.records import ProfileRecord, cell_id, size_label

__all__ = [
    "COLUMNS",
    "GPU_COLUMNS",
    "ORDER",
    "ModelCache",
    "RowCache",
    "gc_paused",
    "group_rows",
    "where_clause",
]

_LAT = ("count", "mean_s", "p50_s", "p90_s", "p99_s")
_CARBON = ("embodied_g", "operational_g", "intensity_g_per_kwh", "lifetime_years")
_PROV = ("created_utc", "backend_version", "greenllm_version", "python_version", "host")
COLUMNS = (
    *("cell_id", "application", "size_label", "qps", "configuration_id", "kind", "backend"),
    *("run_id", "workload_json", "configuration_json", "n_requests", "duration_s"),
    *(f"ttft_{k}" for k in _LAT),
    *(f"tpot_{k}" for k in _LAT),
    *("slo_attainment", "ttft_attainment", "tpot_attainment"),
    *("input_tokens", "output_tokens", "link_bytes"),
    *(f"carbon_{k}" for k in _CARBON),
    *_PROV,
    "extra_json",
    "energy_source",
)
GPU_COLUMNS = ("gpu", "energy_j", "busy_s", "allocated_s")
#: The stable order of every read (``p`` is the ``profiles`` table).
ORDER = "p.application, p.size_label, p.qps, p.configuration_id, p.backend, p.run_id, p.cell_id"
_SCALARS = (
    *("backend", "run_id", "n_requests", "duration_s", "slo_attainment", "ttft_attainment"),
    *("tpot_attainment", "input_tokens", "output_tokens", "link_bytes", "energy_source"),
)

_I = {c: i for i, c in enumerate(COLUMNS)}
_I_TTFT, _I_TPOT, _I_CARBON, _I_PROV = (
    _I[c] for c in ("ttft_count", "tpot_count", "carbon_embodied_g", "created_utc")
)

T = TypeVar("T")


class RowCache:
    """Serialise each distinct workload / configuration / provenance once per batch.

    Keyed by ``id()``; each entry holds its object so that the id cannot be reused meanwhile.
    """

    def __init__(self) -> None:
        self.parts: dict[int, tuple[Any, tuple[Any, ...]]] = {}

    def _get(self, obj: Any, make: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        key = id(obj)
        if key not in self.parts:
            self.parts[key] = (obj, make())
        return self.parts[key][1]

    def rows(self, rec: ProfileRecord) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """The ``profiles`` row of ``rec`` and its ``gpu_usage`` rows."""
        w, c, p, cb = rec.workload, rec.configuration, rec.provenance, rec.carbon
        wl = self._get(
            w, lambda: (w.application, size_label(w.request_size), w.qps, w.model_dump_json())
        )
        cf = self._get(c, lambda: (c.id, c.kind.value, c.model_dump_json()))
        pv = self._get(
            p,
            lambda: (
                p.created_utc.isoformat(),
                p.backend_version,
                p.greenllm_version,
                p.python_version,
                p.host,
                json.dumps(p.extra, sort_keys=True),
            ),
        )
        cid = cell_id(w.application, w.request_size, w.qps, cf[0], rec.backend, rec.run_id)
        t, d = rec.ttft, rec.tpot
        row = (
            *(cid, wl[0], wl[1], wl[2], cf[0], cf[1], rec.backend, rec.run_id, wl[3], cf[2]),
            *(rec.n_requests, rec.duration_s, t.count, t.mean_s, t.p50_s, t.p90_s, t.p99_s),
            *(d.count, d.mean_s, d.p50_s, d.p90_s, d.p99_s),
            *(rec.slo_attainment, rec.ttft_attainment, rec.tpot_attainment),
            *(rec.input_tokens, rec.output_tokens, rec.link_bytes),
            *(
                (cb.embodied_g, cb.operational_g, cb.intensity_g_per_kwh, cb.lifetime_years)
                if cb is not None
                else (None,) * 4
            ),
            *pv,
            rec.energy_source,
        )
        gpus = [
            (cid, i, g.gpu, g.energy_j, g.busy_s, g.allocated_s) for i, g in enumerate(rec.gpus)
        ]
        return row, gpus


class ModelCache:
    """Builds records from rows; parses each distinct workload / configuration JSON once."""

    def __init__(self) -> None:
        self.workloads: dict[str, Any] = {}
        self.configurations: dict[str, Any] = {}

    def record(self, row: tuple[Any, ...], gpus: list[dict[str, Any]]) -> ProfileRecord:
        """The record of one ``profiles`` row (:data:`COLUMNS` order) and its GPU dicts."""
        wj, cj = row[_I["workload_json"]], row[_I["configuration_json"]]
        if wj not in self.workloads:
            self.workloads[wj] = _parse_model(Workload, wj, "workload_json")
        if cj not in self.configurations:
            self.configurations[cj] = _parse_model(Configuration, cj, "configuration_json")
        carbon = row[_I_CARBON : _I_CARBON + len(_CARBON)]
        data = {k: row[_I[k]] for k in _SCALARS}
        data.update(
            workload=self.workloads[wj],
            configuration=self.configurations[cj],
            ttft=dict(zip(_LAT, row[_I_TTFT : _I_TTFT + len(_LAT)], strict=True)),
            tpot=dict(zip(_LAT, row[_I_TPOT : _I_TPOT + len(_LAT)], strict=True)),
            gpus=gpus,
            carbon=None if carbon[0] is None else dict(zip(_CARBON, carbon, strict=True)),
            provenance={
                **dict(zip(_PROV, row[_I_PROV : _I_PROV + len(_PROV)], strict=True)),
                "created_utc": _parse_time(row[_I_PROV], "created_utc"),
                "extra": _parse_json(row[_I["extra_json"]], "extra_json"),
            },
        )
        return ProfileRecord.model_validate(data)


def _column(value: Any, column: str, want: str) -> ConfigError:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
    return ConfigError(f"column {column} = {shown}: not {want}")


def _parse_model(cls: Any, text: Any, column: str) -> Any:
    if not isinstance(text, (str, bytes)):
        raise _column(text, column, "JSON text")
    try:
        return cls.model_validate_json(text)
    except RecursionError as err:
        raise _column(text, column, "JSON nested less deeply") from err
    except ConfigError as err:
        raise ConfigError(f"column {column}: {err}") from err


def _parse_time(text: Any, column: str) -> datetime:
    if not isinstance(text, str):
        raise _column(text, column, "an ISO 8601 timestamp")
    try:
        return datetime.fromisoformat(text)
    except (ValueError, OverflowError) as err:
        raise _column(text, column, "an ISO 8601 timestamp") from err


def _parse_json(text: Any, column: str) -> Any:
    if not isinstance(text, (str, bytes)):
        raise _column(text, column, "JSON text")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, too deep
        raise _column(text, column, f"valid JSON ({type(err).__name__})") from err


def group_rows(
    rows: Iterable[tuple[Any, ...]], n: int, gpu: Callable[[tuple[Any, ...]], T]
) -> list[tuple[tuple[Any, ...], list[T]]]:
    """Group a ``profiles LEFT JOIN gpu_usage`` result by cell (rows sorted by cell id).

    Each joined row is ``n`` cell columns (cell id first) then GPU columns, or NULLs for a cell
    without GPUs; returns ``(cell columns, [gpu(gpu columns), ...])`` per cell.
    """
    cells: list[tuple[tuple[Any, ...], list[T]]] = []
    for row in rows:
        if not cells or cells[-1][0][0] != row[0]:
            cells.append((row[:n], []))
        if row[n] is not None:
            cells[-1][1].append(gpu(row[n:]))
    return cells


def where_clause(
    application: str | None = None,
    configuration_id: str | Configuration | None = None,
    backend: str | None = None,
    run_id: str | None = None,
    kind: ConfigKind | str | None = None,
    request_size: RequestSize | RequestSizeDistribution | str | None = None,
    qps: float | None = None,
) -> tuple[str, list[Any]]:
    """``(" WHERE ...", params)`` selecting the cells that match every given filter (QPS to
    6 significant digits); ``("", [])`` without filters. ``p`` is the ``profiles`` table."""
    clauses: list[str] = []
    params: list[Any] = []
    for name, value, types in (
        ("application", application, (str,)),
        ("configuration_id", configuration_id, (str, Configuration)),
        ("backend", backend, (str,)),
        ("run_id", run_id, (str,)),
        ("kind", kind, (str, ConfigKind)),
        ("request_size", request_size, (str, RequestSize, RequestSizeDistribution)),
    ):
        if value is not None and not isinstance(value, types):
            want = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{name} = {value!r}: must be a {want}, not {type(value).__name__}")
    if qps is not None and (
        isinstance(qps, bool) or not isinstance(qps, numbers.Real) or not 0 < qps < math.inf
    ):
        raise ConfigError(f"qps = {qps!r}: must be a positive finite number of requests per second")
    if kind is not None:
        try:
            kind = ConfigKind(kind).value
        except ValueError:
            allowed = ", ".join(k.value for k in ConfigKind)
            raise ConfigError(f"kind = {kind!r}: unknown (allowed: {allowed})") from None
    if isinstance(configuration_id, Configuration):
        configuration_id = configuration_id.id
    if isinstance(request_size, (RequestSize, RequestSizeDistribution)):
        request_size = size_label(request_size)
    if isinstance(application, str):
        application = application.strip().lower()
    for col, val in (
        ("application", application),
        ("configuration_id", configuration_id),
        ("backend", backend),
        ("run_id", run_id),
        ("kind", kind),
        ("size_label", request_size),
    ):
        if val is not None:
            clauses.append(f"p.{col} = ?")
            params.append(val)
    if qps is not None:
        clauses.append("p.qps BETWEEN ? AND ?")
        params += [qps * (1 - 5e-6), qps * (1 + 5e-6)]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects (its passes cost ~30% of a read)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
