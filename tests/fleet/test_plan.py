"""A small fleet planned end to end on the simulator: candidates over its GPU types, each
replica's capacity and carbon model, the optimum never worse than the paper's rule where that
fits, the deployment's JSON, and the simulated check; plus the optimum against the paper's
rule on random problems (a property)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.carbon import embodied_carbon_g, get_gpu
from greenllm.fleet import (
    FleetProblem,
    InfeasibleFleetError,
    compare_fleet,
    fits,
    paper_rule,
    parse_fleet,
    plan_fleet,
    solve,
)
from tests.fleet.test_optimize import problem

SMALL = """
region = "CISO"
[models]
target = "llama-2-7b"
drafts = ["llama-300m"]
[[gpus]]
type = "A100"
count = 1
host = "new"
[[gpus]]
type = "T4"
count = 2
host = "old"
lifetime_years = 10
[[workloads]]
name = "chat"
qps = 1.0
application = "sharegpt"
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    store = tmp_path_factory.mktemp("fleet") / "sim.sqlite"
    return plan_fleet(parse_fleet(SMALL), store, duration_s=20.0), store


def test_replica_models_cover_every_candidate(plan) -> None:
    fp, _ = plan
    labels = {m.configuration.label for m in fp.models}
    assert "Standalone A100" in labels and "DSD A100+T4 llama-300m @16Gbps" in labels
    assert "SpecDecode T4 llama-300m" not in labels  # 7B + draft do not fit a T4
    for m in fp.models:
        assert 0 <= m.capacity_qps <= 1.0 and m.source == "simulated"
        gpus = m.configuration.gpus
        emb = sum(embodied_carbon_g(3600, g, 10 if g == "T4" else 7) for g in gpus)
        assert m.fixed_g_per_h >= emb  # idle power on top of embodied
        assert m.idle_w >= sum(get_gpu(g).idle_power_w for g in gpus) - 1e-9
        assert m.var_g_per_qps_h >= 0
    assert any(m.capacity_qps == 1.0 for m in fp.models)


def test_the_optimum_is_a_deployment_within_the_inventory(plan, tmp_path) -> None:
    fp, _ = plan
    sol = fp.solution
    assert fits(sol) and sol.load_qps.sum() == pytest.approx(1.0)
    dep = fp.deployment("small")
    assert dep["carbon_g_per_h"] == pytest.approx(sol.carbon_g_per_h)
    used = {t: 0 for t in ("A100", "T4")}
    for r in dep["replicas"]:
        for g, h in zip(r["gpus"], r["hosts"], strict=True):
            used[g] += 1
            assert h == ("new" if g == "A100" else "old")
    assert used == dep["gpus_used"]
    off = {o["type"]: o["count"] for o in dep["gpus_off"]}
    assert off.get("T4", 0) == 2 - used["T4"] and off.get("A100", 0) == 1 - used["A100"]
    assert dep["split"]["chat"][0]["share"] == pytest.approx(1.0)
    result = compare_fleet(fp, tmp_path / "check.sqlite")
    assert result["optimum"]["carbon_g_per_h"] <= result["paper_rule"]["carbon_g_per_h"] + 1e-9
    assert 0.0 <= result["optimum"]["slo_attainment"]["all"] <= 1.0
    assert result["min_cost"]["cost_per_h"] <= result["optimum"]["cost_per_h"] + 1e-9


def test_an_inventory_without_room_is_an_error_naming_the_workload(tmp_path) -> None:
    heavy = parse_fleet(SMALL.replace("qps = 1.0", "qps = 40.0"))
    with pytest.raises(InfeasibleFleetError, match="chat"):
        plan_fleet(heavy, tmp_path / "sim.sqlite", duration_s=20.0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_the_optimum_is_never_worse_than_the_paper_rule_where_it_fits(seed: int) -> None:
    p = problem(np.random.default_rng(seed), n_w=4, n_c=5, n_t=3, inventory=4)
    p = FleetProblem(**{**p.__dict__, "demand_qps": p.demand_qps * 2})
    try:
        a = paper_rule(p)
    except InfeasibleFleetError:
        return
    if not fits(a):
        return
    assert solve(p).carbon_g_per_h <= a.carbon_g_per_h * (1 + 1e-7) + 1e-6


def test_your_own_measurements_replace_the_simulators(plan, capsys, tmp_path) -> None:
    """A vLLM benchmark of Standalone A100 at the chat workload's 1 QPS, imported, in which
    most requests miss the SLO: that replica model is now measured, with no capacity, and the
    rest stay simulated."""
    from greenllm.fleet import replica_models
    from tests.cli.helpers import run
    from tests.profiler.store.test_vllm_bench import power_log, result

    fp, store = plan
    measured = tmp_path / "measured.sqlite"
    code, _, err = run(capsys, ["import", "vllm-bench", str(result(tmp_path, rate=1.0)),
                                "--config", "standalone", "--application", "sharegpt",
                                "--power-log", str(power_log(tmp_path, "p.csv", 200.0)),
                                "--store", str(measured)])  # fmt: skip
    assert code == 0, err
    models = replica_models(fp.spec, store, duration_s=20.0, measured=measured)
    by = {m.configuration.label: m for m in models}
    a100 = by["Standalone A100"]
    assert a100.source == "measured" and a100.capacity_qps == 0.0
    # one measured level: the line from the A100's idle power through the measured 200 W at 1 QPS
    assert a100.idle_w == pytest.approx(get_gpu("A100").idle_power_w)
    assert a100.idle_w + a100.watts_per_qps * 1.0 == pytest.approx(200.0, rel=1e-6)
    assert all(m.source == "simulated" for label, m in by.items() if label != "Standalone A100")


def test_a_store_serves_only_profiles_of_the_same_duration_and_seed(plan) -> None:
    """The profiles are reused only when measured the same way: another duration measures
    again (its own run id) instead of silently answering with the 20 s profiles."""
    from greenllm.fleet import replica_models
    from greenllm.profiler.store import ProfileStore

    fp, store = plan
    with ProfileStore(store) as s:
        before = {r.run_id for r in s.query(backend="sim")}
        n_before = len(s.query(backend="sim"))
    assert before == {"fleet-20s-seed0"}
    again = replica_models(fp.spec, store, duration_s=20.0)  # all reused
    with ProfileStore(store) as s:
        assert len(s.query(backend="sim")) == n_before
    assert [m.capacity_qps for m in again] == [m.capacity_qps for m in fp.models]
    replica_models(fp.spec, store, duration_s=8.0)
    with ProfileStore(store) as s:
        runs = {r.run_id for r in s.query(backend="sim")}
        assert runs == {"fleet-20s-seed0", "fleet-8s-seed0"}
        assert len(s.query(backend="sim", run_id="fleet-8s-seed0")) == n_before


def test_lifetime_and_embodied_overrides_enter_eq_1() -> None:
    from greenllm.fleet import embodied_g_per_h

    spec = parse_fleet(SMALL.replace('type = "T4"\ncount = 2', 'type = "T4"\ncount = 2\n'
                                     'embodied_kg = 30.0'))  # fmt: skip
    assert spec.gpus[1].embodied_kg == 30.0
    hours = 10 * 365.25 * 24
    assert embodied_g_per_h(spec, ["T4"]) == pytest.approx(30_000.0 / hours)
    assert embodied_g_per_h(spec, ["A100"]) == pytest.approx(
        get_gpu("A100").embodied_kg * 1000 / (7 * 365.25 * 24))
