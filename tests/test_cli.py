"""The `greenllm` command: numbers, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from greenllm.cli import main

YEAR_S = 365.25 * 86400


def _json(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_carbon_command_matches_eq_1_to_3(capsys) -> None:
    out = _json(
        capsys,
        [
            "carbon",
            "--gpu",
            "A100",
            "--seconds",
            "3600",
            "--energy-j",
            "1.2e6",
            "--region",
            "CISO",
            "--tokens",
            "1000",
        ],
    )
    embodied = 3600 / (7 * YEAR_S) * 26340  # Eq. 1: 0.42926 g
    operational = 1.2e6 / 3.6e6 * 261  # Eq. 2: 87.0 g
    assert out["total"]["embodied_g"] == pytest.approx(embodied)
    assert out["total"]["operational_g"] == pytest.approx(operational)
    assert out["total"]["total_g"] == pytest.approx(embodied + operational)
    assert out["intensity_g_per_kwh"] == 261


def test_carbon_command_sums_gpus_and_prints_a_table(capsys) -> None:
    argv = [
        "carbon",
        "--gpu",
        "A100",
        "--gpu",
        "T4",
        "--seconds",
        "3600",
        "--energy-j",
        "1e6",
        "--energy-j",
        "2e5",
        "--intensity",
        "100",
        "--lifetime-years",
        "5",
    ]
    out = _json(capsys, argv)
    emb = 3600 / (5 * YEAR_S) * (26340 + 10300)
    assert out["total"]["embodied_g"] == pytest.approx(emb)
    assert out["total"]["operational_g"] == pytest.approx(1.2e6 / 3.6e6 * 100)
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "A100" in text and "T4" in text and "all" in text


def test_analyze_reports_section_5(capsys) -> None:
    out = _json(
        capsys,
        [
            "analyze",
            "--standalone",
            "A100:3600:1.2e6",
            "--disaggregated",
            "A100:3600:6e5",
            "--disaggregated",
            "T4:3600:2e5",
            "--region",
            "MISO",
            "--sweep-intensity",
            "0:500:250",
            "--sweep-old-lifetime",
            "5:10:5",
        ],
    )
    e_a = 3600 / (7 * YEAR_S) * 26340
    e_b = 3600 / (7 * YEAR_S) * 10300
    before = e_a + 1.2e6 / 3.6e6 * 501
    after = e_a + e_b + 8e5 / 3.6e6 * 501
    assert out["ratio"] == pytest.approx(after / before)
    assert out["energy_condition"] is True
    assert out["sweeps"]["intensity"]["g_per_kwh"] == [0, 250, 500]
    assert out["sweeps"]["intensity"]["ratio"][0] == pytest.approx((e_a + e_b) / e_a)
    assert out["sweeps"]["old_lifetime"]["ratio"][1] < out["sweeps"]["old_lifetime"]["ratio"][0]


def test_demo_prints_the_paper_setting(capsys, tmp_path) -> None:
    out = _json(capsys, ["demo", "--analysis-only", "--out", str(tmp_path)])["paper_setting"]
    assert (tmp_path / "demo.json").exists()
    assert [g["gpu"] for g in out["gpus"]] == ["A100", "T4", "V100"]
    assert out["intensity_g_per_kwh"] == {"NCSW": 17, "CISO": 261, "MISO": 501}
    t4_ciso = next(b for b in out["breakeven"] if b["old_gpu"] == "T4" and b["region"] == "CISO")
    # The T4's embodied carbon for an hour (Eq. 1) divided by CISO's 261 g/kWh, in Wh.
    assert t4_ciso["min_energy_saving_wh_per_hour"] == pytest.approx(
        3600 / (7 * YEAR_S) * 10300 / 261 * 1000
    )
    assert t4_ciso["ratio_at_breakeven"] == pytest.approx(1.0)  # Eq. 5 is exactly 1 there
    savings = [
        w["carbon_savings"]
        for w in out["what_if_a100_at_max_power"]
        if w["old_gpu"] == "T4" and w["energy_cut"] == 0.2
    ]
    assert savings == sorted(savings)  # Implication 2: savings grow with intensity
    assert main(["demo", "--analysis-only", "--out", str(tmp_path)]) == 0
    assert "Section 5" in capsys.readouterr().out


def test_catalog_listings(capsys) -> None:
    gpus = _json(capsys, ["gpus"])
    assert {"T4", "V100", "A100", "H100"} <= {g["name"] for g in gpus}
    regions = _json(capsys, ["regions"])
    assert regions["NCSW"] == 17 and regions["MISO"] == 501


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["carbon", "--gpu", "B200X", "--seconds", "1", "--energy-j", "1"], "B200X"),
        (["carbon", "--gpu", "A100", "--seconds", "-5", "--energy-j", "1"], "--seconds = -5"),
        (
            ["carbon", "--gpu", "A100", "--seconds", "1", "--energy-j", "1", "--region", "XXX"],
            "XXX",
        ),
        (
            [
                "carbon",
                "--gpu",
                "A100",
                "--seconds",
                "1",
                "--energy-j",
                "1",
                "--lifetime-years",
                "0",
            ],
            "--lifetime-years = 0.0",
        ),
        (
            [
                "analyze",
                "--standalone",
                "A100:1",
                "--disaggregated",
                "A100:1:1",
                "--disaggregated",
                "T4:1:1",
            ],
            "GPU:SECONDS:ENERGY_J",
        ),
        (["analyze", "--standalone", "A100:1:1", "--disaggregated", "A100:1:1"], "give it twice"),
        (
            [
                "analyze",
                "--standalone",
                "A100:1:1",
                "--disaggregated",
                "A100:1:1",
                "--disaggregated",
                "T4:1:1",
                "--sweep-intensity",
                "5:1:1",
            ],
            "--sweep-intensity = '5:1:1'",
        ),
        (["carbon", "--gpu", "A100"], "required"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(capsys, argv, fragment) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_exit_code_and_no_traceback() -> None:
    cmd = [
        sys.executable,
        "-m",
        "greenllm.cli",
        "carbon",
        "--gpu",
        "nope",
        "--seconds",
        "1",
        "--energy-j",
        "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("greenllm: error: ") and "Traceback" not in proc.stderr
