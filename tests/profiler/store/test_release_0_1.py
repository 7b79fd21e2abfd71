"""Stores and exports written by greenllm 0.1.0 open, resume and import under today's ids.

The files in ``data/`` were made by commit 5d4b080 (release 0.1.0), whose configuration id
hashed the whole configuration JSON (see ``data/README.md``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greenllm.cli import main
from greenllm.config import Configuration
from greenllm.profiler.store import ProfileRecord, ProfileStore, cell_id
from greenllm.profiler.store.rows import COLUMNS, GPU_COLUMNS, ModelCache, group_rows
from greenllm.profiler.store.schema import MIGRATIONS, rekey_cells
from greenllm.profiler.sweep import (
    SweepGrid,
    infeasible_sidecar_path,
    parse_configurations,
    run_sweep,
    sweep_measure,
)
from greenllm.profiler.sweep.grid import legacy_configuration_id
from greenllm.scheduler import Planner, matrices_from_store
from greenllm.scheduler.refine import verify_plan
from greenllm.workloads import workload
from tests.profiler.store.store_writer import make_record

DATA = Path(__file__).parent / "data"
OLD_STORE = DATA / "store_v0_1_0.sqlite"
CONFIGS = "standalone,spec:llama-1b,dpd:T4,dsd:T4:llama-300m,spec:llama-1b@T4"
# The command that made the fixture (data/README.md), less --store.
PROFILE = ["profile", "--backend", "sim", "--configs", CONFIGS, "--apps", "sharegpt,humaneval",
           "--sizes", "p50", "--qps", "1,2", "--requests", "20", "--fraction", "0.6",
           "--quiet", "--json"]  # fmt: skip


def _old_rows(path: Path) -> tuple[dict[str, ProfileRecord], dict[str, str]]:
    """The records of an unmigrated store by their stored cell id, and its configuration ids
    by configuration JSON (read with plain SQL, no migration; the 0.1.0 schema has no
    energy_source column, which reads as 'modelled')."""
    cols = ["'modelled'" if c == "energy_source" else f"p.{c}" for c in COLUMNS]
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(cols)}, "
            f"{', '.join('g.' + c for c in GPU_COLUMNS)} FROM profiles p "
            "LEFT JOIN gpu_usage g ON g.cell_id = p.cell_id ORDER BY p.cell_id, g.idx"
        ).fetchall()
        config_ids = dict(
            conn.execute("SELECT DISTINCT configuration_json, configuration_id FROM profiles")
        )
    cache = ModelCache()
    grouped = group_rows(rows, len(COLUMNS), lambda g: dict(zip(GPU_COLUMNS, g, strict=True)))
    return {row[0]: cache.record(row, gpus) for row, gpus in grouped}, config_ids


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the 0.1.0 store and its infeasible sidecar."""
    dest = tmp_path / OLD_STORE.name
    shutil.copy(OLD_STORE, dest)
    shutil.copy(DATA / (OLD_STORE.name + ".infeasible.json"), infeasible_sidecar_path(dest))
    return dest


def test_the_fixture_holds_release_0_1_ids(old_store: Path) -> None:
    old, config_ids = _old_rows(old_store)
    assert len(old) == 11
    with sqlite3.connect(old_store) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 2
    for text, old_id in config_ids.items():
        cfg = Configuration.model_validate_json(text)
        assert legacy_configuration_id(cfg) == old_id != cfg.id
    assert all(cid != r.cell_id for cid, r in old.items())  # every key changes


def test_opening_migrates_and_rekeys_every_cell(old_store: Path) -> None:
    old, _ = _old_rows(old_store)
    with ProfileStore(old_store) as store:
        assert store.schema_version == len(MIGRATIONS) == 4
        records = store.query()
        assert len(store) == len(records) == 11
        # the same records (ids are not part of a record), each under its new cell id
        assert sorted(r.model_dump_json() for r in records) == sorted(
            r.model_dump_json() for r in old.values()
        )
        assert store.done_cells() == {r.cell_id for r in records}
        assert store.done_cells().isdisjoint(old)
        for r in records:
            assert store.get(r.cell_id) == r and r in store
        assert set(store.configurations()) == {r.configuration.id for r in records}
        assert {u.cell_id for u in store.usage()} == store.done_cells()
        for u in store.usage():
            assert u.configuration_id == store.get(u.cell_id).configuration.id
            assert len(u.gpus) == len(store.get(u.cell_id).configuration.gpus)
    with sqlite3.connect(old_store) as conn:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT COUNT(*) FROM gpu_usage").fetchone()[0] == sum(
            len(r.gpus) for r in old.values()
        )
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_version")]
        assert versions == [1, 2, 3, 4]


def test_a_resumed_sweep_measures_nothing(old_store: Path, capsys) -> None:
    assert main([*PROFILE, "--store", str(old_store)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["total"], report["already_done"], report["measured"]) == (12, 11, 0)
    assert report["infeasible"] == 1 and report["complete"]  # from the 0.1.0 sidecar
    sidecar = json.loads(infeasible_sidecar_path(old_store).read_text())
    (key, entry), = sidecar["cells"].items()  # fmt: skip
    cfg = Configuration(kind="spec_decode", new_gpu="T4", draft_model="llama-1b")
    assert entry["configuration_id"] == cfg.id
    size = workload("sharegpt", 1.0, size="p50").request_size
    assert key == cell_id("sharegpt", size, 1.0, cfg.id, "sim", "default")
    with ProfileStore(old_store) as store:
        assert len(store) == 11
    # the same through the API, and a second time (nothing left to adopt)
    grid = SweepGrid.build(parse_configurations(CONFIGS), ["sharegpt", "humaneval"], qps=[1, 2])
    for _ in range(2):
        with ProfileStore(old_store) as store:
            r = run_sweep(grid.cells(fraction=0.6), store, backend="sim", n_requests=20)
        assert (r.already_done, r.measured, r.infeasible, r.remaining) == (11, 0, 1, 0)


def test_matrices_and_verify_plan_find_the_measured_cells(old_store: Path) -> None:
    with ProfileStore(old_store) as store:
        records = store.query()
        m = matrices_from_store(store, backend="sim")
        assert int(m.observed.sum()) == 11
        for config in parse_configurations(CONFIGS)[:4]:  # the fifth never fit
            assert m.configs[m.column(config.id)] == config
        for r in records:
            row = next(k for k in m.rows if (k.application, k.qps) == (
                r.workload.application, r.workload.qps))  # fmt: skip
            assert m.observed[m.rows.index(row), m.column(r.configuration)]
        before = len(store)
        measure = sweep_measure(store, backend="sim", n_requests=20, run_id="default")
        again = measure([(m.rows[0], c) for c in m.configs if m.observed[0, m.column(c)]])
        assert (again.observed == m.observed).all()
        assert (again.attainment[m.observed] == m.attainment[m.observed]).all()
        assert len(store) == before  # measured cells are found, not measured again
        v = verify_plan(Planner(region="CISO"), m, measure, budget_cells=3)
        assert v.profiled  # filled cells were chosen and profiled
        assert all(not m.observed[m.rows.index(row), m.column(c)] for row, c in v.profiled)
        assert len(store) == before + len(v.profiled)


def test_old_json_and_csv_exports_import_under_new_ids(old_store: Path, tmp_path: Path) -> None:
    with ProfileStore(old_store) as migrated:
        expected = {r.cell_id: r for r in migrated.query(application="humaneval", qps=1.0)}
    assert len(expected) == 2
    for name in ("export_v0_1_0.json", "export_v0_1_0.csv"):
        src = DATA / name
        if name.endswith(".json"):
            old_ids = {r["cell_id"] for r in json.loads(src.read_text())["records"]}
        else:
            old_ids = {line.split(",")[0] for line in src.read_text().splitlines()[1:]}
        assert len(old_ids) == 2 and old_ids.isdisjoint(expected)  # ids of 0.1.0
        with ProfileStore(tmp_path / f"{name}.sqlite") as store:
            n = store.import_json(src) if name.endswith(".json") else store.import_csv(src)
            assert n == 2
            assert {r.cell_id: r for r in store.query()} == expected
            assert store.done_cells() == set(expected)


def test_import_ignores_stale_ids_in_a_file(tmp_path: Path) -> None:
    rec = make_record(3)
    doc = {"format": "greenllm-profiles", "format_version": 1, "records": [
        {"cell_id": "0" * 20, "configuration_id": "dsd-000000000000",
         **rec.model_dump(mode="json")}]}  # fmt: skip
    src = tmp_path / "stale.json"
    src.write_text(json.dumps(doc))
    with ProfileStore(tmp_path / "p.sqlite") as store:
        assert store.import_json(src) == 1
        assert store.done_cells() == {rec.cell_id}


# --- rekey_cells on hand-made rows ----------------------------------------------------------


def _raw(path: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        return conn.execute(sql, params).fetchall()


def _stale_copy(path: Path, rec: ProfileRecord, fake_id: str, created: datetime, n: int) -> None:
    """Store a copy of ``rec``'s row under ``fake_id`` (as an older id rule would have keyed
    it) with another creation time and n_requests."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        cols = [c for c in COLUMNS if c not in ("cell_id", "created_utc", "n_requests")]
        conn.execute(
            f"INSERT INTO profiles (cell_id, created_utc, n_requests, {', '.join(cols)}) "
            f"SELECT ?, ?, ?, {', '.join(cols)} FROM profiles WHERE cell_id = ?",
            (fake_id, created.isoformat(), n, rec.cell_id),
        )
        conn.execute(
            "INSERT INTO gpu_usage SELECT ?, idx, gpu, energy_j, busy_s, allocated_s"
            " FROM gpu_usage WHERE cell_id = ?",
            (fake_id, rec.cell_id),
        )


def test_rekey_keeps_the_last_created_of_two_rows_on_one_cell(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    recs = [make_record(i) for i in range(3)]
    with ProfileStore(path) as store:
        store.put_many(recs)
    t = recs[0].provenance.created_utc
    _stale_copy(path, recs[0], "a" * 20, t + timedelta(days=1), 11)  # newer: wins
    _stale_copy(path, recs[1], "b" * 20, t - timedelta(days=1), 12)  # older: dropped
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("BEGIN IMMEDIATE")
        rekey_cells(conn)
        conn.execute("COMMIT")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    with ProfileStore(path) as store:
        assert store.done_cells() == {r.cell_id for r in recs}
        assert store.get(recs[0].cell_id).n_requests == 11
        assert store.get(recs[1].cell_id) == recs[1]
        assert store.get(recs[2].cell_id) == recs[2]
    assert _raw(path, "SELECT COUNT(*) FROM gpu_usage") == [(sum(len(r.gpus) for r in recs),)]


def test_rekey_fixes_a_stale_configuration_id_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    rec = make_record(2)
    with ProfileStore(path) as store:
        store.put(rec)
    _raw(path, "UPDATE profiles SET configuration_id = 'dsd-old'")
    with sqlite3.connect(path) as conn:
        for _ in range(2):
            rekey_cells(conn)
            rows = conn.execute("SELECT cell_id, configuration_id FROM profiles").fetchall()
            assert rows == [(rec.cell_id, rec.configuration.id)]


def test_rekey_leaves_a_row_with_invalid_json_as_it_was(tmp_path: Path, caplog) -> None:
    path = tmp_path / "p.sqlite"
    with ProfileStore(path) as store:
        store.put_many([make_record(0), make_record(1)])
    _stale_copy(path, make_record(1), "c" * 20, datetime.now(UTC), 5)
    _raw(path, "UPDATE profiles SET configuration_json = '{\"kind\": \"turbo\"}'"
               " WHERE cell_id = ?", "c" * 20)  # fmt: skip
    with sqlite3.connect(path) as conn:
        rekey_cells(conn)
    assert "c" * 20 in caplog.text
    assert {r[0] for r in _raw(path, "SELECT cell_id FROM profiles")} == {
        make_record(0).cell_id, make_record(1).cell_id, "c" * 20}  # fmt: skip
