"""GPU catalog: Table 1 exact, data-sheet GPUs plausible, ACT estimate, lookup and registry."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenllm.carbon import (
    GPUSpec,
    act_embodied_breakdown_kg,
    act_embodied_kg,
    embodied_carbon_g,
    get_gpu,
    list_gpus,
    register_gpu,
    unregister_gpu,
)
from greenllm.carbon.catalog.act import DRAM_G_PER_GB, HBM_G_PER_GB, act_node_nm
from greenllm.errors import ConfigError

# Reusable strategies -------------------------------------------------------------------------
gpu_names = st.sampled_from(list_gpus())
die_areas_mm2 = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
memories_gb = st.floats(min_value=0.0, max_value=300.0, allow_nan=False)
nodes_nm = st.sampled_from([3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 28])
memory_types = st.sampled_from(["HBM2", "HBM2e", "HBM3", "HBM3e", "GDDR6", "GDDR6X", "LPDDR5"])

# Table 1 of the paper, typed from shared/paper/greenllm-paper.txt (not from the code).
TABLE1 = {
    "T4": dict(vram_gb=16, mem_bw_gbs=320, die_area_mm2=545, max_power_w=70, node_nm=12,
               fp16_tflops=65, year=2018, embodied_kg=10.3),
    "V100": dict(vram_gb=16, mem_bw_gbs=900, die_area_mm2=815, max_power_w=300, node_nm=12,
                 fp16_tflops=28.26, year=2017, embodied_kg=20),
    "A100": dict(vram_gb=40, mem_bw_gbs=1555, die_area_mm2=826, max_power_w=400, node_nm=7,
                 fp16_tflops=312, year=2020, embodied_kg=26.34),
}  # fmt: skip
REQUIRED = ["A100-80GB", "H100", "H200", "A40", "A10G", "L4", "L40S", "P100", "RTX-6000-Ada"]


def _spec(name: str = "TestGPU-X1", **kw: object) -> GPUSpec:
    base = dict(vram_gb=24, mem_bw_gbs=500, die_area_mm2=400, max_power_w=200, node_nm=7,
                fp16_tflops=100, year=2022, idle_power_w=20, memory_type="GDDR6")  # fmt: skip
    base.update(kw)
    return GPUSpec.create(name, **base)


@pytest.fixture
def scratch() -> Iterator[list[str]]:
    """Names registered by a test; removed afterwards so the catalog stays pristine."""
    names: list[str] = []
    yield names
    for n in names:
        if n in list_gpus():
            unregister_gpu(n)


# Table 1 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TABLE1))
def test_table1_exact(name: str) -> None:
    spec = get_gpu(name)
    for field, value in TABLE1[name].items():
        assert getattr(spec, field) == value, field
    assert spec.embodied_source == "paper-table1"
    assert "Table 1" in spec.source


def test_catalog_has_required_gpus_with_act_estimates() -> None:
    names = list_gpus()
    assert names[:3] == ["T4", "V100", "A100"]
    for n in REQUIRED:
        spec = get_gpu(n)
        assert spec.embodied_source == "act-estimate"
        assert spec.embodied_kg == pytest.approx(
            act_embodied_kg(spec.die_area_mm2, spec.node_nm, spec.vram_gb, spec.memory_type)
        )
        assert "data sheet" in spec.source


@given(gpu_names)
def test_every_gpu_plausible(name: str) -> None:
    s = get_gpu(name)
    assert 8 <= s.vram_gb <= 200 and 100 <= s.mem_bw_gbs <= 10_000
    assert 100 <= s.die_area_mm2 <= 900 and 3 <= s.node_nm <= 16
    assert 50 <= s.max_power_w <= 1000 and 0 < s.idle_power_w < 0.25 * s.max_power_w
    assert 10 <= s.fp16_tflops <= 2000 and 2015 <= s.year <= 2025
    assert 5 <= s.embodied_kg <= 100
    assert s.source and "idle" in s.source
    json.dumps(s.to_dict())


@pytest.mark.parametrize(
    ("bigger", "smaller"),
    [("V100", "T4"), ("A100", "V100"), ("A100-80GB", "A100"), ("H100", "A100-80GB"),
     ("H200", "H100"), ("L40S", "L4"), ("A40", "A10G"), ("V100", "P100")],
)  # fmt: skip
def test_embodied_ordering(bigger: str, smaller: str) -> None:
    assert get_gpu(bigger).embodied_kg > get_gpu(smaller).embodied_kg


def test_variants_and_newer_parts_are_faster() -> None:
    assert get_gpu("H100").mem_bw_gbs > get_gpu("A100-80GB").mem_bw_gbs > get_gpu("A100").mem_bw_gbs
    assert get_gpu("H200").vram_gb > get_gpu("H100").vram_gb
    assert not get_gpu("T4").supports_bf16 and get_gpu("A100").supports_bf16
    assert get_gpu("H100").memory_type == "HBM3" and get_gpu("L4").memory_type == "GDDR6"


# ACT estimate --------------------------------------------------------------------------------
def test_act_worked_example_t4() -> None:
    # By hand, ACT rows for 12 nm -> the 14 nm row: EPA 1.2 kWh/cm2, GPA (200+125)/2 = 162.5,
    # MPA 500 g/cm2, Taiwan grid 583 g/kWh, yield 0.875:
    # logic  = 5.45 cm2 * (1.2*583 + 162.5 + 500) / 0.875 = 5.45 * 1556.686 = 8484.0 g
    # memory = 16 GB * 65 / 0.875 = 1188.6 g; package 150 g -> 9822.5 g
    parts = act_embodied_breakdown_kg(545, 12, 16, "GDDR6")
    assert parts["logic_kg"] == pytest.approx(8.4839, abs=1e-3)
    assert parts["memory_kg"] == pytest.approx(1.1886, abs=1e-3)
    assert parts["package_kg"] == 0.15
    assert act_embodied_kg(545, 12, 16, "GDDR6") == pytest.approx(9.8225, abs=1e-3)


def test_hbm_coefficient_is_the_table1_least_squares_fit() -> None:
    # Residual of V100/A100 after logic + package, regressed on capacity through the origin.
    rows = [(get_gpu(n), act_embodied_breakdown_kg(get_gpu(n).die_area_mm2, get_gpu(n).node_nm, 0))
            for n in ("V100", "A100")]  # fmt: skip
    resid = [(s.embodied_kg - p["logic_kg"] - p["package_kg"], s.vram_gb) for s, p in rows]
    fit_g_per_gb = 1e3 * sum(r * m for r, m in resid) / sum(m * m for _, m in resid)
    assert fit_g_per_gb * 0.875 == pytest.approx(HBM_G_PER_GB, abs=0.5)  # pre-yield, like ACT


@pytest.mark.parametrize("name", sorted(TABLE1))
def test_act_estimate_within_30_percent_of_table1(name: str) -> None:
    s = get_gpu(name)
    ratio = act_embodied_kg(s.die_area_mm2, s.node_nm, s.vram_gb, s.memory_type) / s.embodied_kg
    assert 0.7 < ratio < 1.3


@given(die_areas_mm2, die_areas_mm2, nodes_nm, memories_gb, memory_types)
def test_act_linear_in_area_and_monotone(a1, a2, node, mem, mtype) -> None:
    f = lambda a: act_embodied_kg(a, node, mem, mtype)  # noqa: E731
    assert f(a1 + a2) - f(0) == pytest.approx((f(a1) - f(0)) + (f(a2) - f(0)), abs=1e-9)
    assert act_embodied_kg(a1, node, mem + 1, mtype) > f(a1)


@given(die_areas_mm2.filter(lambda a: a > 1), memories_gb.filter(lambda m: m > 0.1))
def test_act_newer_node_and_hbm_cost_more(area: float, mem: float) -> None:
    assert act_embodied_kg(area, 5, mem, "GDDR6") > act_embodied_kg(area, 7, mem, "GDDR6")
    assert act_embodied_kg(area, 7, mem, "GDDR6") > act_embodied_kg(area, 14, mem, "GDDR6")
    assert act_embodied_kg(area, 7, mem, "HBM3") > act_embodied_kg(area, 7, mem, "GDDR6")
    assert HBM_G_PER_GB > DRAM_G_PER_GB


@pytest.mark.parametrize(
    ("node", "row"), [(12, 14), (16, 14), (4, 5), (6, 7), (7, 7), (8, 8), (45, 28), (2, 3)]
)
def test_act_node_mapping(node: float, row: int) -> None:
    assert act_node_nm(node) == row


@pytest.mark.parametrize(
    "kwargs",
    [dict(node_nm=0), dict(node_nm=float("nan")), dict(memory_type="SRAM"),
     dict(die_area_mm2=-1), dict(memory_gb=float("inf")), dict(abatement=90),
     dict(fab_yield=0), dict(fab_yield=1.5), dict(fab_intensity_g_per_kwh=-1)],
)  # fmt: skip
def test_act_rejects_bad_input(kwargs: dict) -> None:
    args = dict(die_area_mm2=500, node_nm=7, memory_gb=16, memory_type="HBM2") | kwargs
    with pytest.raises(ConfigError):
        act_embodied_kg(**args)


# Lookup --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("alias", "name"),
    [("a100-40gb", "A100"), ("a100_40gb", "A100"), ("A100 40GB", "A100"), ("Tesla T4", "T4"),
     ("tesla-t4", "T4"), ("NVIDIA T4", "T4"), ("h100-sxm", "H100"), ("H100 SXM5", "H100"),
     ("NVIDIA H100 80GB HBM3", "H100"), ("Tesla V100-SXM2-16GB", "V100"),
     ("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("a100_80gb", "A100-80GB"), ("nvidia a10g", "A10G"),
     ("RTX 6000 Ada", "RTX-6000-Ada"), ("l40s", "L40S"), ("Tesla P100-PCIE-16GB", "P100")],
)  # fmt: skip
def test_aliases_resolve(alias: str, name: str) -> None:
    assert get_gpu(alias).name == name


@given(gpu_names, st.randoms(use_true_random=False))
def test_lookup_is_case_insensitive(name: str, rnd) -> None:
    mixed = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in name)
    assert get_gpu(mixed) is get_gpu(name)


def test_spec_passes_through_and_is_frozen() -> None:
    spec = get_gpu("A100")
    assert get_gpu(spec) is spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.vram_gb = 80  # type: ignore[misc]
    assert embodied_carbon_g(1.0, spec, 7.0) == pytest.approx(26340 / (7 * 365.25 * 86400))


def test_unknown_name_lists_known_names_and_register_gpu() -> None:
    with pytest.raises(ConfigError) as info:
        get_gpu("B200")
    msg = str(info.value)
    assert "'B200'" in msg and "register_gpu" in msg
    for n in list_gpus():
        assert n in msg
    with pytest.raises(ConfigError, match="Did you mean 'A100'"):
        get_gpu("A1000")


@pytest.mark.parametrize("bad", [None, 100, 1.5, b"A100", ["A100"]])
def test_get_gpu_rejects_non_names(bad: object) -> None:
    with pytest.raises(ConfigError):
        get_gpu(bad)  # type: ignore[arg-type]


# Registry ------------------------------------------------------------------------------------
def test_register_get_replace_unregister(scratch: list[str]) -> None:
    spec = _spec(aliases=("testgpu-x1-24gb",))
    scratch.append(spec.name)
    register_gpu(spec)
    assert spec.name in list_gpus() and get_gpu("TESTGPU_X1_24GB") is spec
    assert spec.embodied_source == "act-estimate"
    with pytest.raises(ConfigError, match="replace=True"):
        register_gpu(_spec(vram_gb=48))
    bigger = _spec(vram_gb=48, embodied_kg=12.0)
    register_gpu(bigger, replace=True)
    assert get_gpu("testgpu-x1").vram_gb == 48 and get_gpu("testgpu-x1").embodied_kg == 12.0
    assert get_gpu("testgpu-x1").embodied_source == "user"
    with pytest.raises(ConfigError):  # the old alias went with the replaced spec
        get_gpu("testgpu-x1-24gb")
    assert list_gpus().count(spec.name) == 1
    unregister_gpu("TestGPU-X1")
    assert spec.name not in list_gpus()


def test_register_rejects_clashes(scratch: list[str]) -> None:
    with pytest.raises(ConfigError, match="replace=True"):
        register_gpu(_spec("a100-40gb"))  # an alias of A100
    with pytest.raises(ConfigError, match="already names 'H100'"):
        register_gpu(_spec(aliases=("h100-sxm",)), replace=True)
    assert get_gpu("h100-sxm").name == "H100"
    with pytest.raises(ConfigError):
        register_gpu("A100")  # type: ignore[arg-type]
    assert "TestGPU-X1" not in list_gpus()


@pytest.mark.parametrize(
    ("field", "value"),
    [("vram_gb", 0), ("vram_gb", -1), ("mem_bw_gbs", float("nan")), ("max_power_w", float("inf")),
     ("fp16_tflops", "fast"), ("die_area_mm2", True), ("idle_power_w", -5), ("idle_power_w", 250),
     ("year", 1989), ("year", 2020.5), ("memory_type", "SRAM"), ("embodied_kg", 0),
     ("embodied_source", "guess"), ("aliases", ["x"]), ("aliases", ("",))],
)  # fmt: skip
def test_create_validates(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field if field != "embodied_source" else "embodied"):
        _spec(**{field: value, **({"embodied_kg": 10.0} if field != "embodied_kg" else {})})


def test_create_reports_missing_and_unknown_fields() -> None:
    with pytest.raises(ConfigError, match="die_area_mm2"):
        GPUSpec.create("X", vram_gb=16, node_nm=7)
    with pytest.raises(ConfigError, match="fields"):
        _spec(colour="green")
    with pytest.raises(ConfigError, match="name"):
        _spec("  ")


def test_direct_construction_is_checked_on_use() -> None:
    bad = dataclasses.replace(get_gpu("T4"), name="Bad", vram_gb=-1.0)
    with pytest.raises(ConfigError, match="vram_gb"):
        get_gpu(bad)
    assert math.isclose(get_gpu("T4").vram_gb, 16)
