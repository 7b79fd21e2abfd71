"""Resumable sweeps: sampling, grammar, kill/Ctrl-C and resume, progress, CLI, Ray."""

from __future__ import annotations

import functools
import io
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.config import Configuration, RequestSize, Workload
from greenllm.errors import BackendUnavailableError, ConfigError, ProfileError, WorkerError
from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import (
    Cell,
    SweepGrid,
    SweepInterrupted,
    SweepProgress,
    format_eta,
    infeasible_sidecar_path,
    paper_configurations,
    parse_configurations,
    ray_resources,
    run_sweep,
    sample_cells,
)
from greenllm.profiler.sweep import progress as sweep_progress
from tests.extras import require
from tests.profiler.sweep import sweep_child

REPO = Path(__file__).resolve().parents[3]
RUN = "kill-test"


def _ids(cells: list[Cell], backend: str = "sim", run_id: str = RUN) -> set[str]:
    return {c.cell_id(backend, run_id) for c in cells}


FEASIBLE = _ids([c for c in sweep_child.cells() if c.configuration.target_model != "llama-3.1-8b"])


# --- hypothesis strategies (reusable) -------------------------------------------------------


@st.composite
def cell_grids(draw: Any, max_rows: int = 12, max_cols: int = 9) -> list[Cell]:
    """A full rows x columns grid of cells (rows: distinct QPS, columns: distinct configs)."""
    n_rows, n_cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    size = RequestSize(input_tokens=64, output_tokens=16)
    rows = [
        Workload(application="sharegpt", request_size=size, qps=0.5 * (i + 1))
        for i in range(n_rows)
    ]
    cols = [
        Configuration(kind="spec_decode", draft_model="llama-1b", num_speculative_tokens=k + 1)
        for k in range(n_cols)
    ]
    return [Cell(w, c) for w in rows for c in cols]


# --- sampling ---------------------------------------------------------------------------------


@given(cell_grids(), st.floats(0.01, 1.0), st.integers(0, 2**31), st.randoms())
def test_sample_covers_every_row_and_column_and_is_deterministic(
    cells: list[Cell], fraction: float, seed: int, rnd: Any
) -> None:
    rows = {c.row for c in cells}
    cols = {c.configuration.id for c in cells}
    got = sample_cells(cells, fraction, seed)
    assert {c.row for c in got} == rows and {c.configuration.id for c in got} == cols
    want = math.ceil(fraction * len(cells) - 1e-9)
    assert want <= len(got) <= max(want, len(rows) + len(cols) - 1)
    key = [(c.row, c.configuration.id) for c in got]
    assert [(c.row, c.configuration.id) for c in cells if (c.row, c.configuration.id) in key] == key
    shuffled = list(cells)
    rnd.shuffle(shuffled)
    assert {(c.row, c.configuration.id) for c in sample_cells(shuffled, fraction, seed)} == set(key)
    more = {(c.row, c.configuration.id) for c in sample_cells(cells, min(1.0, fraction * 2), seed)}
    assert set(key) <= more  # measuring more later keeps the smaller sample


def test_sample_depends_on_the_seed_and_full_fraction_keeps_all() -> None:
    grid = SweepGrid.build(paper_configurations(), ["sharegpt", "humaneval"], qps=[1, 2, 4, 8])
    assert grid.shape == (8, 9)
    picks = {frozenset(_ids(grid.cells(0.3, seed))) for seed in range(6)}
    assert len(picks) > 1
    assert all(len(p) == math.ceil(0.3 * 72) for p in picks)
    assert len(grid.cells()) == 72 == len(grid.cells(1.0, seed=5))
    with pytest.raises(ConfigError, match="fraction"):
        grid.cells(0.0)


# --- grammar and grid ------------------------------------------------------------------------


def test_configuration_grammar() -> None:
    got = parse_configurations("standalone, spec:llama-1b, dpd:t4, dsd:V100:llama-300m@H100")
    assert [c.kind.value for c in got] == ["standalone", "spec_decode", "dpd", "dsd"]
    assert [c.new_gpu for c in got] == ["A100", "A100", "A100", "H100"]
    assert got[2].old_gpu == "T4" and got[2].link_gbps == 16.0
    assert got[3].draft_model == "llama-300m" and got[3].old_gpu == "V100"
    assert {c.target_model for c in got} == {"llama-2-7b"}
    paper = parse_configurations("paper,standalone")  # the duplicate Standalone is dropped
    assert [c.id for c in paper] == [c.id for c in paper_configurations()]
    eight = parse_configurations("dpd:T4", link_gbps=8, target_model="llama-3.1-8b")[0]
    assert (eight.link_gbps, eight.target_model) == (8, "llama-3.1-8b")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("turbo", "unknown kind"),
        ("dsd:T4", "takes 2"),
        ("spec", "takes 1"),
        ("dpd:T4@", "after '@'"),
        ("dpd:Z80", "Z80"),
        ("standalone:A100", "takes 0"),
    ],
)
def test_configuration_grammar_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_configurations(text)


def test_grid_rows_use_each_application_slo_and_qps() -> None:
    configs = parse_configurations("standalone")
    grid = SweepGrid.build(
        configs,
        ["ShareGPT", "longbench"],
        ["p25", "p50"],
        {"sharegpt": [1.0], "longbench": [0.5, 1.0]},
    )
    assert grid.shape == (6, 1)
    long = [w for w in grid.workloads if w.application == "longbench"]
    assert {w.slo.ttft_s for w in long} == {15.0} and {w.qps for w in long} == {0.5, 1.0}
    default = SweepGrid.build(configs, ["humaneval"])
    from greenllm.workloads import paper_qps_range

    assert tuple(w.qps for w in default.workloads) == paper_qps_range("humaneval")
    with pytest.raises(ConfigError):
        SweepGrid.build(configs, ["sharegpt"], qps=[0.0])
    with pytest.raises(ConfigError, match="p99"):
        SweepGrid.build(configs, ["sharegpt"], ["p99"], [1.0])


# --- running, resuming, infeasible, failures ---------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The child's sweep run uninterrupted, in process: cell id -> record."""
    path = tmp_path_factory.mktemp("ref") / "ref.sqlite"
    report = sweep_child.run(str(path), batch=5)
    assert (report.measured, report.infeasible, report.total) == (18, 6, 24) and report.complete
    with ProfileStore(path) as store:
        return {r.cell_id: r for r in store.query()}


def _rows(path: Path) -> dict[str, str]:
    """cell id -> provenance time, read as another process would."""
    if not path.exists():
        return {}
    with sqlite3.connect(path) as conn:
        try:
            return dict(conn.execute("SELECT cell_id, created_utc FROM profiles"))
        except sqlite3.OperationalError:  # tables not created yet
            return {}


def _check_resumed(path: Path, before: dict[str, str], reference: dict[str, Any]) -> None:
    report = sweep_child.run(str(path), batch=3)  # the same sweep again
    assert report.already_done == len(before) and report.measured == 18 - len(before)
    assert report.infeasible == 6 and report.complete and not report.interrupted
    after = _rows(path)
    assert set(after) == FEASIBLE == set(reference)  # exactly one row per cell
    assert all(after[c] == t for c, t in before.items())  # stored rows were not measured again
    with ProfileStore(path) as store:
        for rec in store.query():
            ref = reference[rec.cell_id]
            assert rec.slo_attainment == ref.slo_attainment and rec.energy_j == ref.energy_j
            assert rec.provenance.extra["seed"] == 3 and rec.n_requests == 8
    sidecar = json.loads(infeasible_sidecar_path(path).read_text())["cells"]
    assert {v["target_model"] for v in sidecar.values()} == {"llama-3.1-8b"} and len(sidecar) == 6


def _child(path: Path, batch: int, workers: int, delay_s: float) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "tests.profiler.sweep.sweep_child",
        str(path),
        str(batch),
        str(workers),
        str(delay_s),
    ]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _live_group_members(pgid: int) -> list[int]:
    """Non-zombie processes of process group ``pgid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


@pytest.mark.parametrize(
    ("kill_at", "batch", "workers"),
    [(1, 1, 1), (7, 1, 1), (13, 1, 1), (17, 1, 1), (4, 4, 2), (12, 4, 2)],
)
def test_sigkill_at_a_cell_then_resume_gives_one_row_per_cell(
    tmp_path: Path, reference: dict[str, Any], kill_at: int, batch: int, workers: int
) -> None:
    path = tmp_path / "k.sqlite"
    proc = _child(path, batch, workers, delay_s=0.05)
    try:
        deadline = time.monotonic() + 60
        while len(_rows(path)) < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.003)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    before = _rows(path)
    assert kill_at <= len(before) < 18 and len(before) % batch == 0  # whole batches only
    assert set(before) <= FEASIBLE
    if workers > 1 and sys.platform.startswith("linux"):  # pool workers die with the driver
        deadline = time.monotonic() + 10
        while _live_group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _live_group_members(proc.pid) == []
    _check_resumed(path, before, reference)


@pytest.mark.parametrize(("workers", "stop_after"), [(1, 5), (2, 9)])
def test_ctrl_c_stores_finished_cells_then_resume_completes(
    tmp_path: Path, reference: dict[str, Any], workers: int, stop_after: int
) -> None:
    path = tmp_path / "i.sqlite"
    proc = _child(path, 100, workers, delay_s=0.1)  # a batch never fills: only the flush stores
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().startswith("STARTED")
        while not proc.stdout.readline().startswith(f"CELL {stop_after}"):
            pass
        os.killpg(proc.pid, signal.SIGINT)  # like Ctrl-C in a terminal: the whole group
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    report = json.loads(out.split("INTERRUPTED", 1)[1])
    before = _rows(path)
    assert report["interrupted"] and report["measured"] == len(before) < 18
    processed = report["measured"] + report["infeasible"] + report["failed"]
    assert processed >= stop_after and processed + report["remaining"] == 24
    _check_resumed(path, before, reference)


def test_ctrl_c_in_process_raises_with_report(tmp_path: Path, monkeypatch) -> None:
    from greenllm.backends.sim import SimBackend

    real, calls = SimBackend.run, []

    def run(self, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # in the middle of the fourth cell
        return real(self, *a, **k)

    monkeypatch.setattr(SimBackend, "run", run)
    with ProfileStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(SweepInterrupted) as stop:
            run_sweep(sweep_child.cells()[:8], store, n_requests=5, run_id=RUN, batch_size=50)
        assert stop.value.report.measured == 3 == len(store) and stop.value.report.remaining == 5


def test_infeasible_cells_are_skipped_on_resume_unless_retried(tmp_path: Path, monkeypatch) -> None:
    from greenllm.backends.sim import SimBackend

    path = tmp_path / "s.sqlite"
    assert sweep_child.run(str(path)).infeasible == 6
    real, calls = SimBackend.run, []
    monkeypatch.setattr(SimBackend, "run", lambda s, *a, **k: calls.append(1) or real(s, *a, **k))
    again = sweep_child.run(str(path))
    assert (again.infeasible, again.measured, again.already_done, calls) == (6, 0, 18, [])
    retried = sweep_child.run(str(path), retry_infeasible=True)
    assert (retried.infeasible, retried.measured, len(calls)) == (6, 0, 6)


def test_failed_cells_are_not_stored_and_retried(tmp_path: Path, monkeypatch) -> None:
    from greenllm.backends.sim import SimBackend

    real = SimBackend.run

    def flaky(self, configuration, *a, **k):  # type: ignore[no-untyped-def]
        if configuration.kind.value == "dsd":
            raise ProfileError("GPU 1 vanished (NVML_ERROR_GPU_IS_LOST)")
        return real(self, configuration, *a, **k)

    path = tmp_path / "s.sqlite"
    monkeypatch.setattr(SimBackend, "run", flaky)
    first = sweep_child.run(str(path))
    assert (first.failed, first.measured, first.complete) == (6, 12, False)
    assert "vanished" in first.failures[0] and len(_rows(path)) == 12
    monkeypatch.setattr(SimBackend, "run", real)
    second = sweep_child.run(str(path))
    assert (second.measured, second.already_done, second.complete) == (6, 12, True)


def test_bad_cell_stops_the_sweep_after_storing_finished_cells(tmp_path: Path) -> None:
    good = sweep_child.cells()[:4]
    bad = Cell(good[0].workload, Configuration(kind="spec_decode", draft_model="llama-9000"))
    with ProfileStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(ConfigError, match="llama-9000"):
            run_sweep([*good[:3], bad, good[3]], store, n_requests=5, batch_size=100)
        assert len(store) == 3


def test_duration_mode_and_argument_checks(tmp_path: Path) -> None:
    cells = sweep_child.cells()[:2]
    with ProfileStore(tmp_path / "s.sqlite") as store:
        report = run_sweep(cells, store, duration_s=4.0, run_id="dur")
        assert report.measured == 2
        rec = store.query(run_id="dur")[0]
        assert (
            rec.provenance.extra["duration_s"] == 4.0 and "n_requests" not in rec.provenance.extra
        )
        for bad in (
            {"n_requests": 0},
            {"workers": 0},
            {"run_id": "a b"},
            {"seed": -1},
            {"n_requests": 5, "duration_s": 1.0},
            {"executor": "slurm"},
            {"backend": "nope"},
        ):
            with pytest.raises(ConfigError):
                run_sweep(cells, store, **bad)


@pytest.mark.parametrize("duration_s", [1e-12, 1e-9, 1e-6, 1e-3])
def test_a_cell_that_served_no_requests_is_failed_not_stored(
    tmp_path: Path, duration_s: float
) -> None:
    cells = sweep_child.cells()[:3]
    with ProfileStore(tmp_path / "z.sqlite") as store:
        report = run_sweep(cells, store, duration_s=duration_s, run_id="zero")
        assert (report.measured, report.failed, len(store)) == (0, 3, 0)
        assert all("served no requests" in f for f in report.failures)
        assert not report.complete
        again = run_sweep(cells, store, duration_s=4.0, run_id="zero")  # retried on resume
        assert (again.measured, again.already_done, len(store)) == (3, 0, 3)


# --- progress ----------------------------------------------------------------------------------


def test_progress_eta_from_the_session_rate(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(sweep_progress.time, "monotonic", lambda: now[0])
    bar = SweepProgress(10, initial=5, use_tqdm=False, file=io.StringIO()).start()
    now[0] = 110.0
    bar.update()
    bar.update("infeasible")
    assert bar.eta_s() == pytest.approx(40.0)  # 2 cells in 10 s, 8 left
    assert bar.text() == "profile: 7/15 cells (47%), 1 infeasible, ETA 40s"
    assert [format_eta(x) for x in (5, 187, 3725, float("nan"))] == ["5s", "3m07s", "1h02m", "?"]


@pytest.mark.parametrize("with_tqdm", [True, False])
def test_progress_bar_on_stderr(tmp_path: Path, capsys, monkeypatch, with_tqdm: bool) -> None:
    if with_tqdm:
        require("tqdm")
    else:
        monkeypatch.setitem(sys.modules, "tqdm", None)  # import fails: plain lines
    sweep_child.run(str(tmp_path / "s.sqlite"), progress=True)
    err = capsys.readouterr().err
    if with_tqdm:
        assert "24/24" in err and "infeasible=6" in err and "profile sim" in err
    else:
        last = err.strip().splitlines()[-1]
        assert last == "profile sim: 24/24 cells (100%), 6 infeasible, ETA 0s"


# --- CLI ---------------------------------------------------------------------------------------


_profile = sweep_child.profile_cli


def test_cli_profiles_resumes_and_samples(tmp_path: Path, capsys) -> None:
    store = tmp_path / "p.sqlite"
    base = [
        "--configs",
        "standalone,dsd:T4:llama-1b,dpd:V100",
        "--apps",
        "sharegpt,humaneval",
        "--qps",
        "1:3:1",
        "--requests",
        "6",
        "--store",
        str(store),
        "--quiet",
    ]
    assert _profile([*base, "--fraction", "0.4", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["grid"] == {"rows": 6, "configurations": 3, "cells": 8, "fraction": 0.4}
    assert (first["measured"], first["already_done"], first["complete"]) == (8, 0, True)
    assert _profile([*base, "--json"]) == 0  # the full grid: only the other 10 are measured
    second = json.loads(capsys.readouterr().out)
    assert (second["total"], second["already_done"], second["measured"]) == (18, 8, 10)
    assert _profile(base) == 0
    out = capsys.readouterr().out
    assert "already stored" in out and "18 cells" in out
    with ProfileStore(store) as s:
        assert len(s) == 18 and {r.n_requests for r in s.query()} == {6}
    assert _profile([*base, "--dry-run", "--json", "--run-id", "other"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    assert len(cells) == 18 and {c["state"] for c in cells} == {"to measure"}


@pytest.mark.parametrize(
    "bad",
    [
        ["--configs", "dsd:T4"],
        ["--qps", "8:1:1"],
        ["--fraction", "0"],
        ["--apps", "chess"],
        ["--requests", "0"],
        ["--link-gbps", "-1"],
        ["--backend", "nope"],
        ["--sizes", "p99"],
        ["--requests", "5", "--duration-s", "3"],
        ["--workers", "0"],
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, bad: list[str]) -> None:
    argv = [
        "--configs",
        "standalone",
        "--apps",
        "sharegpt",
        "--qps",
        "1",
        "--quiet",
        "--store",
        str(tmp_path / "p.sqlite"),
        *bad,
    ]
    assert _profile(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("greenllm") and "error" in err and len(err.splitlines()) == 1


def test_cli_sigterm_stores_finished_cells_and_exits_130(tmp_path: Path) -> None:
    store = tmp_path / "t.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "tests.profiler.sweep.sweep_child",
        "cli",
        "--configs",
        "paper",
        "--apps",
        "sharegpt",
        "--qps",
        "1:8:1",
        "--requests",
        "150",
        "--batch-size",
        "4",
        "--store",
        str(store),
        "--quiet",
        "--json",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(_rows(store)) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.terminate()  # SIGTERM, as a batch scheduler stops a job
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    report = json.loads(out)
    assert report["interrupted"] and 4 <= report["measured"] == len(_rows(store)) < 72
    assert report["measured"] + report["remaining"] == 72


def _cli_child(store: Path, *extra: str, delay_s: float = 0.0) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "tests.profiler.sweep.sweep_child",
        "cli",
        "--configs",
        "standalone,dsd:T4:llama-1b,dpd:V100",
        "--apps",
        "sharegpt,humaneval",
        "--qps",
        "1:3:1",
        "--requests",
        "6",
        "--store",
        str(store),
        "--json",
        *extra,
    ]
    env = {**os.environ, sweep_child.DELAY_ENV: str(delay_s)}
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.mark.parametrize("workers", ["1", "2", "3"])
def test_cli_pool_workers_are_quiet_on_success(tmp_path: Path, workers: str) -> None:
    proc = _cli_child(tmp_path / "q.sqlite", "--workers", workers)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert json.loads(out)["complete"]


@pytest.mark.parametrize(
    ("workers", "signum"), [("2", signal.SIGINT), ("3", signal.SIGINT), ("2", signal.SIGTERM)]
)
def test_cli_pool_workers_are_quiet_on_ctrl_c(tmp_path: Path, workers: str, signum: int) -> None:
    store = tmp_path / "c.sqlite"
    proc = _cli_child(store, "--workers", workers, "--batch-size", "1", delay_s=0.2)
    try:
        deadline = time.monotonic() + 60
        while len(_rows(store)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signum)  # Ctrl-C reaches the whole group, workers included
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    ours = ("profile ", "greenllm: ")
    other = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(ours)]
    assert other == [], err  # only the progress bar and "greenllm: interrupted"
    assert json.loads(out)["interrupted"]


# --- Ray ---------------------------------------------------------------------------------------


def test_ray_resources_by_gpu_type() -> None:
    dpd = Configuration(kind="dpd", old_gpu="T4")
    assert ray_resources(dpd, "sim") == {}
    assert ray_resources(dpd, "vllm") == {"gpu_type:A100": 1.0, "gpu_type:T4": 1.0}
    pair = Configuration(kind="dsd", new_gpu="T4", old_gpu="T4", draft_model="llama-300m")
    assert ray_resources(pair, "torch") == {"gpu_type:T4": 2.0}
    assert ray_resources(Configuration(kind="standalone"), "sim", simulated=False) == {
        "gpu_type:A100": 1.0
    }


def test_ray_missing_names_the_extra(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with ProfileStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(BackendUnavailableError, match=r"greenllm\[ray\]"):
            run_sweep(sweep_child.cells()[:2], store, executor="ray")
        assert len(store) == 0


class _FakeRay:
    """Just what ``init_local_ray`` touches: ``init``, ``shutdown``, ``_private.ray_constants``."""

    def __init__(self, node_ip: str) -> None:
        import types

        self.node_ip, self.calls, self.down = node_ip, [], False
        self._private = types.SimpleNamespace(
            ray_constants=types.SimpleNamespace(ENABLE_RAY_CLUSTER=True)
        )

    def init(self, **kwargs: Any) -> Any:
        import types

        seen = (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"),
                self._private.ray_constants.ENABLE_RAY_CLUSTER)  # fmt: skip
        self.calls.append((kwargs, seen))
        return types.SimpleNamespace(address_info={"node_ip_address": self.node_ip})

    def shutdown(self) -> None:
        self.down = True


@pytest.mark.parametrize("previous", [None, "1", "0"])
def test_init_local_ray_asks_for_loopback_and_restores_settings(monkeypatch, previous) -> None:
    from greenllm.profiler.sweep.ray import init_local_ray

    if previous is None:
        monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    else:
        monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", previous)
    fake = _FakeRay("127.0.0.1")
    init_local_ray(fake, num_cpus=1)
    (kwargs, seen), = fake.calls
    assert kwargs["_node_ip_address"] == "127.0.0.1" and kwargs["include_dashboard"] is False
    assert kwargs["num_cpus"] == 1 and seen == ("0", False)
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == previous
    assert fake._private.ray_constants.ENABLE_RAY_CLUSTER is True and not fake.down


@pytest.mark.parametrize("ip", ["192.0.2.7", "10.0.0.1", "0.0.0.0", "::", None])
def test_init_local_ray_refuses_a_node_off_loopback(ip: str | None) -> None:
    from greenllm.profiler.sweep.ray import init_local_ray

    fake = _FakeRay(ip)  # type: ignore[arg-type]
    fake.util = None  # no fallback lookup
    with pytest.raises(WorkerError, match="refusing"):
        init_local_ray(fake)
    assert fake.down


def _listening(pids: set[int]) -> set[str]:
    """The addresses the processes ``pids`` listen on (TCP)."""
    psutil = require("psutil")
    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out |= {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN}
    return out


def _loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.mark.slow
def test_local_ray_started_by_a_sweep_listens_on_loopback_only(tmp_path: Path, monkeypatch) -> None:
    ray = require("ray")
    psutil = require("psutil")
    from greenllm.profiler.sweep.ray import LOOPBACK

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    seen: list[tuple[str, set[str]]] = []

    def resources(configuration: Configuration, backend: str) -> dict[str, float]:
        pids = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
        seen.append((ray.util.get_node_ip_address(), _listening(pids)))
        return {}

    with ProfileStore(tmp_path / "r.sqlite") as store:
        report = run_sweep(
            sweep_child.cells()[:2], store, n_requests=4, executor="ray", resources=resources
        )
    assert report.measured == 2 and not ray.is_initialized()  # it shut down what it started
    assert seen and all(ip == LOOPBACK for ip, _ in seen)
    listening = set().union(*(addrs for _, addrs in seen))
    assert listening, "no Ray process was listening"
    assert all(_loopback(ip) for ip in listening), listening  # GCS, raylet, workers, driver


@pytest.mark.slow
def test_ray_sweep_on_a_local_cluster(tmp_path: Path, monkeypatch, reference) -> None:
    ray = require("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        resources={"gpu_type:A100": 2, "gpu_type:T4": 1, "gpu_type:V100": 1},
    )
    try:
        path = tmp_path / "r.sqlite"
        gpu_typed = functools.partial(ray_resources, simulated=False)  # exercise the placement
        with ProfileStore(path) as store:
            report = run_sweep(
                sweep_child.cells(),
                store,
                n_requests=sweep_child.N_REQUESTS,
                seed=3,
                run_id=RUN,
                executor="ray",
                resources=gpu_typed,
            )
            assert (report.measured, report.infeasible, report.complete) == (18, 6, True)
            again = run_sweep(
                sweep_child.cells(),
                store,
                n_requests=sweep_child.N_REQUESTS,
                seed=3,
                run_id=RUN,
                executor="ray",
            )
            assert (again.already_done, again.measured) == (18, 0)
            records = store.query()
        assert ray.is_initialized()  # a session it did not start is left running
    finally:
        ray.shutdown()
    assert {r.cell_id for r in records} == set(reference)
    for rec in records:
        assert rec.energy_j == reference[rec.cell_id].energy_j
        assert rec.slo_attainment == reference[rec.cell_id].slo_attainment


def test_cli_lists_known_infeasible_cells(tmp_path: Path, capsys) -> None:
    argv = [
        "--configs",
        "dpd:T4,standalone",
        "--target",
        "llama-3.1-8b",
        "--apps",
        "sharegpt",
        "--qps",
        "1",
        "--store",
        str(tmp_path / "p.sqlite"),
        "--quiet",
        "--requests",
        "5",
    ]
    assert _profile([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["measured"], report["infeasible"]) == (1, 1)
    assert Path(report["infeasible_sidecar"]).exists()
    for extra, want in (([], "infeasible"), (["--retry-infeasible"], "to measure")):
        assert _profile([*argv, "--dry-run", "--json", *extra]) == 0
        states = {
            c["configuration"]: c["state"] for c in json.loads(capsys.readouterr().out)["cells"]
        }
        assert states == {"DPD A100+T4 @16Gbps": want, "Standalone A100": "stored"}
