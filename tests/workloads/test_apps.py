"""Table 2 applications: exact values, lookup, workloads, QPS grids."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.config import SLO, RequestSize, RequestSizeDistribution, Workload
from greenllm.errors import ConfigError
from greenllm.workloads import (
    RequestSet,
    apps,
    get_application,
    list_applications,
    paper_qps_range,
    workload,
)

# Table 2 of the paper, typed in from the PDF: (TTFT s, TPOT s, P25, P50, P75).
TABLE2 = {
    "sharegpt": (0.200, 0.080, (24, 24), (160, 140), (510, 357)),
    "humaneval": (0.125, 0.200, (108, 31), (136, 55), (182, 88)),
    "longbench": (15.0, 0.150, (1134, 201), (1495, 275), (1817, 352)),
}
PAPER = Path(__file__).resolve().parents[2].parent / "shared" / "paper" / "greenllm-paper.txt"
ROW = r"^(ShareGPT|HumanEval|LongBench) \[\d+\]\t([^\t]+)\t(\S+)\t(\S+)\t(.*)$"

application_names = st.sampled_from(sorted(TABLE2))
size_names = st.sampled_from(["p25", "p50", "p75", "sampled"])
qps_values = st.floats(min_value=1e-3, max_value=1000, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("name", sorted(TABLE2))
def test_table2_values_are_exact(name: str) -> None:
    ttft, tpot, p25, p50, p75 = TABLE2[name]
    app = get_application(name)
    assert app.slo == SLO(ttft_s=ttft, tpot_s=tpot)
    for got, (i, o) in zip((app.p25, app.p50, app.p75), (p25, p50, p75), strict=True):
        assert (got.input_tokens, got.output_tokens) == (i, o)


def test_table2_matches_the_paper_text_when_available() -> None:
    if not PAPER.exists():
        pytest.skip("the paper text is not on this machine")
    rows = {}
    for line in PAPER.read_text().splitlines():
        m = re.match(ROW, line)
        if m:
            rows[m.group(1)] = m
    assert set(rows) == {"ShareGPT", "HumanEval", "LongBench"}
    for dataset, m in rows.items():
        app = get_application(dataset)
        assert app.dataset == dataset and app.task == m.group(2).lower()
        unit = {"ms": 1e-3, "s": 1.0}
        for text, got in ((m.group(3), app.slo.ttft_s), (m.group(4), app.slo.tpot_s)):
            num, suffix = re.fullmatch(r"([\d.]+)(ms|s)", text).groups()  # type: ignore[union-attr]
            assert got == pytest.approx(float(num) * unit[suffix])
        sizes = [tuple(map(int, p)) for p in re.findall(r"\((\d+),(\d+)\)", m.group(5))]
        assert sizes == [(p.input_tokens, p.output_tokens) for p in (app.p25, app.p50, app.p75)]


def test_list_and_lookup_are_case_insensitive() -> None:
    assert list_applications() == ["sharegpt", "humaneval", "longbench"]
    for spelling in ("ShareGPT", "SHAREGPT", " sharegpt ", "chatbot"):
        assert get_application(spelling).name == "sharegpt"
    for spelling in ("HumanEval", "human-eval", "human_eval", "code"):
        assert get_application(spelling).name == "humaneval"
    for spelling in ("LongBench", "long bench", "summarization"):
        assert get_application(spelling).name == "longbench"
    app = get_application("longbench")
    assert get_application(app) is app


@pytest.mark.parametrize("bad", ["sharegpt2", "", "alpaca", 3])
def test_unknown_application_lists_the_known_ones(bad: object) -> None:
    with pytest.raises(ConfigError) as err:
        get_application(bad)  # type: ignore[arg-type]
    for name in ("sharegpt", "humaneval", "longbench"):
        assert name in str(err.value)


@given(name=application_names, size=size_names, qps=qps_values)
def test_workload_has_the_application_size_and_slo(name: str, size: str, qps: float) -> None:
    w = workload(name, qps, size=size)
    app = get_application(name)
    assert isinstance(w, Workload)
    assert w.application == name and w.qps == qps and w.slo == app.slo
    if size == "sampled":
        assert isinstance(w.request_size, RequestSizeDistribution)
        assert (w.request_size.p25, w.request_size.p50, w.request_size.p75) == (
            app.p25,
            app.p50,
            app.p75,
        )
    else:
        *_, p25, p50, p75 = TABLE2[name]
        i, o = {"p25": p25, "p50": p50, "p75": p75}[size]
        assert w.request_size == RequestSize(input_tokens=i, output_tokens=o)


def test_default_size_is_the_median_and_round_trips_through_json() -> None:
    w = workload("ShareGPT", 2.0)
    assert w.request_size == RequestSize(input_tokens=160, output_tokens=140)
    assert Workload.model_validate_json(w.model_dump_json()) == w


def test_sampled_workload_draws_sizes_around_the_percentiles() -> None:
    w = workload("longbench", 1.0, size="sampled")
    reqs = RequestSet.poisson(w.qps, w.request_size, n=20_000, seed=3)
    qi = np.percentile(reqs.input_tokens, [25, 50, 75])
    qo = np.percentile(reqs.output_tokens, [25, 50, 75])
    np.testing.assert_allclose(qi, [1134, 1495, 1817], rtol=0.03)
    np.testing.assert_allclose(qo, [201, 275, 352], rtol=0.03)


@pytest.mark.parametrize("size", ["p90", "P100", "median", "", "fixed"])
def test_bad_size_is_a_config_error_listing_the_choices(size: str) -> None:
    with pytest.raises(ConfigError, match="p25, p50, p75, sampled"):
        workload("sharegpt", 1.0, size=size)


def test_sizes_are_case_insensitive() -> None:
    assert workload("sharegpt", 1.0, size="P75").request_size.input_tokens == 510


@pytest.mark.parametrize("qps", [0.0, -1.0, math.nan, math.inf])
def test_bad_qps_is_a_config_error(qps: float) -> None:
    with pytest.raises(ConfigError, match="qps"):
        workload("humaneval", qps)


def test_qps_grids_cover_the_ranges_the_paper_reports() -> None:
    for name in list_applications():
        grid = paper_qps_range(name)
        assert all(q > 0 for q in grid) and list(grid) == sorted(set(grid)) and len(grid) >= 6
    # Section 7.2: savings over [0.5, 11] for HumanEval and [0.75, 2] for LongBench.
    for name, (lo, hi) in (("humaneval", (0.5, 11.0)), ("longbench", (0.75, 2.0))):
        grid = paper_qps_range(name)
        assert get_application(name).savings_qps == (lo, hi)
        assert lo in grid and hi in grid and max(grid) > hi
    # Section 7.6: ShareGPT's optimal configuration changes at QPS 1 and QPS 4.
    assert {1.0, 4.0} <= set(paper_qps_range("ShareGPT"))
    assert get_application("sharegpt").savings_qps is None


def test_applications_name_their_trace() -> None:
    from greenllm.workloads import TRACES

    for app in apps.APPLICATIONS.values():
        assert app.trace in TRACES and TRACES[app.trace].application == app.name


def test_application_is_frozen() -> None:
    app = get_application("sharegpt")
    with pytest.raises(AttributeError):
        app.name = "other"  # type: ignore[misc]
