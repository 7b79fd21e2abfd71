"""A replayed day through the gateway on the simulator: every policy serves every sampled
request without an error, its totals are the sum of its per-request receipts (plus its
switches), the static and Standalone policies never switch, and the live controller follows
the grid: it switches when the hour's intensity moves the table's choice, paying a measured
engine start each time."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from greenllm.config import SLO
from greenllm.scheduler import Planner, PlanTable
from greenllm.serve.replay import plan_day, replay, serve_day, static_choice
from tests.scheduler import synthetic

ENGINE_START_S = 5.0


@pytest.fixture(scope="module")
def day():
    """Four hours of CISO on 2022-07-01 (181, 197, 232, 276 g/kWh), small requests (DPD on a
    T4 holds 432 tokens), 4 s samples at 1 QPS."""
    return plan_day("conversation", "CISO", hours=4, start="2022-07-01", qps=1.0, sample_s=4.0,
                    max_request_tokens=400, max_output_tokens=48)  # fmt: skip


@pytest.fixture(scope="module")
def table(day) -> PlanTable:
    """The planner's table with per-token figures set so that the intensity decides between
    DPD (low embodied carbon, high energy: clean hours) and DSD (the opposite), crossing at
    214 g/kWh, between the day's second and third hours; the other two never win."""
    planned = Planner(slo_target=0.9).table(synthetic.matrices(), "sharegpt")
    shape = planned.embodied_g_per_token.shape
    emb = np.tile([1.0, 1.0, 0.010, 0.010 + 214 * 1.5e-5], (shape[0], 1))
    energy = np.tile([1e-3, 1e-3, 2.0e-5, 0.5e-5], (shape[0], 1))
    return replace(planned, embodied_g_per_token=emb, energy_kwh_per_token=energy,
                   allowed=np.ones(shape, bool))  # fmt: skip


def serve(day, policy, table):
    return asyncio.run(asyncio.wait_for(serve_day(
        day, policy, table, time_scale=20.0, engine_start_s=ENGINE_START_S,
        slo=SLO(ttft_s=30.0, tpot_s=5.0),
    ), 120))  # fmt: skip


@pytest.mark.parametrize("policy", ["live", "static", "standalone"])
def test_totals_are_the_sum_of_the_receipts(day, table, policy) -> None:
    out = serve(day, policy, table)
    sampled = sum(len(h.requests) for h in day.hours)
    assert out.requests == sampled and sum(h.errors for h in out.hours) == 0
    assert out.totals["requests"] == sampled
    assert out.receipts_g == pytest.approx(out.totals["total_g"] - out.totals["switch_g"],
                                           rel=1e-9)  # fmt: skip
    assert out.receipts_g == pytest.approx(sum(h.total_g for h in out.hours), rel=1e-9)
    assert out.switch_g == pytest.approx(out.totals["switch_g"], rel=1e-9)
    assert out.day_estimate_g == pytest.approx(
        sum(h.total_g * h.scale + h.switch_g for h in out.hours), rel=1e-9)
    assert out.completion_tokens == int(sum(h.requests.output_tokens.sum() for h in day.hours))
    assert out.slo_attainment == 1.0 and out.max_lag_s < 5.0
    labels = [h.configuration for h in out.hours]
    if policy == "static":
        assert labels == [static_choice(table, day).label] * 4 and out.switches == ()
    if policy == "standalone":
        assert labels == [table.configs[table.baseline].label] * 4 and out.switches == ()


def test_live_follows_the_intensity_with_measured_switches(day, table) -> None:
    dpd, dsd = table.configs[2].label, table.configs[3].label
    assert static_choice(table, day).label == dsd  # CISO's annual 261 g/kWh: the dirty side
    out = serve(day, "live", table)
    assert [h.configuration for h in out.hours] == [dsd, dpd, dsd, dsd]
    assert [(s["from"], s["to"]) for s in out.switches] == [(dsd, dpd), (dpd, dsd)]
    for s, hour in zip(out.switches, (1, 2), strict=True):
        assert s["start_s"] == pytest.approx(ENGINE_START_S, rel=0.3)  # virtual seconds
        assert s["total_g"] > 0 and out.hours[hour].switch_g == pytest.approx(s["total_g"])
    reasons = [d["reason"] for d in out.decisions]
    assert reasons == ["period"] * 3
    assert [d["intensity"]["g_per_kwh"] for d in out.decisions] == pytest.approx(
        [h.intensity_g_per_kwh for h in day.hours[1:]])
    assert all("2022-07-01" in d["intensity"]["source"] for d in out.decisions)


def test_replay_runs_the_policies_side_by_side(day, table) -> None:
    report = replay(day, table, policies=("static", "standalone"), time_scale=20.0,
                    engine_start_s=ENGINE_START_S)  # fmt: skip
    d = report.to_dict()
    assert set(d["policies"]) == {"static", "standalone"} and d["savings"] == {}
    assert report.savings("static", "standalone") == pytest.approx(
        1 - report.outcomes["static"].g_per_token / report.outcomes["standalone"].g_per_token)
    assert report.savings("live", "static") is None
    assert d["hours"] == 4 and d["intensity_g_per_kwh"][0] == pytest.approx(181.2, abs=0.1)
