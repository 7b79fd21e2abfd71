"""What the real-time backends (torch, vllm) share: timings from token times, GPU traces."""

from __future__ import annotations

import numpy as np
import pytest

from greenllm.backends.realtime import gpu_trace, request_timings
from greenllm.energy import power_model
from greenllm.errors import ConfigError
from greenllm.workloads import RequestSet


def test_timings_from_token_times() -> None:
    reqs = RequestSet(np.array([0.0, 1.0, 2.0]), np.array([10, 10, 10]), np.array([3, 2, 4]))
    t0 = 100.0
    tokens = [[100.5, 100.6, 100.6], [101.4, 101.9], None]  # the third request failed
    t = request_timings(reqs, tokens, t0)
    np.testing.assert_allclose(t.ttft_s[:2], [0.5, 0.4])
    np.testing.assert_allclose(t.finish_s[:2], [0.6, 1.9])
    np.testing.assert_allclose(t.tokens_of(1), [1.4, 1.9])
    np.testing.assert_allclose(t.tpot_s[:2], [0.05, 0.5])
    assert t.served.tolist() == [True, True, False] and np.isnan(t.first_token_s[2])
    assert request_timings(reqs, [[], [], []], t0).served.sum() == 0  # empty = failed too


def test_token_times_are_made_non_decreasing() -> None:
    reqs = RequestSet(np.array([0.0]), np.array([4]), np.array([3]))
    t = request_timings(reqs, [[10.2, 10.1, 10.3]], t0=10.0)
    np.testing.assert_allclose(t.tokens_of(0), [0.2, 0.2, 0.3])


def test_modelled_energy_is_the_sim_power_model() -> None:
    iv = (np.array([1.0, 3.0]), np.array([2.0, 3.5]), np.array([1.0, 0.36]))
    g = gpu_trace("T4", "decode", iv, 4.0, 0.2)
    pm = power_model("T4")
    assert g.busy_s == pytest.approx(1.5) and g.allocated_s == 4.0
    assert g.energy_j == pytest.approx(pm.idle_w * 4 + pm.dynamic_w * (1.0 + 0.5 * 0.36))
    assert np.sum(g.power_w) * 0.2 == pytest.approx(g.energy_j)
    measured = gpu_trace("T4", "decode", iv, 4.0, 0.2, measured_j=123.0)
    assert measured.energy_j == 123.0 and len(measured.power_w) == 0
    clipped = gpu_trace("T4", "decode", (np.array([-1.0]), np.array([9.0]), np.ones(1)), 4.0, 0.2)
    assert clipped.busy_s == 4.0  # intervals are cut to the run
    with pytest.raises(ConfigError):
        gpu_trace("Z9000", "target", iv, 4.0, 0.2, measured_j=1.0)
