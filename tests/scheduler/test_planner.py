"""The planner: matrices from profiles, carbon recomputed per region, Algorithm 1, plans."""

from __future__ import annotations

import numpy as np
import pytest

from greenllm.carbon import CarbonIntensityTrace, get_gpu
from greenllm.config import SLO, RequestSize, Workload
from greenllm.errors import ConfigError, ProfileError
from greenllm.profiler.store import ProfileRecord, ProfileStore
from greenllm.scheduler import Plan, Planner, ProfileMatrices, matrices_from_store, schedule
from tests.scheduler import synthetic

YEAR_S = 365.25 * 86400


def _hand_carbon(cell: dict, alpha: float, lifetimes: dict[str, float]) -> float:
    """Eq. 1-3 per token, written out by hand."""
    emb = sum(
        s / (lifetimes.get(g, 7.0) * YEAR_S) * get_gpu(g).embodied_kg * 1000
        for g, s in zip(cell["config"].gpus, cell["seconds"], strict=True)
    )
    return (emb + alpha * sum(cell["energy_j"]) / 3.6e6) / cell["tokens"]


@pytest.mark.parametrize("region_alpha", [("NCSW", 17.0), ("CISO", 261.0), ("MISO", 501.0)])
def test_carbon_matrix_is_recomputed_for_each_region_and_lifetime(region_alpha) -> None:
    region, alpha = region_alpha
    m = synthetic.matrices()
    lifetimes = {"T4": 10.0}
    c = m.carbon_g_per_token(alpha, {**lifetimes, "default": 7.0})
    for r, q in enumerate(synthetic.QPS):
        for j in range(len(synthetic.CONFIGS)):
            expected = _hand_carbon(synthetic.cell(q, j), alpha, lifetimes)
            assert c[r, j] == pytest.approx(expected, rel=1e-12)
    plan = Planner(region=region, lifetimes_years={"T4": 10.0}).plan(m)
    assert plan.intensity_g_per_kwh == alpha


def test_fully_observed_plan_is_algorithm_1_on_the_hand_computed_matrix() -> None:
    m = synthetic.matrices()
    plan = Planner(intensity_g_per_kwh=261.0, slo_target=0.9).plan(m)
    carbon = np.array([[_hand_carbon(synthetic.cell(q, j), 261.0, {}) for j in range(4)]
                       for q in synthetic.QPS])  # fmt: skip
    expected = schedule(carbon, m.attainment, 0.9, "slo", 0)
    chosen = [m.column(e.configuration) for e in plan.entries]
    assert chosen == expected.tolist()
    assert all(e.measured and e.baseline_measured for e in plan.entries)
    for e, j in zip(plan.entries, chosen, strict=True):
        r = synthetic.QPS.index(e.qps)
        assert e.carbon_g_per_token == pytest.approx(carbon[r, j])
        assert e.savings == pytest.approx(1 - carbon[r, j] / carbon[r, 0])
        assert e.savings >= -1e-12 or e.fallback  # never worse than Standalone when it is feasible
    # The synthetic world: SpecDecode wins at low QPS, DSD (draft on the T4) above SpecDecode's
    # capacity; from 6 QPS no configuration reaches 90%: the fallback takes the best attainment.
    kinds = [e.configuration.kind.value for e in plan.entries]
    assert kinds == ["spec_decode"] * 2 + ["dsd"] * 5
    assert [e.fallback for e in plan.entries] == [False] * 5 + [True] * 2


def test_plan_with_missing_cells_marks_filled_numbers_and_stays_feasible() -> None:
    full = synthetic.matrices()
    sparse = synthetic.matrices(observed_fraction=0.6, seed=3)
    assert 0 < sparse.observed.sum() < full.observed.sum()
    plan = Planner(intensity_g_per_kwh=261.0).plan(sparse)
    for e in plan.entries:
        r, j = synthetic.QPS.index(e.qps), full.column(e.configuration)
        assert e.measured == bool(sparse.observed[r, j])
        if e.measured:
            assert e.slo_attainment == pytest.approx(full.attainment[r, j])
            assert e.slo_attainment_stderr == 0
        if not e.fallback:  # a chosen feasible cell really is feasible in the full matrix
            assert full.attainment[r, j] >= 0.9 - 0.1


def test_safety_margin_only_shrinks_the_feasible_set() -> None:
    sparse = synthetic.matrices(observed_fraction=0.5, seed=7)
    loose = Planner(intensity_g_per_kwh=261.0, margin_sigmas=0.0).plan(sparse)
    strict = Planner(intensity_g_per_kwh=261.0, margin_sigmas=2.0).plan(sparse)
    for a, b in zip(loose.entries, strict.entries, strict=True):
        assert b.feasible_configs <= a.feasible_configs


def test_default_priority_falls_back_to_the_default_configuration() -> None:
    m = synthetic.matrices()
    plan = Planner(intensity_g_per_kwh=261.0, priority="default", default=2).plan(m)
    last = plan.entries[-1]
    assert last.fallback and last.configuration == synthetic.CONFIGS[2][0]
    assert plan.baseline == synthetic.CONFIGS[2][0]


def test_plan_json_round_trip() -> None:
    plan = Planner(region="MISO", lifetimes_years={"T4": 10}).plan(synthetic.matrices(0.7, 1))
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.lifetimes_years == {"T4": 10.0, "default": 7.0}


def _records(run_id: str = "default") -> list[ProfileRecord]:
    recs = []
    for q in synthetic.QPS:
        for j in range(len(synthetic.CONFIGS)):
            c = synthetic.cell(q, j)
            n = 50
            met = round(c["attainment"] * n)
            ttft = [0.1] * met + [5.0] * (n - met)  # met requests meet both SLO parts
            recs.append(ProfileRecord.from_requests(
                Workload(application="sharegpt", qps=q,
                         request_size=RequestSize(input_tokens=160, output_tokens=140)),
                c["config"], "synthetic", ttft_s=ttft, tpot_s=[0.05] * n,
                energy_j=c["energy_j"], duration_s=synthetic.DURATION_S,
                slo=SLO(ttft_s=0.2, tpot_s=0.08), run_id=run_id,
                input_tokens=160 * n, output_tokens=int(c["tokens"]),
            ))  # fmt: skip
    return recs


def test_matrices_from_a_real_store_match_the_cells(tmp_path) -> None:
    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.put_many(_records())
        m = matrices_from_store(store, backend="synthetic")
        plan = Planner(intensity_g_per_kwh=261.0).plan(store)
    ref = synthetic.matrices()
    assert m.shape == ref.shape and m.observed.all()
    j = [ref.column(c) for c in m.configs]
    assert np.allclose(m.energy_j, ref.energy_j[:, j])
    assert np.allclose(m.carbon_g_per_token(261), ref.carbon_g_per_token(261)[:, j], rtol=1e-6)
    assert np.allclose(m.attainment, np.round(ref.attainment[:, j] * 50) / 50)
    assert len(plan.entries) == len(synthetic.QPS)


def test_empty_store_is_a_profile_error(tmp_path) -> None:
    with (
        ProfileStore(tmp_path / "empty.sqlite") as store,
        pytest.raises(ProfileError, match="no profiles"),
    ):
        Planner().plan(store)


def test_unprofiled_column_and_bad_attainment_are_named() -> None:
    cells = [synthetic.cell(q, 0) for q in synthetic.QPS]
    configs = [c[0] for c in synthetic.CONFIGS]
    with pytest.raises(
        ProfileError, match=r"column 1 \(SpecDecode A100 llama-1b\) has no profiled"
    ):
        ProfileMatrices.from_cells(cells, configs=configs)
    bad = [{**synthetic.cell(1.0, 0), "attainment": 1.5}]
    with pytest.raises(ProfileError, match=r"SLO attainment of row 0 .* is 1\.5"):
        ProfileMatrices.from_cells(bad)
    neg = [{**synthetic.cell(1.0, 0), "energy_j": [-1.0]}]
    with pytest.raises(ProfileError, match="energy_j of row 0"):
        ProfileMatrices.from_cells(neg)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"slo_target": 1.5}, "slo_target = 1.5"), ({"priority": "fast"}, "priority = 'fast'"),
     ({"intensity_g_per_kwh": -3.0}, r"intensity_g_per_kwh = -3.0: must be a finite number in \[0"),
     ({"region": "ATLANTIS"}, "ATLANTIS"),
     ({"lifetimes_years": {"T4": 0}}, r"lifetimes_years\['T4'\] = 0"),
     ({"margin_sigmas": -1}, "margin_sigmas")],
)  # fmt: skip
def test_bad_planner_settings_are_config_errors(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Planner(**kwargs)


def test_hourly_plan_over_a_real_year_beats_the_static_plan() -> None:
    m = synthetic.matrices()
    trace = CarbonIntensityTrace.from_region("CISO")
    planner = Planner(region="CISO")
    hourly = planner.plan_hourly(m, trace, "sharegpt", qps_by_hour=1.0, switch_embodied_g=1.0)
    assert len(hourly.choice) == len(trace)
    assert hourly.total_g <= hourly.static_total_g + 1e-6
    assert hourly.savings_vs_baseline > 0  # reusing the T4 beats Standalone at 1 QPS
    diurnal = planner.plan_hourly(m, trace, "sharegpt", qps_by_hour=np.linspace(0.5, 6, 24))
    assert len(np.unique(diurnal.choice)) >= 2  # peak hours need a different configuration
    with pytest.raises(ConfigError, match="give 1, 24"):
        planner.plan_hourly(m, trace, "sharegpt", qps_by_hour=[1.0, 2.0])
    with pytest.raises(ConfigError, match="'chess' is not profiled"):
        planner.plan_hourly(m, trace, "chess", qps_by_hour=1.0)


def test_hourly_plan_picks_the_median_size_on_a_tie_or_the_one_asked() -> None:
    from greenllm.scheduler.planner import _pick_size

    sizes = [(24, 24)] * 3 + [(160, 140)] * 3 + [(510, 357)] * 3
    assert _pick_size(sizes, None) == (160, 140)  # ShareGPT's P50 among P25/P50/P75
    assert _pick_size([*sizes, (24, 24)], None) == (24, 24)  # most QPS levels wins
    assert _pick_size(sizes, (510, 357)) == (510, 357)
    with pytest.raises(ConfigError, match=r"size \(1, 1\) is not profiled"):
        _pick_size(sizes, (1, 1))


def test_energy_source_flows_from_records_to_plan_entries(tmp_path) -> None:
    """Measured, modelled and unmeasured cells keep their source; filled cells say "filled"."""
    recs = _records()
    sources = ("measured", "modelled", "unmeasured")
    recs = [r.model_copy(update={"energy_source": sources[i % 3]}) for i, r in enumerate(recs)]
    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.put_many(recs)
        m = matrices_from_store(store, backend="synthetic")
    for r in recs:
        row = next(i for i, k in enumerate(m.rows) if k.qps == r.workload.qps)
        assert m.energy_source[row, m.column(r.configuration)] == r.energy_source
    plan = Planner(intensity_g_per_kwh=261.0).plan(m)
    for e in plan.entries:
        row = next(i for i, k in enumerate(m.rows) if k.qps == e.qps)
        assert e.energy_source == m.energy_source[row, m.column(e.configuration)]
        assert e.baseline_energy_source == m.energy_source[row, m.column(plan.baseline)]
    sparse = synthetic.matrices(observed_fraction=0.6, seed=3)
    assert set(sparse.energy_source[sparse.observed]) == {"modelled"}  # the default
    assert set(sparse.energy_source[~sparse.observed]) == {""}
    for e in Planner(intensity_g_per_kwh=261.0).plan(sparse).entries:
        assert e.energy_source == ("modelled" if e.measured else "filled")


def test_a_mean_of_cells_takes_the_weakest_energy_source() -> None:
    cells = [{**synthetic.cell(q, j), "energy_source": "measured"}
             for q in synthetic.QPS for j in range(len(synthetic.CONFIGS))]  # fmt: skip
    extra = {**cells[0], "energy_source": "unmeasured"}
    m = ProfileMatrices.from_cells([*cells, extra], configs=[c[0] for c in synthetic.CONFIGS])
    assert m.energy_source[0, 0] == "unmeasured"
    assert set(m.energy_source.ravel()) == {"measured", "unmeasured"}
    assert m.select_columns([1, 0]).energy_source[0, 1] == "unmeasured"
    keep = np.ones(m.shape, dtype=bool)
    keep[0, 0] = False
    assert m.where(keep).energy_source[0, 0] == ""
    assert m.where(keep, m).energy_source[0, 0] == "unmeasured"
    with pytest.raises(ConfigError, match="energy_source = 'metered'"):
        ProfileMatrices.from_cells([{**cells[0], "energy_source": "metered"}])
