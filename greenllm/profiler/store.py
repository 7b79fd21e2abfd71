"""The profile database: :class:`ProfileStore`, SQLite in WAL mode (paper, Sections 4.2-4.3).

One row per cell (:class:`~greenllm.profiler.records.ProfileRecord`), upserted by cell id, so a
resumed sweep never duplicates a row; per-GPU numbers in a child table; ``put_many`` is one
transaction (all of a batch or none of it, even if the writer is killed). The schema is versioned
in ``schema_version`` and upgraded on open by the functions in :data:`MIGRATIONS`. Layout,
guarantees and the export formats: ``docs/profile-store.md``.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from greenllm.config import (
    ConfigKind,
    Configuration,
    RequestSize,
    RequestSizeDistribution,
    Workload,
)
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.records import CellUsage, GPURow, ProfileRecord, cell_id, size_label

__all__ = ["ENV_VAR", "MIGRATIONS", "ProfileStore", "default_store_path"]

logger = logging.getLogger(__name__)

ENV_VAR = "GREENLLM_STORE"
_FORMAT = "greenllm-profiles"
_LAT = ("count", "mean_s", "p50_s", "p90_s", "p99_s")
_CARBON = ("embodied_g", "operational_g", "intensity_g_per_kwh", "lifetime_years")
_PROV = ("created_utc", "backend_version", "greenllm_version", "python_version", "host")
_COLUMNS = (
    *("cell_id", "application", "size_label", "qps", "configuration_id", "kind", "backend"),
    *("run_id", "workload_json", "configuration_json", "n_requests", "duration_s"),
    *(f"ttft_{k}" for k in _LAT),
    *(f"tpot_{k}" for k in _LAT),
    *("slo_attainment", "ttft_attainment", "tpot_attainment"),
    *("input_tokens", "output_tokens", "link_bytes"),
    *(f"carbon_{k}" for k in _CARBON),
    *_PROV,
    "extra_json",
)
_GPU_COLUMNS = ("gpu", "energy_j", "busy_s", "allocated_s")
_ORDER = "p.application, p.size_label, p.qps, p.configuration_id, p.backend, p.run_id, p.cell_id"


def default_store_path() -> Path:
    """``$GREENLLM_STORE``, else ``<user data folder>/greenllm/profiles.sqlite``.

    The data folder is ``$XDG_DATA_HOME`` (default ``~/.local/share``) on Linux,
    ``~/Library/Application Support`` on macOS and ``%LOCALAPPDATA%`` on Windows.
    """
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    home = Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "greenllm" / "profiles.sqlite"


# --- migrations: never edit a released one; append a new function instead -------------------


_V1_PROFILES = """CREATE TABLE profiles (
    cell_id TEXT PRIMARY KEY NOT NULL,
    application TEXT NOT NULL, size_label TEXT NOT NULL, qps REAL NOT NULL,
    configuration_id TEXT NOT NULL, kind TEXT NOT NULL, backend TEXT NOT NULL, run_id TEXT NOT NULL,
    workload_json TEXT NOT NULL, configuration_json TEXT NOT NULL,
    n_requests INTEGER NOT NULL, duration_s REAL NOT NULL,
    ttft_count INTEGER NOT NULL,
    ttft_mean_s REAL, ttft_p50_s REAL, ttft_p90_s REAL, ttft_p99_s REAL,
    tpot_count INTEGER NOT NULL,
    tpot_mean_s REAL, tpot_p50_s REAL, tpot_p90_s REAL, tpot_p99_s REAL,
    slo_attainment REAL NOT NULL, ttft_attainment REAL NOT NULL, tpot_attainment REAL NOT NULL,
    input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, link_bytes INTEGER NOT NULL,
    carbon_embodied_g REAL, carbon_operational_g REAL, carbon_intensity_g_per_kwh REAL,
    carbon_lifetime_years REAL,
    created_utc TEXT NOT NULL, backend_version TEXT NOT NULL, greenllm_version TEXT NOT NULL,
    python_version TEXT NOT NULL, host TEXT NOT NULL, extra_json TEXT NOT NULL)"""

_V1_GPU_USAGE = """CREATE TABLE gpu_usage (
    cell_id TEXT NOT NULL REFERENCES profiles (cell_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, gpu TEXT NOT NULL,
    energy_j REAL NOT NULL, busy_s REAL NOT NULL, allocated_s REAL NOT NULL,
    PRIMARY KEY (cell_id, idx)) WITHOUT ROWID"""


def _v1_tables(conn: sqlite3.Connection) -> None:
    """Version 1: the ``profiles`` table and its per-GPU child table ``gpu_usage``."""
    conn.execute(_V1_PROFILES)
    conn.execute(_V1_GPU_USAGE)


def _v2_indexes(conn: sqlite3.Connection) -> None:
    """Version 2: indexes for the common filters (workload, configuration, backend + run)."""
    conn.execute("CREATE INDEX profiles_by_workload ON profiles (application, size_label, qps)")
    conn.execute("CREATE INDEX profiles_by_configuration ON profiles (configuration_id)")
    conn.execute("CREATE INDEX profiles_by_run ON profiles (backend, run_id)")


#: ``MIGRATIONS[i]`` upgrades a store from version ``i`` to ``i + 1`` inside one transaction.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_tables, _v2_indexes]


# --- record <-> row ---------------------------------------------------------------------------


class _RowCache:
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
        )
        gpus = [
            (cid, i, g.gpu, g.energy_j, g.busy_s, g.allocated_s) for i, g in enumerate(rec.gpus)
        ]
        return row, gpus


_I = {c: i for i, c in enumerate(_COLUMNS)}
_I_TTFT, _I_TPOT, _I_CARBON, _I_PROV = (
    _I[c] for c in ("ttft_count", "tpot_count", "carbon_embodied_g", "created_utc")
)


class _ModelCache:
    """Builds records from rows; parses each distinct workload / configuration JSON once."""

    def __init__(self) -> None:
        self.workloads: dict[str, Any] = {}
        self.configurations: dict[str, Any] = {}

    def record(self, row: tuple[Any, ...], gpus: list[dict[str, Any]]) -> ProfileRecord:
        wj, cj = row[_I["workload_json"]], row[_I["configuration_json"]]
        if wj not in self.workloads:
            self.workloads[wj] = Workload.model_validate_json(wj)
        if cj not in self.configurations:
            self.configurations[cj] = Configuration.model_validate_json(cj)
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
                "created_utc": datetime.fromisoformat(row[_I_PROV]),
                "extra": json.loads(row[_I["extra_json"]]),
            },
        )
        return ProfileRecord.model_validate(data)

    def shared(self, raw: dict[str, Any]) -> dict[str, Any]:
        """``raw`` with its workload / configuration dicts validated once per distinct value."""
        for key, cls, memo in (
            ("workload", Workload, self.workloads),
            ("configuration", Configuration, self.configurations),
        ):
            value = raw.get(key)
            if isinstance(value, dict):
                text = json.dumps(value, sort_keys=True)
                if text not in memo:
                    memo[text] = cls(**value)
                raw = {**raw, key: memo[text]}
        return raw


_SCALARS = (
    *("backend", "run_id", "n_requests", "duration_s", "slo_attainment", "ttft_attainment"),
    *("tpot_attainment", "input_tokens", "output_tokens", "link_bytes"),
)


def _flatten(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Dotted CSV columns: ``ttft.p50_s``, ``gpus.0.energy_j``; ``provenance.extra`` stays JSON."""
    if prefix == "provenance.extra":
        out[prefix] = json.dumps(obj, sort_keys=True)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else k, out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _flatten(v, f"{prefix}.{i}", out)
    elif obj is not None:  # None is every optional field's default: leave the cell empty
        out[prefix] = obj


_UNSET = object()


def _unflatten(row: dict[str, str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    extra: Any = _UNSET
    for key, val in row.items():
        if key is None:
            raise ValueError(f"more fields than the header has columns: {val}")
        if key == "cell_id" or val in (None, ""):
            continue
        if key == "provenance.extra":  # JSON, not dotted columns: kept out of _listify
            try:
                extra = json.loads(val)
            except json.JSONDecodeError as err:
                raise ValueError(f"column {key!r} is not valid JSON: {err}") from err
            continue
        *parents, leaf = key.split(".")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"column {key!r} clashes with column {part!r}")
        node[leaf] = val
    out = _listify(root)
    if extra is not _UNSET:
        out.setdefault("provenance", {})["extra"] = extra
    return out


def _listify(node: Any) -> Any:
    if not isinstance(node, dict) or not node:
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if all(k.isdigit() for k in items):
        if sorted(int(k) for k in items) != list(range(len(items))):
            raise ValueError(f"list columns must be numbered 0..n-1, got {sorted(items)}")
        return [items[str(i)] for i in range(len(items))]
    return items


# --- the store --------------------------------------------------------------------------------


class ProfileStore:
    """SQLite profile database of :class:`ProfileRecord` rows, keyed by cell id.

    ``ProfileStore(path)`` does no I/O; the file (and its folder) are created on :meth:`open`,
    which every method calls on first use. ``path`` defaults to :func:`default_store_path`.
    One object per process and thread; many processes may write the same file at once (writers
    wait up to ``busy_timeout_s`` for each other).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 30.0):
        if not 0 < busy_timeout_s <= 86_400:
            raise ConfigError(f"busy_timeout_s = {busy_timeout_s!r}: must be in (0, 86400] seconds")
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.busy_timeout_s = float(busy_timeout_s)
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._conn else "not opened"
        return f"ProfileStore({str(self.path)!r}, {state})"

    # -- lifecycle --

    def open(self) -> ProfileStore:
        """Create the folder and file if needed, enable WAL, migrate to the current schema."""
        if self._conn is not None:
            return self
        if self._closed:
            raise ProfileError(f"{self!r} was closed: create a new ProfileStore to reopen it")
        memory = str(self.path) == ":memory:"
        with self._translate("open the store"):
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=self.busy_timeout_s, isolation_level=None
            )
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal" and not memory:
                    logger.warning(
                        "%s: journal_mode is %s, not WAL (a network file system?)", self.path, mode
                    )
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
        self._conn = conn
        return self

    def close(self) -> None:
        """Close the connection (idempotent); the store cannot be used afterwards."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._closed = True

    def __enter__(self) -> ProfileStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """Schema version of the open file (equals ``len(MIGRATIONS)`` after :meth:`open`)."""
        with self._translate("read the schema version"):
            return _version(self._connection(), self.path)

    # -- writing --

    def put(self, record: ProfileRecord) -> None:
        """Insert or replace one record (keyed by ``record.cell_id``)."""
        self.put_many([record])

    def put_many(self, records: Iterable[ProfileRecord]) -> int:
        """Insert or replace records in one transaction: all are stored or none. Returns the count.

        Within a batch, a later record with the same cell id wins.
        """
        rows: dict[str, tuple[Any, ...]] = {}
        gpus: dict[str, list[tuple[Any, ...]]] = {}
        cache = _RowCache()
        with _gc_paused():
            for i, rec in enumerate(records):
                if not isinstance(rec, ProfileRecord):
                    raise ConfigError(
                        f"put_many item {i} is a {type(rec).__name__}, not a ProfileRecord"
                    )
                row, gpu_rows = cache.rows(rec)
                rows[row[0]], gpus[row[0]] = row, gpu_rows
        if not rows:
            return 0
        marks = ", ".join("?" * len(_COLUMNS))
        with self._transaction("write records") as conn:
            conn.executemany("DELETE FROM gpu_usage WHERE cell_id = ?", ((c,) for c in rows))
            conn.executemany(
                f"INSERT OR REPLACE INTO profiles ({', '.join(_COLUMNS)}) VALUES ({marks})",
                rows.values(),
            )
            conn.executemany(
                "INSERT INTO gpu_usage VALUES (?, ?, ?, ?, ?, ?)",
                (g for gs in gpus.values() for g in gs),
            )
        logger.debug("%s: wrote %d records", self.path, len(rows))
        return len(rows)

    # -- reading --

    def has(self, cell_id: str) -> bool:
        """Whether a record with this cell id is stored."""
        with self._translate("look up a cell"):
            q = "SELECT 1 FROM profiles WHERE cell_id = ?"
            return self._connection().execute(q, (cell_id,)).fetchone() is not None

    def __contains__(self, item: object) -> bool:
        return self.has(item.cell_id if isinstance(item, ProfileRecord) else str(item))

    def __len__(self) -> int:
        with self._translate("count records"):
            return int(self._connection().execute("SELECT COUNT(*) FROM profiles").fetchone()[0])

    def get(self, cell_id: str) -> ProfileRecord | None:
        """The record with this cell id, or None."""
        found = self._select("p.cell_id = ?", [cell_id])
        return found[0] if found else None

    def done_cells(self, backend: str | None = None, run_id: str | None = None) -> set[str]:
        """Cell ids already stored (optionally of one backend / run): skip these when resuming."""
        where, params = _where(backend=backend, run_id=run_id)
        with self._translate("list done cells"):
            rows = self._connection().execute(f"SELECT cell_id FROM profiles p{where}", params)
            return {r[0] for r in rows}

    def query(
        self,
        application: str | None = None,
        configuration_id: str | Configuration | None = None,
        backend: str | None = None,
        run_id: str | None = None,
        kind: ConfigKind | str | None = None,
        request_size: RequestSize | RequestSizeDistribution | str | None = None,
        qps: float | None = None,
    ) -> list[ProfileRecord]:
        """Records matching every given filter (QPS to 6 significant digits), in a stable order."""
        where, params = _where(
            application, configuration_id, backend, run_id, kind, request_size, qps
        )
        return self._select(where.removeprefix(" WHERE "), params)

    def usage(self, **filters: Any) -> list[CellUsage]:
        """Per-cell keys, SLO attainment and per-GPU energy/time in one query (for matrices).

        Takes the filters of :meth:`query`; returns light named tuples, no validation.
        """
        where, params = _where(**filters)
        keys = ", ".join(f"p.{c}" for c in CellUsage._fields[:-1])
        sql = (
            f"SELECT {keys}, g.gpu, g.energy_j, g.busy_s, g.allocated_s"
            f" FROM profiles p LEFT JOIN gpu_usage g ON g.cell_id = p.cell_id{where}"
            f" ORDER BY {_ORDER}, g.idx"
        )
        n = len(CellUsage._fields) - 1
        cells: list[tuple[tuple[Any, ...], list[GPURow]]] = []
        with self._translate("read usage"), _gc_paused():
            for row in self._connection().execute(sql, params):
                if not cells or cells[-1][0][0] != row[0]:
                    cells.append((row[:n], []))
                if row[n] is not None:
                    cells[-1][1].append(GPURow._make(row[n:]))
            return [CellUsage(*keys, tuple(gpus)) for keys, gpus in cells]

    def configurations(self, **filters: Any) -> dict[str, Configuration]:
        """The distinct configurations of the matching cells, by id (pairs with :meth:`usage`)."""
        where, params = _where(**filters)
        sql = f"SELECT DISTINCT configuration_id, configuration_json FROM profiles p{where}"
        with self._translate("read configurations"):
            rows = self._connection().execute(sql, params).fetchall()
        try:
            return {cid: Configuration.model_validate_json(text) for cid, text in rows}
        except ConfigError as err:
            raise ProfileError(f"{self.path}: a stored configuration is invalid ({err})") from err

    def _select(self, where: str, params: list[Any]) -> list[ProfileRecord]:
        sql = (
            f"SELECT {', '.join('p.' + c for c in _COLUMNS)}, "
            f"{', '.join('g.' + c for c in _GPU_COLUMNS)}"
            f" FROM profiles p LEFT JOIN gpu_usage g ON g.cell_id = p.cell_id"
            f"{' WHERE ' + where if where else ''} ORDER BY {_ORDER}, g.idx"
        )
        with self._translate("read records"):
            rows = self._connection().execute(sql, params).fetchall()
        with _gc_paused():
            return self._build(rows)

    def _build(self, rows: list[tuple[Any, ...]]) -> list[ProfileRecord]:
        n = len(_COLUMNS)
        grouped: list[tuple[tuple[Any, ...], list[dict[str, Any]]]] = []
        for row in rows:
            if not grouped or grouped[-1][0][0] != row[0]:
                grouped.append((row[:n], []))
            if row[n] is not None:
                grouped[-1][1].append(dict(zip(_GPU_COLUMNS, row[n:], strict=True)))
        cache = _ModelCache()
        out = []
        for prow, gpus in grouped:
            try:
                out.append(cache.record(prow, gpus))
            except ConfigError as err:
                raise ProfileError(
                    f"{self.path}: stored row {prow[0]} is invalid ({err}); "
                    "was the file edited by hand? delete or fix that row"
                ) from err
        return out

    # -- export / import --

    def export_json(self, path: str | os.PathLike[str], **filters: Any) -> int:
        """Write records (all, or those matching :meth:`query` filters) as JSON; return how many."""
        records = self.query(**filters)
        from greenllm import __version__

        meta = {
            "format": _FORMAT,
            "format_version": 1,
            "greenllm_version": __version__,
            "exported_utc": datetime.now(timezone.utc).isoformat(),
        }

        def write(f: Any) -> None:  # one record per line; json.dumps without indent is C-fast
            f.write(json.dumps(meta)[:-1] + ', "records": [\n')
            f.write(
                ",\n".join(
                    json.dumps({"cell_id": r.cell_id, **r.model_dump(mode="json")}, allow_nan=False)
                    for r in records
                )
            )
            f.write("\n]}\n")

        self._write_atomic(Path(path), write)
        return len(records)

    def export_csv(self, path: str | os.PathLike[str], **filters: Any) -> int:
        """Write records as CSV, one row each, dotted columns (``ttft.p50_s``, ``gpus.1.gpu``)."""
        records = self.query(**filters)
        flat: list[dict[str, Any]] = []
        for r in records:
            row: dict[str, Any] = {"cell_id": r.cell_id}
            _flatten(r.model_dump(mode="json"), "", row)
            flat.append(row)
        header = list(dict.fromkeys(k for row in flat for k in row)) or ["cell_id"]

        def write(f: Any) -> None:
            w = csv.DictWriter(f, fieldnames=header, restval="", lineterminator="\n")
            w.writeheader()
            w.writerows(flat)

        self._write_atomic(Path(path), write)
        return len(records)

    def import_json(self, path: str | os.PathLike[str]) -> int:
        """Validate every record of a JSON export, then store them all in one transaction."""
        src = Path(path)
        try:
            doc = json.loads(src.read_text(encoding="utf-8"))
        except OSError as err:
            raise ProfileError(f"cannot read {src}: {err}") from err
        except json.JSONDecodeError as err:
            raise ProfileError(
                f"{src}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
            ) from err
        if isinstance(doc, dict):
            if doc.get("format") != _FORMAT or not isinstance(doc.get("records"), list):
                raise ProfileError(
                    f"{src}: not a greenllm profile export "
                    f"(want format {_FORMAT!r} and a records list)"
                )
            if doc.get("format_version", 1) != 1:
                raise ProfileError(
                    f"{src}: format_version {doc['format_version']} is newer: upgrade greenllm"
                )
            doc = doc["records"]
        if not isinstance(doc, list):
            raise ProfileError(f"{src}: expected a list of records or a {_FORMAT!r} document")
        records, cache = [], _ModelCache()
        for i, raw in enumerate(doc, start=1):
            if not isinstance(raw, dict):
                raise ProfileError(
                    f"{src}: record {i} is a {type(raw).__name__}, not an object; nothing imported"
                )
            raw = {k: v for k, v in raw.items() if k != "cell_id"}
            records.append(self._validate(raw, f"{src}: record {i} of {len(doc)}", cache))
        return self.put_many(records)

    def import_csv(self, path: str | os.PathLike[str]) -> int:
        """Validate every row of a CSV export, then store them all in one transaction."""
        src = Path(path)
        records, cache = [], _ModelCache()
        try:
            with src.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                for row in reader:
                    where = f"{src} line {reader.line_num}"
                    try:
                        raw = _unflatten(row)
                    except ValueError as err:
                        raise ProfileError(f"{where}: {err}; nothing imported") from err
                    records.append(self._validate(raw, where, cache))
        except OSError as err:
            raise ProfileError(f"cannot read {src}: {err}") from err
        except (csv.Error, UnicodeDecodeError) as err:
            raise ProfileError(f"{src}: not a readable CSV file: {err}") from err
        return self.put_many(records)

    @staticmethod
    def _validate(raw: dict[str, Any], where: str, cache: _ModelCache) -> ProfileRecord:
        try:
            return ProfileRecord.model_validate(cache.shared(raw))
        except ConfigError as err:
            raise ProfileError(f"{where}: {err}; fix or remove it (nothing was imported)") from err

    def _write_atomic(self, dest: Path, write: Callable[[Any], None]) -> None:
        tmp = dest.with_name(dest.name + ".tmp")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                write(f)
            tmp.replace(dest)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise ProfileError(
                f"cannot write {dest}: {err}; check the folder exists and is writable"
            ) from err

    # -- plumbing --

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        with self._translate(action):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as err:
            raise ProfileError(_explain(self.path, action, err, self.busy_timeout_s)) from err
        except OSError as err:
            raise ProfileError(
                f"cannot {action} at {self.path}: {err}; check that the folder is writable, "
                f"or pass another path (argument or ${ENV_VAR})"
            ) from err

    def _migrate(self, conn: sqlite3.Connection) -> None:
        migrations = MIGRATIONS
        if _version(conn, self.path) == len(migrations):
            return
        conn.execute("BEGIN IMMEDIATE")  # one migrator at a time; re-read under the lock
        try:
            current = _version(conn, self.path)
            _check_not_newer(current, len(migrations), self.path)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " applied_utc TEXT NOT NULL, greenllm_version TEXT NOT NULL)"
            )
            from greenllm import __version__

            for v in range(current, len(migrations)):
                try:
                    migrations[v](conn)
                except Exception as err:
                    raise ProfileError(
                        f"{self.path}: migrating the schema from version {v} to {v + 1} "
                        f"failed ({err}); "
                        f"the store is unchanged at version {current}: report this as a bug"
                    ) from err
                now = datetime.now(timezone.utc).isoformat()
                conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)", (v + 1, now, __version__)
                )
                logger.info("%s: schema migrated to version %d", self.path, v + 1)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small objects (its passes cost ~30% of a read)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _version(conn: sqlite3.Connection, path: Path) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables - {"sqlite_sequence", "sqlite_stat1"}:
            raise ProfileError(
                f"{path} is a SQLite database but not a greenllm profile store "
                f"(tables: {', '.join(sorted(tables))}): pass another path or set ${ENV_VAR}"
            )
        return 0
    version = int(
        conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
    )
    _check_not_newer(version, len(MIGRATIONS), path)
    return version


def _check_not_newer(version: int, latest: int, path: Path) -> None:
    if version > latest:
        from greenllm import __version__

        raise ProfileError(
            f"{path} has schema version {version}, newer than this greenllm {__version__} knows "
            f"({latest}): upgrade greenllm (pip install -U greenllm) or use another store path"
        )


def _explain(path: Path, action: str, err: sqlite3.Error, timeout_s: float) -> str:
    msg = str(err)
    low = msg.lower()
    if "not a database" in low or "malformed" in low:
        fix = (
            "it is not a SQLite database or is corrupt: move it away, "
            f"or pass another path (argument or ${ENV_VAR})"
        )
    elif "locked" in low or "busy" in low:
        fix = (
            f"another process held the lock for over {timeout_s:g} s: "
            "retry, stop the other writer or raise busy_timeout_s"
        )
    elif "readonly" in low or "read-only" in low:
        fix = "the file or its folder is read-only: fix the permissions or pass a writable path"
    elif "unable to open" in low:
        fix = (
            f"the file cannot be opened: check the folder exists and is writable, or set ${ENV_VAR}"
        )
    elif "disk" in low or "full" in low:
        fix = "disk full or I/O error: free some space or move the store"
    else:
        fix = "see the SQLite error above"
    return f"profile store {path}: cannot {action}: {msg}; {fix}"


def _where(
    application: str | None = None,
    configuration_id: str | Configuration | None = None,
    backend: str | None = None,
    run_id: str | None = None,
    kind: ConfigKind | str | None = None,
    request_size: RequestSize | RequestSizeDistribution | str | None = None,
    qps: float | None = None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
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
