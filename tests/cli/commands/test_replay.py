"""`greenllm replay`: a short day end to end (profiles made on the fly, three policies, the
report and the figure), and one-line errors for bad input."""

from __future__ import annotations

import pytest

from tests.cli.helpers import assert_error, run, strict_json


def test_a_short_replay_reports_three_policies_and_draws_the_day(capsys, tmp_path) -> None:
    out = tmp_path / "replay"
    argv = ["replay", "--requests", "conversation", "--intensity", "CISO", "--hours", "2",
            "--time-scale", "36000", "--sample-s", "3", "--qps", "1", "--out", str(out)]
    code, text, err = run(capsys, [*argv, "--json"])
    assert code == 0, err
    report = strict_json(text)
    assert set(report["policies"]) == {"live", "static", "standalone"}
    assert report["simulator_time_scale"] == pytest.approx(30.0)
    assert report["hours"] == 2 and report["region"] == "CISO" and report["sample_s"] == 3.0
    for p in report["policies"].values():
        assert p["errors"] == 0 and p["requests"] == report["policies"]["static"]["requests"]
        assert p["receipts_g"] + p["switch_g"] == pytest.approx(p["gateway_totals"]["total_g"])
    assert set(report["savings"]) == {"live_vs_static", "live_vs_standalone"}
    assert (out / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert strict_json((out / "replay.json").read_text())["hours"] == 2
    code, table, err = run(capsys, [*argv, "--policies", "static,standalone"])
    assert code == 0, err
    assert "static plan:" in table and "standalone" in table and "figure:" in table


@pytest.mark.parametrize("extra, message", [
    (["--policies", "live,fast"], "--policies"),
    (["--requests", "summarization"], "a trace with arrival times"),
    (["--start", "2021-01-01"], "covers 2022"),
    (["--intensity", "Atlantis"], "no hourly trace"),
    (["--load", "1,-2"], "--load"),
    (["--hours", "0"], "--hours"),
    (["--time-scale", "0"], "--time-scale"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, extra, message) -> None:
    assert_error(capsys, ["replay", "--out", str(tmp_path), *extra], 2, message)
