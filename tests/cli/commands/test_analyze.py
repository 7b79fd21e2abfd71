"""`greenllm analyze`: Section 5 (Eq. 4-6), with bounded, checked sweeps."""

from __future__ import annotations

import pytest

from tests.cli.helpers import assert_error, run, strict_json

YEAR_S = 365.25 * 86400
BASE = ["analyze", "--standalone", "A100:3600:1.2e6", "--disaggregated", "A100:3600:6e5",
        "--disaggregated", "T4:3600:2e5"]  # fmt: skip


def test_analyze_reports_section_5(capsys) -> None:
    code, out, err = run(capsys, [*BASE, "--region", "MISO", "--sweep-intensity", "0:500:250",
                                  "--sweep-old-lifetime", "5:10:5", "--json"])  # fmt: skip
    assert code == 0, err
    out = strict_json(out)
    e_a = 3600 / (7 * YEAR_S) * 26340
    e_b = 3600 / (7 * YEAR_S) * 10300
    before = e_a + 1.2e6 / 3.6e6 * 501
    after = e_a + e_b + 8e5 / 3.6e6 * 501
    assert out["ratio"] == pytest.approx(after / before)
    assert out["energy_condition"] is True
    assert out["sweeps"]["intensity"]["g_per_kwh"] == [0, 250, 500]
    assert out["sweeps"]["intensity"]["ratio"][0] == pytest.approx((e_a + e_b) / e_a)
    assert out["sweeps"]["old_lifetime"]["ratio"][1] < out["sweeps"]["old_lifetime"]["ratio"][0]


def test_text_output_has_the_sweeps(capsys) -> None:
    code, out, _ = run(capsys, [*BASE, "--sweep-new-lifetime", "2:7:1"])
    assert code == 0 and "Eq. 6 ratio vs new-GPU lifetime" in out


SWEEPS = ("--sweep-intensity", "--sweep-old-lifetime", "--sweep-new-lifetime")


@pytest.mark.parametrize("option", SWEEPS)
@pytest.mark.parametrize(
    "value",
    ["", ",,,", "1,,2", "5:1:1", "0:100:1e-9", "1:2", "1:2:3:4", "1:2:0", "1:2:-1", "nan:5:1",
     "1:inf:1", "1:5:nan", "a:b:c", "1,abc", "1,inf", "1,nan", "-1,2", "1e308", "0:1e308:1",
     ",".join(["1"] * 10_001), "1::2"],
)  # fmt: skip
def test_bad_sweeps_are_one_line_usage_errors(capsys, option, value) -> None:
    assert_error(capsys, [*BASE, option, value], 2, option)


@pytest.mark.parametrize(
    ("run_spec", "fragment"),
    [("A100:1", "GPU:SECONDS:ENERGY_J"), ("A100:0:0", "SECONDS"), ("A100:1:0", "ENERGY_J"),
     ("A100:nan:1", "SECONDS"), ("A100:1:inf", "ENERGY_J"), ("A100:-1:1", "SECONDS"),
     ("A100::1", "must be numbers"), ("A100:1e999:1", "SECONDS"), ("B200X:1:1", "B200X"),
     ("", "empty"), ("A100:x:1", "must be numbers"), ("A100:1e-320:1e-320", "SECONDS"),
     ("A100:1:1e-320", "ENERGY_J"), ("A100:1e-4:1", "SECONDS")],
)  # fmt: skip
def test_bad_runs_name_the_field_not_numpy(capsys, run_spec, fragment) -> None:
    err = assert_error(capsys, [*BASE[:1], "--standalone", run_spec, *BASE[3:]], 2, fragment)
    assert "np.float64" not in err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [(["--lifetime", "T4=0"], "--lifetime"), (["--lifetime", "T4=nan"], "--lifetime"),
     (["--lifetime", "=5"], "--lifetime"), (["--lifetime", "T4"], "--lifetime"),
     (["--lifetime", "T4=1e-320"], "--lifetime"), (["--lifetime", ""], "--lifetime"),
     (["--lifetime-years", "1e-320"], "--lifetime-years"), (["--intensity", "-1"], "--intensity")],
)  # fmt: skip
def test_bad_lifetimes(capsys, argv, fragment) -> None:
    assert_error(capsys, [*BASE, *argv], 2, fragment)


def test_disaggregated_must_be_given_twice(capsys) -> None:
    assert_error(capsys, ["analyze", "--standalone", "A100:1:1", "--disaggregated", "A100:1:1"],
                 2, "give it twice")  # fmt: skip


def test_extreme_but_valid_runs_print_finite_numbers(capsys) -> None:
    argv = ["analyze", "--standalone", "A100:1e9:1e15", "--disaggregated", "A100:1e-3:1e-3",
            "--disaggregated", "T4:1e-3:1e-3", "--sweep-intensity", "0:5000:50",
            "--json"]  # fmt: skip
    code, out, err = run(capsys, argv)
    assert code in (0, 1), err
    if code == 0:
        strict_json(out)
