"""SimBackend end to end: exact single-request latencies, load behaviour, energy, determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.backends import Backend, RunResult
from greenllm.backends.sim import EngineParams, SimBackend, forward_time_s
from greenllm.carbon import get_gpu
from greenllm.config import SLO, ConfigKind, Configuration, RequestSize, Workload
from greenllm.errors import ConfigError
from greenllm.profiler.store import ProfileRecord
from greenllm.workloads import RequestSet
from tests.backends.sim.test_configs import DPD, DSD, SPEC, STANDALONE, configurations

SIZE = RequestSize(input_tokens=160, output_tokens=140)
WORKLOAD = Workload(
    application="sharegpt", request_size=SIZE, qps=1.0, slo=SLO(ttft_s=0.2, tpot_s=0.08)
)
ALL = (STANDALONE, SPEC, DPD, DSD)


def at(qps: float) -> Workload:
    return WORKLOAD.model_copy(update={"qps": qps})


def test_protocol_and_capabilities() -> None:
    be = SimBackend()
    assert isinstance(be, Backend) and be.name == "sim"
    caps = be.capabilities()
    assert caps.kinds == frozenset(ConfigKind) and caps.energy == "modelled"
    assert not caps.needs_gpu
    be.close()
    be.close()


def test_requests_or_duration_exactly_one() -> None:
    be = SimBackend()
    reqs = RequestSet.poisson(1.0, SIZE, n=2)
    with pytest.raises(ConfigError, match="exactly one"):
        be.run(STANDALONE, WORKLOAD, requests=reqs, duration_s=10)
    with pytest.raises(ConfigError, match="exactly one"):
        be.run(STANDALONE, WORKLOAD)
    with pytest.raises(ConfigError, match="seed"):
        be.run(STANDALONE, WORKLOAD, duration_s=1, seed=-1)
    with pytest.raises(ConfigError, match="dsd_overlap"):
        SimBackend(dsd_overlap="yes")  # type: ignore[arg-type]


def test_single_request_ttft_and_tpot_are_the_forward_times() -> None:
    r = SimBackend().run(
        STANDALONE,
        WORKLOAD,
        requests=RequestSet(np.array([3.0]), np.array([160]), np.array([140])),
        record_token_times=True,
    )
    assert r.requests.ttft_s[0] == pytest.approx(
        forward_time_s("llama-2-7b", "A100", 160), rel=1e-12
    )
    steps = [forward_time_s("llama-2-7b", "A100", 1, 160 + j) for j in range(139)]
    assert r.requests.tpot_s[0] == pytest.approx(np.mean(steps), rel=1e-12)
    assert np.allclose(np.diff(r.requests.tokens_of(0)), steps)
    assert r.duration_s == pytest.approx(r.requests.finish_s[0])
    g = r.gpus[0]
    assert g.busy_s == pytest.approx(r.requests.ttft_s[0] + sum(steps))


def test_low_load_matches_the_operational_laws() -> None:
    """At 0.02 QPS requests barely overlap: each sees its solo latency, and the GPU's busy
    fraction is the arrival rate times one request's busy time (utilisation law U = X S)."""
    be = SimBackend()
    solo = be.run(STANDALONE, WORKLOAD, requests=RequestSet(np.zeros(1), [160], [140]))
    qps = 0.02
    reqs = RequestSet.poisson(qps, SIZE, duration_s=3000, seed=5)
    r = be.run(STANDALONE, at(qps), requests=reqs)
    e2e = r.requests.finish_s - r.requests.arrival_s
    assert np.median(e2e) == pytest.approx(solo.requests.finish_s[0], rel=1e-6)
    assert np.mean(e2e) == pytest.approx(solo.requests.finish_s[0], rel=0.05)
    utilisation = r.gpus[0].busy_s / r.duration_s
    assert utilisation == pytest.approx(len(reqs) / r.duration_s * solo.gpus[0].busy_s, rel=0.05)
    assert r.output_tokens == 140 * len(reqs) and not r.overloaded


def test_ttft_grows_with_qps() -> None:
    be = SimBackend()
    means = []
    for qps in (1.0, 10.0, 20.0, 30.0):
        r = be.run(STANDALONE, at(qps), duration_s=60, seed=1)
        assert not r.overloaded
        means.append(np.mean(r.requests.ttft_s))
    assert all(a < b for a, b in itertools.pairwise(means))


def test_overload_is_detected_at_absurd_qps() -> None:
    be = SimBackend(engine=EngineParams(max_queue_delay_s=30.0))
    r = be.run(STANDALONE, at(2000.0), duration_s=60, seed=0)
    assert r.overloaded and "waited" in r.extra["overload_reason"]
    assert (~r.requests.served).sum() > 0.5 * len(r.requests)
    assert r.slo_attainment() < 0.5
    assert r.extra["wall_s"] < 10


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: c.kind.value)
def test_token_times_are_consistent(cfg: Configuration) -> None:
    reqs = RequestSet.poisson(2.0, SIZE, duration_s=10, seed=3)
    r = SimBackend().run(cfg, WORKLOAD, requests=reqs, record_token_times=True)
    t = r.requests
    for i in range(len(t)):
        times = t.tokens_of(i)
        assert len(times) == t.output_tokens[i]
        assert times[0] == t.first_token_s[i] and times[-1] == t.finish_s[i]
        assert np.all(np.diff(times) >= 0)
    assert r.duration_s == pytest.approx(np.max(t.finish_s))


@settings(max_examples=10, deadline=None)
@given(cfg=configurations(), qps=st.floats(0.2, 3.0), seed=st.integers(0, 20))
def test_energy_is_between_idle_and_max_power(cfg: Configuration, qps: float, seed: int) -> None:
    r = SimBackend().run(cfg, at(qps), duration_s=5, seed=seed)
    for g in r.gpus:
        spec = get_gpu(g.gpu)
        assert g.allocated_s == r.duration_s
        assert spec.idle_power_w * g.allocated_s <= g.energy_j * (1 + 1e-9)
        assert g.energy_j <= spec.max_power_w * g.allocated_s * (1 + 1e-9)
        assert 0 <= g.busy_s <= g.allocated_s * (1 + 1e-9)
        covered = len(g.power_w) * 0.2  # the 200 ms trace integrates to the energy it covers
        if covered > 0:
            assert np.sum(g.power_w) * 0.2 <= g.energy_j * (1 + 1e-9)
            tail = (g.allocated_s - covered) * spec.max_power_w
            assert np.sum(g.power_w) * 0.2 >= g.energy_j - tail - 1e-6


@pytest.mark.parametrize("cfg", ALL, ids=lambda c: c.kind.value)
def test_deterministic_for_a_seed(cfg: Configuration) -> None:
    be = SimBackend()
    a = be.run(cfg, at(3.0), duration_s=10, seed=7)
    b = be.run(cfg, at(3.0), duration_s=10, seed=7)
    _same(a, b)
    c = be.run(cfg, at(3.0), duration_s=10, seed=8)
    assert not np.array_equal(a.requests.arrival_s, c.requests.arrival_s)


def _same(a: RunResult, b: RunResult) -> None:
    np.testing.assert_array_equal(a.requests.finish_s, b.requests.finish_s)
    np.testing.assert_array_equal(a.requests.first_token_s, b.requests.first_token_s)
    assert [g.energy_j for g in a.gpus] == [g.energy_j for g in b.gpus]
    assert (a.link_bytes, a.spec_accepted_tokens) == (b.link_bytes, b.spec_accepted_tokens)


def test_acceptance_draws_depend_on_the_seed() -> None:
    reqs = RequestSet.poisson(2.0, SIZE, duration_s=10, seed=0)
    be = SimBackend()
    a, b = (be.run(SPEC, WORKLOAD, requests=reqs, seed=s) for s in (1, 2))
    assert a.spec_accepted_tokens != b.spec_accepted_tokens
    _same(a, be.run(SPEC, WORKLOAD, requests=reqs, seed=1))


def test_dpd_is_overloaded_where_the_paper_says_it_runs_out_of_memory() -> None:
    """Figure 4: DPD with the 7B model on a T4 hits OOM as QPS grows. Its ~1,400-token KV
    cache holds 4 ShareGPT-P50 requests, so a few QPS already overload the decode side."""
    be = SimBackend(engine=EngineParams(max_queue_delay_s=20.0))
    low = be.run(DPD, at(0.1), duration_s=120, seed=0)
    high = be.run(DPD, at(4.0), duration_s=120, seed=0)
    assert not low.overloaded and high.overloaded
    assert be.run(STANDALONE, at(4.0), duration_s=120, seed=0).overloaded is False


def test_empty_run_and_record() -> None:
    r = SimBackend().run(DSD, WORKLOAD, requests=RequestSet(np.zeros(0), [], []))
    assert r.duration_s == 0 and r.link_bytes == 0 and all(g.energy_j == 0 for g in r.gpus)
    full = SimBackend().run(DSD, WORKLOAD, duration_s=5, seed=0)
    rec = ProfileRecord.from_run(full)
    assert rec.link_bytes == full.link_bytes and rec.n_requests == len(full.requests)
