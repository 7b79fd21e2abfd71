"""Eq. 1-3, windows over several GPUs, PUE / host share, and the concurrency rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from greenllm.carbon import (
    CarbonBreakdown,
    DeviceUsage,
    embodied_carbon_g,
    get_gpu,
    list_gpus,
    operational_carbon_g,
    split_by_tokens,
    total_carbon_g,
    window_carbon,
)
from greenllm.errors import ConfigError

# Reusable strategies -------------------------------------------------------------------------
gpu_names = st.sampled_from(list_gpus())
seconds_s = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
energies_j = st.floats(min_value=0.0, max_value=1e10, allow_nan=False)
intensities = st.floats(min_value=0.0, max_value=2000.0, allow_nan=False)
lifetimes_years = st.floats(min_value=0.1, max_value=30.0, allow_nan=False)
token_counts = st.integers(min_value=0, max_value=100_000)


@st.composite
def device_usages(draw: st.DrawFn) -> DeviceUsage:
    return DeviceUsage(draw(gpu_names), draw(seconds_s), draw(energies_j), draw(lifetimes_years))


@st.composite
def breakdowns(draw: st.DrawFn, tokens: st.SearchStrategy = token_counts) -> CarbonBreakdown:
    g = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
    return CarbonBreakdown(draw(g), draw(g), draw(energies_j), draw(st.none() | tokens))


YEAR_S = 365.25 * 86400  # 31,557,600 s


# Worked numbers (by hand) --------------------------------------------------------------------
def test_worked_numbers() -> None:
    # One hour on an A100 (26.34 kg) over 7 years of 365.25 days:
    # 3600 / (7 * 31,557,600) = 1.6296760e-5; * 26,340 g = 0.429256 g.
    # (With 365-day years it would be 0.42955 g; we use 365.25-day years.)
    assert embodied_carbon_g(3600, "A100") == pytest.approx(0.429256, abs=1e-6)
    # 1.2e6 J = 1/3 kWh; * 261 g/kWh (CISO) = 87.0 g.
    assert operational_carbon_g(1.2e6, 261) == pytest.approx(87.0, abs=1e-12)
    assert total_carbon_g(3600, 1.2e6, "A100") == pytest.approx(87.429256, abs=1e-6)
    # A T4 (10.3 kg) for a full 5-year lifetime carries all of its embodied carbon.
    assert embodied_carbon_g(5 * YEAR_S, "T4", 5) == pytest.approx(10_300.0)
    assert isinstance(embodied_carbon_g(1, "T4"), float)


# Eq. 1 ---------------------------------------------------------------------------------------
@given(gpu_names, seconds_s, seconds_s, lifetimes_years)
def test_eq1_linear_in_time(gpu: str, t1: float, t2: float, life: float) -> None:
    assert embodied_carbon_g(t1 + t2, gpu, life) == pytest.approx(
        embodied_carbon_g(t1, gpu, life) + embodied_carbon_g(t2, gpu, life), rel=1e-12, abs=1e-12
    )
    expected = t1 / (life * YEAR_S) * get_gpu(gpu).embodied_kg * 1000
    assert embodied_carbon_g(t1, gpu, life) == pytest.approx(expected, rel=1e-12)


@given(gpu_names, seconds_s, lifetimes_years, st.floats(min_value=0.1, max_value=10))
def test_eq1_inverse_in_lifetime(gpu: str, t: float, life: float, k: float) -> None:
    assert embodied_carbon_g(t, gpu, life * k) == pytest.approx(
        embodied_carbon_g(t, gpu, life) / k, rel=1e-12, abs=1e-300
    )


@given(st.lists(seconds_s, min_size=1, max_size=20), gpu_names, lifetimes_years)
def test_eq1_vectorised(ts: list[float], gpu: str, life: float) -> None:
    out = embodied_carbon_g(np.array(ts), gpu, life)
    assert isinstance(out, np.ndarray) and out.shape == (len(ts),)
    np.testing.assert_allclose(out, [embodied_carbon_g(t, gpu, life) for t in ts], rtol=1e-12)


# Eq. 2 and 3 ---------------------------------------------------------------------------------
@given(energies_j, energies_j, intensities, st.floats(min_value=0, max_value=5))
def test_eq2_bilinear(e1: float, e2: float, ci: float, k: float) -> None:
    assert operational_carbon_g(e1 + e2, ci) == pytest.approx(
        operational_carbon_g(e1, ci) + operational_carbon_g(e2, ci), rel=1e-12, abs=1e-12
    )
    assert operational_carbon_g(e1, ci * k) == pytest.approx(
        operational_carbon_g(e1, ci) * k, rel=1e-12, abs=1e-12
    )
    assert operational_carbon_g(e1, ci) == pytest.approx(e1 / 3.6e6 * ci, rel=1e-12)


@given(gpu_names, seconds_s, energies_j, lifetimes_years, intensities)
def test_eq3_is_sum(gpu: str, t: float, e: float, life: float, ci: float) -> None:
    assert total_carbon_g(t, e, gpu, life, ci) == pytest.approx(
        embodied_carbon_g(t, gpu, life) + operational_carbon_g(e, ci), rel=1e-12
    )


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "10", None, True])
def test_bad_inputs_name_the_argument(bad: object) -> None:
    with pytest.raises(ConfigError, match="seconds"):
        embodied_carbon_g(bad, "A100")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="energy_j"):
        operational_carbon_g(bad, 261)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="energy_j"):
        total_carbon_g(1.0, bad, "A100")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seconds"):
        embodied_carbon_g(np.array([1.0, 2.0, bad if isinstance(bad, float) else -1]), "A100")


@pytest.mark.parametrize("life", [0.0, -7.0, float("nan"), float("inf")])
def test_bad_lifetime_and_intensity(life: float) -> None:
    with pytest.raises(ConfigError, match="lifetime_years"):
        embodied_carbon_g(1.0, "A100", life)
    with pytest.raises(ConfigError, match="intensity_g_per_kwh"):
        operational_carbon_g(1.0, -abs(life) - 1)
    with pytest.raises(ConfigError, match="unknown GPU"):
        embodied_carbon_g(1.0, "not-a-gpu")


# Windows -------------------------------------------------------------------------------------
@given(device_usages(), intensities)
def test_single_device_window_is_eq3(d: DeviceUsage, ci: float) -> None:
    b = window_carbon([d], ci)
    assert b.embodied_g == embodied_carbon_g(d.seconds, d.gpu, d.lifetime_years)
    assert b.operational_g == operational_carbon_g(d.energy_j, ci)
    assert b.total_g == pytest.approx(total_carbon_g(d.seconds, d.energy_j, d.gpu,
                                                     d.lifetime_years, ci), rel=1e-12)  # fmt: skip
    assert b.energy_j == d.energy_j and b.tokens is None


@given(st.lists(device_usages(), min_size=1, max_size=5), intensities)
def test_additive_across_gpus(devs: list[DeviceUsage], ci: float) -> None:
    whole = window_carbon(devs, ci)
    parts = sum(window_carbon([d], ci) for d in devs)
    assert isinstance(parts, CarbonBreakdown)
    assert whole.embodied_g == pytest.approx(parts.embodied_g, rel=1e-9, abs=1e-12)
    assert whole.operational_g == pytest.approx(parts.operational_g, rel=1e-9, abs=1e-12)
    assert whole.energy_j == pytest.approx(parts.energy_j, rel=1e-9, abs=1e-12)


@given(gpu_names, seconds_s, seconds_s, energies_j, energies_j, intensities, token_counts,
       token_counts)  # fmt: skip
def test_additive_across_windows(gpu, t1, t2, e1, e2, ci, n1, n2) -> None:
    w1 = window_carbon([DeviceUsage(gpu, t1, e1)], ci, tokens=n1)
    w2 = window_carbon([DeviceUsage(gpu, t2, e2)], ci, tokens=n2)
    joined = window_carbon([DeviceUsage(gpu, t1 + t2, e1 + e2)], ci, tokens=n1 + n2)
    both = w1 + w2
    assert both.total_g == pytest.approx(joined.total_g, rel=1e-9, abs=1e-12)
    assert both.tokens == n1 + n2
    assert (w1 + CarbonBreakdown(0.0, 0.0, 0.0)).tokens is None  # unknown tokens stay unknown


@given(device_usages(), intensities, st.floats(min_value=1, max_value=3),
       st.floats(min_value=0, max_value=2))  # fmt: skip
def test_pue_and_host_share(d: DeviceUsage, ci: float, pue: float, share: float) -> None:
    base = window_carbon([d], ci)
    b = window_carbon([d], ci, pue=pue, host_embodied_share=share)
    assert b.operational_g == pytest.approx(base.operational_g * pue, rel=1e-12, abs=1e-12)
    assert b.energy_j == pytest.approx(base.energy_j * pue, rel=1e-12)
    assert b.embodied_g == pytest.approx(base.embodied_g * (1 + share), rel=1e-12, abs=1e-300)


def test_window_validation() -> None:
    d = DeviceUsage("A100", 10.0, 1000.0)
    for kwargs, match in [
        (dict(pue=0.9), "pue"), (dict(host_embodied_share=-0.1), "host_embodied_share"),
        (dict(tokens=-1), "tokens"), (dict(tokens=1.5), "tokens"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            window_carbon([d], 261, **kwargs)
    with pytest.raises(ConfigError, match="intensity_g_per_kwh"):
        window_carbon([d], -1)
    with pytest.raises(ConfigError, match="non-empty"):
        window_carbon([], 261)
    with pytest.raises(ConfigError, match="non-empty"):
        window_carbon(d, 261)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"devices\[1\]"):
        window_carbon([d, ("A100", 1, 1)], 261)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"devices\[1\].*energy_j"):
        window_carbon([d, DeviceUsage("T4", 1.0, -5.0)], 261)
    with pytest.raises(ConfigError, match=r"devices\[0\].*lifetime_years"):
        window_carbon([DeviceUsage("T4", 1.0, 5.0, lifetime_years=0)], 261)


def test_per_token_and_to_dict() -> None:
    b = window_carbon([DeviceUsage("A100", 3600, 1.2e6)], 261, tokens=1000)
    assert b.total_per_token_g == pytest.approx(87.429256 / 1000, abs=1e-9)
    assert b.embodied_per_token_g + b.operational_per_token_g == pytest.approx(b.total_per_token_g)
    d = b.to_dict()
    assert d["total_g"] == pytest.approx(d["embodied_g"] + d["operational_g"])
    assert d["tokens"] == 1000 and d["total_per_token_g"] == pytest.approx(b.total_per_token_g)
    for tokens in (None, 0):
        nb = CarbonBreakdown(1.0, 2.0, 3.0, tokens)
        with pytest.raises(ConfigError, match="pass tokens"):
            _ = nb.total_per_token_g
        assert nb.to_dict()["total_per_token_g"] is None
    with pytest.raises(TypeError):
        _ = b + 1  # type: ignore[operator]


# Concurrency rule ----------------------------------------------------------------------------
@given(breakdowns(tokens=st.none()), st.lists(token_counts, min_size=1, max_size=30))
def test_split_sums_to_whole_and_is_proportional(b: CarbonBreakdown, counts: list[int]) -> None:
    assume(sum(counts) > 0)
    parts = split_by_tokens(b, counts)
    assert [p.tokens for p in parts] == counts
    for attr in ("embodied_g", "operational_g", "energy_j"):
        total = math.fsum(getattr(p, attr) for p in parts)
        assert total == pytest.approx(getattr(b, attr), rel=1e-12, abs=1e-12)
        for p, n in zip(parts, counts, strict=True):
            assert getattr(p, attr) == pytest.approx(getattr(b, attr) * n / sum(counts), rel=1e-12)
    nonzero = [p for p in parts if p.tokens]
    per_token = {round(p.total_per_token_g, 9) for p in nonzero}  # same carbon per token
    assert max(per_token) - min(per_token) <= 1e-9 * max(1.0, max(per_token))


@given(device_usages(), intensities, st.integers(min_value=1, max_value=10_000))
def test_lone_request_gets_exactly_eq1_to_3(d: DeviceUsage, ci: float, n: int) -> None:
    (part,) = split_by_tokens(window_carbon([d], ci, tokens=n), [n])
    assert part.embodied_g == embodied_carbon_g(d.seconds, d.gpu, d.lifetime_years)
    assert part.operational_g == operational_carbon_g(d.energy_j, ci)


def test_concurrent_requests_do_not_double_count() -> None:
    # Four requests overlap fully on one A100 for a 10 s window. Naive Eq. 1 on each request's
    # own 10 s latency charges 40 s of embodied carbon; the GPU was allocated for only 10 s.
    window = window_carbon([DeviceUsage("A100", 10.0, 3000.0)], 261, tokens=400)
    naive = sum(embodied_carbon_g(10.0, "A100") for _ in range(4))
    assert naive == pytest.approx(4 * window.embodied_g)
    parts = split_by_tokens(window, [100, 100, 150, 50])
    assert math.fsum(p.embodied_g for p in parts) == pytest.approx(window.embodied_g)
    assert parts[2].total_g == pytest.approx(3 * parts[3].total_g)


@pytest.mark.parametrize(
    ("counts", "match"),
    [([], "non-empty"), ([0, 0], "sums to 0"), ([5, -1], r"tokens_per_request\[1\]"),
     ([1.5], "integer"), ("12", "non-empty"), ([3, 4], "served 10 tokens")],
)  # fmt: skip
def test_split_validation(counts: object, match: str) -> None:
    b = CarbonBreakdown(1.0, 1.0, 1.0, tokens=10)
    with pytest.raises(ConfigError, match=match):
        split_by_tokens(b, counts)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="CarbonBreakdown"):
        split_by_tokens({"embodied_g": 1}, [1])  # type: ignore[arg-type]
