"""`greenllm plan --verify`: profile the chosen cells on a backend, then plan again."""

from __future__ import annotations

import json

import pytest

from greenllm.cli import main
from greenllm.config import RequestSize
from greenllm.errors import ConfigError
from greenllm.profiler.store import ProfileStore
from greenllm.profiler.sweep import row_workload, sweep_measure
from greenllm.scheduler import Planner, RowKey, matrices_from_store
from greenllm.scheduler.refine import verify_plan
from greenllm.workloads import get_application

GRID = ["--configs", "standalone,spec_decode:llama-1b,dsd:T4:llama-1b,dpd:T4",
        "--apps", "sharegpt", "--qps", "0.5:4:0.5", "--requests", "60", "--quiet"]  # fmt: skip


def test_row_workload_carries_the_applications_slo() -> None:
    w = row_workload(RowKey("humaneval", 157, 50, 2.0))
    assert w.request_size == RequestSize(input_tokens=157, output_tokens=50)
    assert (w.qps, w.slo) == (2.0, get_application("humaneval").slo)
    with pytest.raises(ConfigError, match="greenllm profile"):
        row_workload(RowKey("my-chatbot", 10, 10, 1.0))


def test_plan_verify_profiles_the_chosen_cells_until_all_are_measured(tmp_path, capsys) -> None:
    store = tmp_path / "p.sqlite"
    assert main(["profile", *GRID, "--store", str(store), "--fraction", "0.3"]) == 0
    with ProfileStore(store) as s:
        before = len(s)
        first = Planner(region="CISO").plan(s)
    filled = sum(not e.measured for e in first.entries)
    assert filled > 0  # something to verify
    capsys.readouterr()
    assert main(["plan", "--store", str(store), "--verify", "32", "--requests", "60",
                 "--json"]) == 0  # fmt: skip
    plan = json.loads(capsys.readouterr().out)
    assert all(e["measured"] for e in plan["entries"])
    with ProfileStore(store) as s:
        after = len(s)
        assert {r.run_id for r in s.query()} >= {"verify"}
    assert before < after <= before + 32
    # Verifying again profiles nothing: every choice is measured already.
    assert main(["plan", "--store", str(store), "--verify", "32", "--requests", "60"]) == 0
    out = capsys.readouterr().out
    assert "profiled 0 cells" in out and "0 choices still filled" in out
    with ProfileStore(store) as s:
        assert len(s) == after


def test_sweep_measure_rebuilds_the_matrices_with_the_new_cells(tmp_path) -> None:
    store_path = tmp_path / "p.sqlite"
    assert main(["profile", *GRID, "--store", str(store_path), "--fraction", "0.3"]) == 0
    with ProfileStore(store_path) as store:
        m = matrices_from_store(store, backend="sim")
        measure = sweep_measure(store, backend="sim", n_requests=60)
        v = verify_plan(Planner(region="CISO"), m, measure, budget_cells=2)
        assert len(v.profiled) == 2
        assert v.matrices.observed.sum() == m.observed.sum() + 2
        for row, config in v.profiled:
            assert v.matrices.observed[v.matrices.rows.index(row), v.matrices.column(config)]
