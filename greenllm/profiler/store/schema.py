"""The profile store's file: default path, versioned schema, migrations, SQLite errors explained.

The schema is versioned in ``schema_version`` and upgraded on open by the functions in
:data:`MIGRATIONS` (``docs/profile-store.md``). :class:`~greenllm.profiler.store.store.ProfileStore`
uses these; they take the migration list as an argument so that the store's own
``MIGRATIONS`` name is the one that counts.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from greenllm.config import Configuration, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store.records import cell_id

__all__ = [
    "ENV_VAR",
    "MIGRATIONS",
    "V1_GPU_USAGE",
    "V1_PROFILES",
    "default_store_path",
    "explain",
    "migrate",
    "rekey_cells",
    "schema_version",
]

logger = logging.getLogger(__name__)

ENV_VAR = "GREENLLM_STORE"

Migration = Callable[[sqlite3.Connection], None]


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


#: The ``profiles`` table of the first release (schema version 1; tests rebuild old files).
V1_PROFILES = """CREATE TABLE profiles (
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

#: The ``gpu_usage`` table of the first release (schema version 1).
V1_GPU_USAGE = """CREATE TABLE gpu_usage (
    cell_id TEXT NOT NULL REFERENCES profiles (cell_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, gpu TEXT NOT NULL,
    energy_j REAL NOT NULL, busy_s REAL NOT NULL, allocated_s REAL NOT NULL,
    PRIMARY KEY (cell_id, idx)) WITHOUT ROWID"""


def _v1_tables(conn: sqlite3.Connection) -> None:
    """Version 1: the ``profiles`` table and its per-GPU child table ``gpu_usage``."""
    conn.execute(V1_PROFILES)
    conn.execute(V1_GPU_USAGE)


def _v2_indexes(conn: sqlite3.Connection) -> None:
    """Version 2: indexes for the common filters (workload, configuration, backend + run)."""
    conn.execute("CREATE INDEX profiles_by_workload ON profiles (application, size_label, qps)")
    conn.execute("CREATE INDEX profiles_by_configuration ON profiles (configuration_id)")
    conn.execute("CREATE INDEX profiles_by_run ON profiles (backend, run_id)")


def rekey_cells(conn: sqlite3.Connection) -> None:
    """Re-key every stored cell to today's :attr:`~greenllm.config.Configuration.id`.

    Each row keeps its configuration and workload JSON, so its configuration id and cell id
    (:func:`~greenllm.profiler.store.records.cell_id`) are recomputed from them; ``gpu_usage``
    rows follow their cell. Should two rows fall on one cell id, the one created last is kept
    (as a later write of the same cell would have replaced it). A row whose JSON no longer
    validates keeps its key (reading it names it). Idempotent; every migration that changes
    the id rule (a new :data:`~greenllm.config.ID_VERSION`) runs it again.
    """
    rows = conn.execute(
        "SELECT cell_id, configuration_id, workload_json, configuration_json, backend, run_id"
        " FROM profiles ORDER BY created_utc, cell_id"
    ).fetchall()
    workloads: dict[str, Workload | None] = {}
    configs: dict[str, Configuration | None] = {}
    target: dict[str, tuple[str, str]] = {}  # old cell id -> (cell id, configuration id)
    winner: dict[str, str] = {}  # cell id -> the old cell id that keeps it (the last created)
    for old, old_cfg, wj, cj, backend, run_id in rows:
        w, c = _parsed(Workload, wj, workloads), _parsed(Configuration, cj, configs)
        if w is None or c is None:
            logger.warning("cell %s: stored JSON is invalid; its key is left as it was", old)
            target[old] = (old, old_cfg)
        else:
            new = cell_id(w.application, w.request_size, w.qps, c.id, backend, run_id)
            target[old] = (new, c.id)
        winner[target[old][0]] = old
    old_cfg = {r[0]: r[1] for r in rows}
    dropped = [(old,) for old, (new, _) in target.items() if winner[new] != old]
    moves = [
        (old, new, cfg)
        for old, (new, cfg) in target.items()
        if winner[new] == old and (new, cfg) != (old, old_cfg[old])
    ]
    conn.executemany("DELETE FROM gpu_usage WHERE cell_id = ?", dropped)
    conn.executemany("DELETE FROM profiles WHERE cell_id = ?", dropped)
    conn.execute("PRAGMA defer_foreign_keys = ON")  # checked at commit, when children followed
    parked = [(old, "~" + new, cfg) for old, new, cfg in moves]  # a temporary key first, so
    placed = [("~" + new, new, cfg) for _, new, cfg in moves]  # no new id can hit an old one
    for step in (parked, placed):
        conn.executemany(
            "UPDATE profiles SET cell_id = ?, configuration_id = ? WHERE cell_id = ?",
            [(dst, cfg, src) for src, dst, cfg in step],
        )
        conn.executemany(
            "UPDATE gpu_usage SET cell_id = ? WHERE cell_id = ?", [(d, s) for s, d, _ in step]
        )
    if moves or dropped:
        logger.info("re-keyed %d cells, dropped %d duplicates", len(moves), len(dropped))


def _parsed(cls: type[Any], text: str, memo: dict[str, Any]) -> Any:
    """``cls`` validated from JSON ``text`` once per distinct text; None if invalid."""
    if text not in memo:
        try:
            memo[text] = cls.model_validate_json(text)
        except ConfigError:
            memo[text] = None
    return memo[text]


def _v3_configuration_ids(conn: sqlite3.Connection) -> None:
    """Version 3: cells keyed by the versioned configuration id (a hash of
    :data:`~greenllm.config.ID_FIELDS` only), not a hash of the configuration's whole JSON."""
    rekey_cells(conn)


def _v4_energy_source(conn: sqlite3.Connection) -> None:
    """Version 4: ``profiles.energy_source`` ("measured", "modelled" or "unmeasured"); rows
    stored before it are assumed "modelled" (what every backend but a metered one wrote)."""
    conn.execute(
        "ALTER TABLE profiles ADD COLUMN energy_source TEXT NOT NULL DEFAULT 'modelled'"
    )


#: ``MIGRATIONS[i]`` upgrades a store from version ``i`` to ``i + 1`` inside one transaction.
MIGRATIONS: list[Migration] = [
    _v1_tables,
    _v2_indexes,
    _v3_configuration_ids,
    _v4_energy_source,
]


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    """Bring the file at ``path`` to version ``len(migrations)``, in one locked transaction."""
    if schema_version(conn, path, len(migrations)) == len(migrations):
        return
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time; re-read under the lock
    try:
        current = schema_version(conn, path, len(migrations))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " applied_utc TEXT NOT NULL, greenllm_version TEXT NOT NULL)"
        )
        from greenllm.version import __version__

        for v in range(current, len(migrations)):
            try:
                migrations[v](conn)
            except Exception as err:
                raise ProfileError(
                    f"{path}: migrating the schema from version {v} to {v + 1} "
                    f"failed ({err}); "
                    f"the store is unchanged at version {current}: report this as a bug"
                ) from err
            now = datetime.now(UTC).isoformat()
            conn.execute("INSERT INTO schema_version VALUES (?, ?, ?)", (v + 1, now, __version__))
            logger.info("%s: schema migrated to version %d", path, v + 1)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(conn: sqlite3.Connection, path: Path, latest: int) -> int:
    """The file's schema version (0: empty); :class:`ProfileError` if not a store or newer
    than ``latest``."""
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
    if version > latest:
        from greenllm.version import __version__

        raise ProfileError(
            f"{path} has schema version {version}, newer than this greenllm {__version__} knows "
            f"({latest}): upgrade greenllm (pip install -U greenllm) or use another store path"
        )
    return version


def explain(path: Path, action: str, err: sqlite3.Error, timeout_s: float) -> str:
    """A :class:`ProfileError` message for a SQLite error: what failed and how to fix it."""
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
