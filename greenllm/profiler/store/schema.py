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
from datetime import datetime, timezone
from pathlib import Path

from greenllm.errors import ProfileError

__all__ = ["ENV_VAR", "MIGRATIONS", "default_store_path", "explain", "migrate", "schema_version"]

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
MIGRATIONS: list[Migration] = [_v1_tables, _v2_indexes]


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
        from greenllm import __version__

        for v in range(current, len(migrations)):
            try:
                migrations[v](conn)
            except Exception as err:
                raise ProfileError(
                    f"{path}: migrating the schema from version {v} to {v + 1} "
                    f"failed ({err}); "
                    f"the store is unchanged at version {current}: report this as a bug"
                ) from err
            now = datetime.now(timezone.utc).isoformat()
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
        from greenllm import __version__

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
