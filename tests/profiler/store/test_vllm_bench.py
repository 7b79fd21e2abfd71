"""`greenllm import vllm-bench`: results in vLLM's JSON shape (as vllm/benchmarks/serve.py
writes them with --save-detailed) become records with the right attainment and energy, from
nvidia-smi power logs or modelled and flagged; bad inputs are one-line errors."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from greenllm.config import SLO
from greenllm.energy import power_model
from greenllm.profiler.store import ProfileStore, read_nvidia_smi_csv
from tests.cli.helpers import assert_error, run, strict_json

END = datetime(2026, 11, 30, 14, 0, 0)
SLO_SHAREGPT = SLO(ttft_s=0.2, tpot_s=0.08)  # Table 2


def result(tmp_path, *, detailed: bool = True, rate: object = 2.0, name: str = "r.json"):
    """10 requests over 5 s: TTFTs 0.05..0.5 s, 4 of them over 0.2 s; one failed."""
    ttfts = [0.05 * (i + 1) for i in range(10)]
    itls = [[0.02, 0.03, 0.04] if i != 3 else [0.2, 0.2] for i in range(10)]
    data = {
        "date": END.strftime("%Y%m%d-%H%M%S"), "backend": "vllm", "model_id": "m",
        "num_prompts": 11, "request_rate": rate, "burstiness": 1.0, "max_concurrency": None,
        "duration": 5.0, "completed": 10, "failed": 1, "request_throughput": 2.0,
        "mean_ttft_ms": 275.0,
    }  # fmt: skip
    if detailed:
        data.update({
            "input_lens": [100] * 11, "output_lens": [4] * 10 + [0],
            "ttfts": [*ttfts, 0.0], "itls": [*itls, []],
            "latencies": [t + sum(g) for t, g in zip(ttfts, itls, strict=True)] + [0.0],
            "start_times": [0.5 * i for i in range(11)], "errors": [""] * 10 + ["timeout"],
        })  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def power_log(tmp_path, name: str, watts: float, units: bool = True):
    start = END - timedelta(seconds=8)
    lines = ["timestamp, power.draw [W]"]
    for k in range(0, 51):
        t = start + timedelta(seconds=0.2 * k)
        w = f"{watts:.2f} W" if units else f"{watts:.2f}"
        lines.append(f"{t:%Y/%m/%d %H:%M:%S}.{t.microsecond // 1000:03d}, {w}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_result_with_power_logs_is_a_measured_record(capsys, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    logs = [power_log(tmp_path, "a100.csv", 250.0), power_log(tmp_path, "t4.csv", 40.0, False)]
    argv = ["import", "vllm-bench", str(result(tmp_path)), "--config", "dpd:T4",
            "--application", "sharegpt", "--store", str(store), "--json",
            "--power-log", str(logs[0]), "--power-log", str(logs[1])]  # fmt: skip
    code, out, err = run(capsys, argv)
    assert code == 0, err
    row = strict_json(out)["imported"][0]
    assert row["energy_source"] == "measured" and row["qps"] == 2.0
    with ProfileStore(store) as s:
        [rec] = s.query()
    assert rec.backend == "vllm" and rec.n_requests == 11
    # TTFT <= 0.2 s: requests 0-3; TPOT <= 0.08 s: all but request 3 (0.2 s gaps)
    assert rec.slo_attainment == pytest.approx(3 / 11)
    assert rec.ttft_attainment == pytest.approx(4 / 11)
    assert [g.energy_j for g in rec.gpus] == pytest.approx([250.0 * 5, 40.0 * 5])
    assert rec.provenance.extra["source"] == "vllm bench serve"
    assert rec.workload.slo == SLO_SHAREGPT


def test_without_power_logs_the_energy_is_modelled_from_the_busy_time(capsys, tmp_path) -> None:
    store = tmp_path / "s.sqlite"
    code, _out, err = run(capsys, ["import", "vllm-bench", str(result(tmp_path, rate="inf")),
                                  "--config", "standalone", "--application", "sharegpt",
                                  "--store", str(store), "--json"])  # fmt: skip
    assert code == 0, err
    with ProfileStore(store) as s:
        [rec] = s.query()
    pm = power_model("A100")
    # requests start every 0.5 s and last 0.14-0.59 s: busy is the union of those intervals
    starts = np.array([0.5 * i for i in range(10)])
    lat = np.array([0.05 * (i + 1) + (0.4 if i == 3 else 0.09) for i in range(10)])
    busy = sum(min(e, s2) - s for s, e, s2 in zip(starts, starts + lat, [*starts[1:], 1e9],
                                                    strict=True))  # fmt: skip
    assert rec.energy_source == "modelled"
    assert rec.gpus[0].energy_j == pytest.approx(pm.idle_w * 5.0 + pm.dynamic_w * busy)
    assert rec.workload.qps == 2.0  # "inf": the measured throughput


def test_bad_inputs_are_one_line_errors(capsys, tmp_path) -> None:
    base = ["--config", "dpd:T4", "--application", "sharegpt", "--store",
            str(tmp_path / "s.sqlite")]  # fmt: skip
    plain = result(tmp_path, detailed=False, name="plain.json")
    assert_error(capsys, ["import", "vllm-bench", str(plain), *base], 2, "--save-detailed")
    one = power_log(tmp_path, "one.csv", 100.0)
    assert_error(capsys, ["import", "vllm-bench", str(result(tmp_path)), *base, "--power-log",
                          str(one)], 2, "one per GPU")  # fmt: skip
    early = tmp_path / "early.csv"
    early.write_text("timestamp, power.draw [W]\n2020/01/01 00:00:00.000, 10 W\n"
                     "2020/01/01 00:00:01.000, 10 W\n")  # fmt: skip
    assert_error(capsys, ["import", "vllm-bench", str(result(tmp_path)), *base, "--power-log",
                          str(early), "--power-log", str(early)], 2, "do not cover the run")
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    assert_error(capsys, ["import", "vllm-bench", str(junk), *base], 2, "not a vLLM")
    assert not (tmp_path / "s.sqlite").exists()


def test_the_power_log_reader_refuses_several_gpus(tmp_path) -> None:
    from greenllm.errors import ConfigError

    mixed = tmp_path / "mixed.csv"
    mixed.write_text("timestamp, index, power.draw [W]\n2026/11/30 13:59:50.000, 0, 10 W\n"
                     "2026/11/30 13:59:50.200, 1, 20 W\n")  # fmt: skip
    with pytest.raises(ConfigError, match="one log per GPU"):
        read_nvidia_smi_csv(mixed)
