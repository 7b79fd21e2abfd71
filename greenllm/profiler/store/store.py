"""The profile database: :class:`ProfileStore`, SQLite in WAL mode (paper, Sections 4.2-4.3).

One row per cell (:class:`~greenllm.profiler.store.records.ProfileRecord`), upserted by cell
id, so a resumed sweep never duplicates a row; per-GPU numbers in a child table; ``put_many`` is
one transaction (all of a batch or none of it, even if the writer is killed). The schema is
versioned in ``schema_version`` and upgraded on open by the functions in :data:`MIGRATIONS`.
Layout, guarantees and the export formats: ``docs/profile-store.md``. The file's schema and
migrations live in :mod:`greenllm.profiler.store.schema`, the record <-> row mapping in
:mod:`greenllm.profiler.store.rows`, JSON/CSV export and import in
:mod:`greenllm.profiler.store.exchange`.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from greenllm.config import ConfigKind, Configuration, RequestSize, RequestSizeDistribution
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store import exchange
from greenllm.profiler.store.records import CellUsage, GPURow, ProfileRecord
from greenllm.profiler.store.rows import (
    COLUMNS,
    GPU_COLUMNS,
    ORDER,
    ModelCache,
    RowCache,
    gc_paused,
    group_rows,
    where_clause,
)
from greenllm.profiler.store.schema import (
    ENV_VAR,
    MIGRATIONS,
    default_store_path,
    explain,
    migrate,
    schema_version,
)

__all__ = ["ProfileStore"]

logger = logging.getLogger(__name__)


class ProfileStore:
    """SQLite profile database of :class:`ProfileRecord` rows, keyed by cell id.

    ``ProfileStore(path)`` does no I/O; the file (and its folder) are created on :meth:`open`,
    which every method calls on first use. ``path`` defaults to :func:`default_store_path`.
    One object per process and thread; many processes may write the same file at once (writers
    wait up to ``busy_timeout_s`` for each other).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 30.0):
        if (
            isinstance(busy_timeout_s, bool)
            or not isinstance(busy_timeout_s, numbers.Real)
            or not 0 < busy_timeout_s <= 86_400  # also rejects NaN
        ):
            raise ConfigError(
                f"busy_timeout_s = {busy_timeout_s!r}: must be a number in (0, 86400] seconds"
            )
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ConfigError(
                f"path = {path!r}: must be a str or path-like, not {type(path).__name__}"
            )
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
                migrate(conn, self.path, MIGRATIONS)  # this module's name: tests patch it
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
            return schema_version(self._connection(), self.path, len(MIGRATIONS))

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
        cache = RowCache()
        if isinstance(records, (str, bytes, ProfileRecord)) or not isinstance(records, Iterable):
            raise ConfigError(
                f"records = {type(records).__name__}: put_many takes an iterable of ProfileRecord"
                " (use put() for one)"
            )
        with gc_paused():
            for i, rec in enumerate(records):
                if not isinstance(rec, ProfileRecord):
                    raise ConfigError(
                        f"put_many item {i} is a {type(rec).__name__}, not a ProfileRecord"
                    )
                row, gpu_rows = cache.rows(rec)
                rows[row[0]], gpus[row[0]] = row, gpu_rows
        if not rows:
            return 0
        marks = ", ".join("?" * len(COLUMNS))
        with self._transaction("write records") as conn:
            conn.executemany("DELETE FROM gpu_usage WHERE cell_id = ?", ((c,) for c in rows))
            conn.executemany(
                f"INSERT OR REPLACE INTO profiles ({', '.join(COLUMNS)}) VALUES ({marks})",
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
        where, params = where_clause(backend=backend, run_id=run_id)
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
        where, params = where_clause(
            application, configuration_id, backend, run_id, kind, request_size, qps
        )
        return self._select(where.removeprefix(" WHERE "), params)

    def usage(self, **filters: Any) -> list[CellUsage]:
        """Per-cell keys, SLO attainment and per-GPU energy/time in one query (for matrices).

        Takes the filters of :meth:`query`; returns light named tuples, no validation.
        """
        where, params = where_clause(**filters)
        keys = ", ".join(f"p.{c}" for c in CellUsage._fields[:-1])
        sql = (
            f"SELECT {keys}, g.gpu, g.energy_j, g.busy_s, g.allocated_s"
            f" FROM profiles p LEFT JOIN gpu_usage g ON g.cell_id = p.cell_id{where}"
            f" ORDER BY {ORDER}, g.idx"
        )
        n = len(CellUsage._fields) - 1
        with self._translate("read usage"), gc_paused():
            cells = group_rows(self._connection().execute(sql, params), n, GPURow._make)
            return [CellUsage(*keys, tuple(gpus)) for keys, gpus in cells]

    def configurations(self, **filters: Any) -> dict[str, Configuration]:
        """The distinct configurations of the matching cells, by id (pairs with :meth:`usage`)."""
        where, params = where_clause(**filters)
        sql = f"SELECT DISTINCT configuration_id, configuration_json FROM profiles p{where}"
        with self._translate("read configurations"):
            rows = self._connection().execute(sql, params).fetchall()
        out: dict[str, Configuration] = {}
        for cid, text in rows:
            try:
                out[cid] = Configuration.model_validate_json(text)
            except (ConfigError, RecursionError) as err:
                raise ProfileError(
                    f"{self.path}: the stored configuration {cid} is invalid ({err}); "
                    "was the file edited by hand? delete or fix its rows"
                ) from err
        return out

    def _select(self, where: str, params: list[Any]) -> list[ProfileRecord]:
        sql = (
            f"SELECT {', '.join('p.' + c for c in COLUMNS)}, "
            f"{', '.join('g.' + c for c in GPU_COLUMNS)}"
            f" FROM profiles p LEFT JOIN gpu_usage g ON g.cell_id = p.cell_id"
            f"{' WHERE ' + where if where else ''} ORDER BY {ORDER}, g.idx"
        )
        with self._translate("read records"):
            rows = self._connection().execute(sql, params).fetchall()
        with gc_paused():
            return self._build(rows)

    def _build(self, rows: list[tuple[Any, ...]]) -> list[ProfileRecord]:
        grouped = group_rows(rows, len(COLUMNS), lambda g: dict(zip(GPU_COLUMNS, g, strict=True)))
        cache = ModelCache()
        out = []
        for prow, gpus in grouped:
            try:
                out.append(cache.record(prow, gpus))
            except (ConfigError, RecursionError) as err:
                raise ProfileError(
                    f"{self.path}: stored row {prow[0]} is invalid ({err}); "
                    "was the file edited by hand? delete or fix that row"
                ) from err
        return out

    # -- export / import (greenllm.profiler.store.exchange) --

    def export_json(self, path: str | os.PathLike[str], **filters: Any) -> int:
        """Write records (all, or those matching :meth:`query` filters) as JSON; return how many."""
        return exchange.export_json(self, path, **filters)

    def export_csv(self, path: str | os.PathLike[str], **filters: Any) -> int:
        """Write records as CSV, one row each, dotted columns (``ttft.p50_s``, ``gpus.1.gpu``)."""
        return exchange.export_csv(self, path, **filters)

    def import_json(self, path: str | os.PathLike[str]) -> int:
        """Validate every record of a JSON export, then store them all in one transaction."""
        return exchange.import_json(self, path)

    def import_csv(self, path: str | os.PathLike[str]) -> int:
        """Validate every row of a CSV export, then store them all in one transaction."""
        return exchange.import_csv(self, path)

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
            raise ProfileError(explain(self.path, action, err, self.busy_timeout_s)) from err
        except OSError as err:
            raise ProfileError(
                f"cannot {action} at {self.path}: {err}; check that the folder is writable, "
                f"or pass another path (argument or ${ENV_VAR})"
            ) from err
