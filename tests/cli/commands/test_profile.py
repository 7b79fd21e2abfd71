"""`greenllm profile`: every size bounded, checked before the store is touched."""

from __future__ import annotations

import pytest

from greenllm.cli.args import MAX_GRID_CELLS, MAX_RANGE_POINTS
from tests.cli.helpers import assert_error, run, strict_json


def _dry(store) -> list[str]:
    return ["profile", "--dry-run", "--store", str(store), "--configs", "standalone",
            "--apps", "sharegpt"]  # fmt: skip


def test_dry_run_lists_cells(capsys, tmp_path) -> None:
    code, out, err = run(capsys, [*_dry(tmp_path / "s.sqlite"), "--qps", "1:3:1", "--json"])
    assert code == 0, err
    assert [c["qps"] for c in strict_json(out)["cells"]] == [1, 2, 3]
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["--qps", "1:1e12:1"], f"more than {MAX_RANGE_POINTS}"), (["--qps", ""], "--qps"),
     (["--qps", ",,,"], "--qps"), (["--qps", "1e-300"], "--qps"), (["--qps", "nan"], "--qps"),
     (["--qps", "0"], "--qps"), (["--qps", "1e308"], "--qps"),
     (["--requests", "99999999999"], "--requests"), (["--requests", "0"], "--requests"),
     (["--duration-s", "nan"], "--duration-s"), (["--duration-s", "1e308"], "--duration-s"),
     (["--duration-s", "86400", "--qps", "1000"], "requests per cell"),
     (["--fraction", "0"], "--fraction"), (["--fraction", "nan"], "--fraction"),
     (["--fraction", "1.5"], "--fraction"), (["--link-gbps", "0"], "--link-gbps"),
     (["--link-gbps", "inf"], "--link-gbps"), (["--workers", "0"], "--workers"),
     (["--seed", "-1"], "--seed"), (["--batch-size", "0"], "--batch-size"),
     (["--apps", ""], "--apps"), (["--apps", "sharegpt,,"], "--apps"),
     (["--sizes", ","], "--sizes"), (["--configs", ""], "--configs"),
     (["--run-id", ""], "--run-id"), (["--backend", ""], "--backend")],
)  # fmt: skip
def test_bad_values_are_one_line_usage_errors(capsys, tmp_path, argv, fragment) -> None:
    store = tmp_path / "s.sqlite"
    assert_error(capsys, [*_dry(store)[:-4], *argv], 2, fragment)
    assert not store.exists()


def test_grid_is_bounded(capsys, tmp_path) -> None:
    argv = ["profile", "--dry-run", "--store", str(tmp_path / "s.sqlite"), "--configs", "paper",
            "--apps", "sharegpt,humaneval,longbench", "--sizes", "p25,p50,p75",
            "--qps", "0.001:10:0.001"]  # fmt: skip
    assert_error(capsys, argv, 2, str(MAX_GRID_CELLS))
