"""`greenllm plan`: no store is created, savings are positive when carbon is saved, and the
hourly plan's JSON has the schedule with timestamps."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.cli.helpers import assert_error, run, strict_json


def test_missing_store_is_an_error_and_creates_nothing(capsys, tmp_path) -> None:
    missing = tmp_path / "missing.sqlite"
    assert_error(capsys, ["plan", "--store", str(missing)], 2, "--store")
    assert not missing.exists()
    assert_error(capsys, ["plan", "--store", str(tmp_path)], 2, "not a file")


def test_default_store_missing_is_an_error(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GREENLLM_STORE", str(tmp_path / "none.sqlite"))
    assert_error(capsys, ["plan"], 2, "no profile store")
    assert not (tmp_path / "none.sqlite").exists()


def test_plan_savings_are_positive_when_saving(capsys, small_store) -> None:
    code, out, err = run(capsys, ["plan", "--store", str(small_store), "--method", "mean",
                                  "--json"])  # fmt: skip
    assert code == 0, err
    entries = strict_json(out)["entries"]
    assert entries and all(e["savings"] > 0 for e in entries)  # DSD beats Standalone here
    code, text, _ = run(capsys, ["plan", "--store", str(small_store), "--method", "mean"])
    assert code == 0 and "savings" in text.splitlines()[2]
    assert all("+" in line for line in text.splitlines()[4:])


def test_trace_plan_has_the_schedule_and_the_same_sign(capsys, small_store) -> None:
    argv = ["plan", "--store", str(small_store), "--method", "mean", "--trace", "CISO",
            "--application", "sharegpt", "--qps", "1"]  # fmt: skip
    code, out, err = run(capsys, [*argv, "--json"])
    assert code == 0, err
    result = strict_json(out)
    assert result["savings_vs_baseline"] > 0  # positive = saving, as in `plan`
    assert result["total_g"] < result["baseline_total_g"]
    schedule = result["schedule"]
    assert len(schedule) == result["hours"] > 8000
    first = schedule[0]
    assert datetime.fromisoformat(first["start"]).year == 2022
    assert {"start_s", "g_per_kwh", "configuration", "carbon_g", "switch_g"} <= set(first)
    assert sum(h["carbon_g"] + h["switch_g"] for h in schedule) == pytest.approx(
        result["total_g"]
    )
    code, text, _ = run(capsys, argv)
    assert code == 0
    hourly = next(line for line in text.splitlines() if line.startswith("hourly"))
    assert hourly.rstrip().endswith("%") and "+" in hourly


def test_a_load_above_the_profiles_warns_once_and_is_flagged(capsys, small_store) -> None:
    """The store profiles 1 and 2 QPS: 5 QPS is served as 2 QPS, and the user is told."""
    argv = ["plan", "--store", str(small_store), "--method", "mean", "--trace", "CISO",
            "--application", "sharegpt", "--qps", "5", "--json"]  # fmt: skip
    code, out, err = run(capsys, argv)
    assert code == 0, err
    result = strict_json(out)
    assert result["load_outside_profiled"] is True
    assert result["hours_above_profiled"] == result["hours"] and result["profiled_qps"] == [1, 2]
    warnings = [line for line in err.splitlines() if line.startswith("greenllm: warning:")]
    assert len(warnings) == 1 and "above the highest profiled 2 QPS" in warnings[0]
    code, out, err = run(capsys, [*argv[:-2], "1", "--json"])
    assert code == 0 and "warning" not in err and not strict_json(out)["load_outside_profiled"]


def test_switching_cost_is_estimated_unless_given(capsys, small_store) -> None:
    argv = ["plan", "--store", str(small_store), "--method", "mean", "--trace", "CISO",
            "--application", "sharegpt", "--qps", "1", "--json"]  # fmt: skip
    code, out, _ = run(capsys, argv)
    estimated = strict_json(out)
    assert code == 0 and estimated["switch_energy_kwh"] > 0 and estimated["switch_embodied_g"] > 0
    assert estimated["switch_cost_source"] != "given"
    code, out, _ = run(capsys, [*argv, "--switch-energy-kwh", "0", "--switch-embodied-g", "0"])
    given = strict_json(out)
    assert code == 0 and given["switch_cost_source"] == "given"
    assert given["switch_energy_kwh"] == given["switch_embodied_g"] == 0
    assert given["switches"] >= estimated["switches"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--seed", v) for v in ("-1", "", "abc", "1.5", str(2**32), "9" * 40)]
    + [("--slo-target", v) for v in ("nan", "inf", "-0.1", "1.1", "")]
    + [("--margin", v) for v in ("nan", "-1", "1e308", "")]
    + [("--verify", v) for v in ("-1", "10001", "")]
    + [("--requests", v) for v in ("0", "99999999999", "")]
    + [("--switch-energy-kwh", v) for v in ("nan", "inf", "-1", "1e308", "")]
    + [("--switch-embodied-g", v) for v in ("nan", "-inf", "-1", "1e308", "")]
    + [("--lifetime-years", v) for v in ("1e-320", "0", "nan")]
    + [("--region", ""), ("--intensity", "nan"), ("--method", ""), ("--backend", ""),
       ("--trace", ""), ("--application", "")],
)  # fmt: skip
def test_bad_values_are_usage_errors(capsys, tmp_path, option, value) -> None:
    assert_error(capsys, ["plan", "--store", str(tmp_path / "x.sqlite"), option, value], 2, option)


@pytest.mark.parametrize(
    ("qps", "fragment"),
    [("", "--qps"), (",,,", "--qps"), ("nan", "--qps"), ("0", "--qps"), ("-1", "--qps"),
     ("1e-300", "--qps"), ("1e308", "--qps"), ("1,2", "2 values"), ("1:1e12:1", "--qps")],
)  # fmt: skip
def test_bad_trace_qps(capsys, small_store, qps, fragment) -> None:
    argv = ["plan", "--store", str(small_store), "--trace", "CISO", "--application",
            "sharegpt", "--qps", qps]  # fmt: skip
    assert_error(capsys, argv, 2, fragment)


def test_trace_needs_an_application_and_qps_needs_a_trace(capsys, small_store) -> None:
    assert_error(capsys, ["plan", "--store", str(small_store), "--trace", "CISO"], 2,
                 "--application")  # fmt: skip
    assert_error(capsys, ["plan", "--store", str(small_store), "--qps", "2"], 2, "--trace")
    assert_error(capsys, ["plan", "--store", str(small_store), "--qps", "1"], 2, "--trace")
    assert_error(capsys, ["plan", "--store", str(small_store), "--application", "sharegpt"], 2,
                 "--trace")  # fmt: skip


def test_plan_shows_the_energy_source_and_notes_modelled_energy(capsys, small_store) -> None:
    """The simulator's energy is modelled: the table and JSON say so, with one note on stderr."""
    code, out, err = run(capsys, ["plan", "--store", str(small_store), "--method", "mean",
                                  "--json"])  # fmt: skip
    assert code == 0
    entries = strict_json(out)["entries"]
    assert {e["energy_source"] for e in entries} <= {"modelled", "filled"}
    assert {e["baseline_energy_source"] for e in entries} <= {"modelled", "filled"}
    assert len([line for line in err.splitlines() if line.startswith("note:")]) == 1
    assert "modelled energy" in err
    code, text, err = run(capsys, ["plan", "--store", str(small_store), "--method", "mean"])
    assert code == 0 and "energy" in text.splitlines()[2] and "modelled" in text
    assert err.count("note:") == 1
