"""`greenllm carbon`: Eq. 1-3, one energy per GPU, a warning above the GPU's max power."""

from __future__ import annotations

import pytest

from tests.cli.helpers import assert_error, run, strict_json

YEAR_S = 365.25 * 86400
BASE = ["carbon", "--gpu", "A100", "--seconds", "3600", "--energy-j", "1.2e6"]


def _json(capsys, argv: list[str]) -> dict:
    code, out, err = run(capsys, [*argv, "--json"])
    assert code == 0, err
    return strict_json(out)


def test_carbon_command_matches_eq_1_to_3(capsys) -> None:
    out = _json(capsys, [*BASE, "--region", "CISO", "--tokens", "1000"])
    embodied = 3600 / (7 * YEAR_S) * 26340  # Eq. 1: 0.42926 g
    operational = 1.2e6 / 3.6e6 * 261  # Eq. 2: 87.0 g
    assert out["total"]["embodied_g"] == pytest.approx(embodied)
    assert out["total"]["operational_g"] == pytest.approx(operational)
    assert out["total"]["total_g"] == pytest.approx(embodied + operational)
    assert out["intensity_g_per_kwh"] == 261


def test_carbon_command_sums_gpus_and_prints_a_table(capsys) -> None:
    argv = ["carbon", "--gpu", "A100", "--gpu", "T4", "--seconds", "3600", "--energy-j", "1e6",
            "--energy-j", "2e5", "--intensity", "100", "--lifetime-years", "5"]  # fmt: skip
    out = _json(capsys, argv)
    emb = 3600 / (5 * YEAR_S) * (26340 + 10300)
    assert out["total"]["embodied_g"] == pytest.approx(emb)
    assert out["total"]["operational_g"] == pytest.approx(1.2e6 / 3.6e6 * 100)
    code, text, _ = run(capsys, argv)
    assert code == 0 and "A100" in text and "T4" in text and "all" in text


def test_docs_example(capsys) -> None:
    code, out, _ = run(capsys, [*BASE, "--region", "CISO", "--tokens", "100000"])
    assert code == 0
    assert "A100     3600   1.2e+06      0.4293             87    87.43" in out
    assert "per token: 0.0008743 g" in out


@pytest.mark.parametrize(
    "energies",
    [["1e6"], ["1e6", "2e5", "3e5"]],
    ids=["one-for-two-gpus", "three-for-two-gpus"],
)
def test_energy_is_one_value_per_gpu(capsys, energies) -> None:
    argv = ["carbon", "--gpu", "A100", "--gpu", "T4", "--seconds", "3600"]
    for e in energies:
        argv += ["--energy-j", e]
    assert_error(capsys, argv, 2, "exactly one per GPU")


def test_seconds_may_be_one_for_all_gpus_or_one_per_gpu(capsys) -> None:
    argv = ["carbon", "--gpu", "A100", "--gpu", "T4", "--energy-j", "1e6", "--energy-j", "1e5"]
    assert _json(capsys, [*argv, "--seconds", "3600"])["devices"][1]["seconds"] == 3600
    two = _json(capsys, [*argv, "--seconds", "3600", "--seconds", "1800"])
    assert [d["seconds"] for d in two["devices"]] == [3600, 1800]
    assert_error(capsys, [*argv, *["--seconds", "1"] * 3], 2, "--seconds given 3 times")


@pytest.mark.parametrize(
    ("gpu", "seconds", "energy", "warns"),
    [("A100", "3600", "1.44e6", False), ("A100", "3600", "1.5e6", True),
     ("T4", "3600", "2.6e5", True), ("A100", "0", "1", True), ("A100", "0", "0", False)],
)  # fmt: skip
def test_energy_above_max_power_warns_one_line(capsys, gpu, seconds, energy, warns) -> None:
    code, out, err = run(capsys, ["carbon", "--gpu", gpu, "--seconds", seconds,
                                  "--energy-j", energy, "--json"])  # fmt: skip
    assert code == 0
    strict_json(out)
    if warns:
        assert len(err.splitlines()) == 1
        assert err.startswith(f"greenllm carbon: warning: {gpu}") and "max power" in err
    else:
        assert err == ""


@pytest.mark.parametrize(
    ("option", "value"),
    [(o, v) for o in ("--seconds", "--energy-j", "--lifetime-years", "--pue", "--intensity")
     for v in ("nan", "inf", "-inf", "-1", "", "abc", "1e999", "1e308")]
    + [("--lifetime-years", "1e-320"), ("--lifetime-years", "0"), ("--pue", "0.5"),
       ("--intensity", "10001"), ("--tokens", "0"), ("--tokens", "-1"), ("--tokens", "1.5"),
       ("--tokens", "9" * 40), ("--region", ""), ("--region", "   "), ("--region", "XXX"),
       ("--gpu", ""), ("--gpu", "B200X")],
)  # fmt: skip
def test_bad_values_are_usage_errors_naming_the_option(capsys, option, value) -> None:
    argv = [*BASE, option, value] if option != "--gpu" else [
        "carbon", "--gpu", value, "--seconds", "1", "--energy-j", "1"]  # fmt: skip
    err = assert_error(capsys, argv, 2)
    assert option in err or value in err


def test_lifetime_1e_320_does_not_print_inf(capsys) -> None:
    assert_error(capsys, [*BASE, "--lifetime-years", "1e-320"], 2, "--lifetime-years")
