"""`greenllm demo`: the paper setting; every argument is checked before a file is written."""

from __future__ import annotations

import pytest

from tests.cli.helpers import assert_error, run, strict_json

YEAR_S = 365.25 * 86400


def test_demo_prints_the_paper_setting(capsys, tmp_path) -> None:
    code, out, err = run(capsys, ["demo", "--analysis-only", "--out", str(tmp_path), "--json"])
    assert code == 0, err
    out = strict_json(out)["paper_setting"]
    assert strict_json((tmp_path / "demo.json").read_text()) == out
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
    code, text, _ = run(capsys, ["demo", "--analysis-only", "--out", str(tmp_path)])
    assert code == 0 and "Section 5" in text


def test_out_may_be_a_new_nested_folder(capsys, tmp_path) -> None:
    out = tmp_path / "a" / "b"
    code, _, err = run(capsys, ["demo", "--analysis-only", "--out", str(out)])
    assert code == 0, err
    assert (out / "demo.json").is_file()


@pytest.mark.parametrize("kind", ["file", "devnull", "under-a-file", "empty"])
def test_out_that_is_not_a_folder_is_a_usage_error(capsys, tmp_path, kind) -> None:
    (tmp_path / "file").write_text("x")
    out = {"file": str(tmp_path / "file"), "devnull": "/dev/null",
           "under-a-file": str(tmp_path / "file" / "x"), "empty": ""}[kind]  # fmt: skip
    assert_error(capsys, ["demo", "--analysis-only", "--out", out], 2, "--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--workers", v) for v in ("0", "-1", "", "abc", "1.5", "257", "9" * 30)]
    + [("--requests", v) for v in ("0", "-1", "", "nan", "1e3", "1000001", "99999999999")]
    + [("--lifetime-years", v) for v in ("nan", "inf", "-inf", "1e-320", "0", "-1", "", "1e308")],
)  # fmt: skip
def test_bad_values_create_no_file(capsys, tmp_path, option, value) -> None:
    out = tmp_path / "demo"
    assert_error(capsys, ["demo", "--out", str(out), option, value], 2, option)
    assert not out.exists()
