"""Draft-ahead in the simulator's DSD: hits hide drafting, misses change nothing but energy."""

from __future__ import annotations

import numpy as np
import pytest

from greenllm.backends.sim import LiveSim, SimBackend
from greenllm.config import Configuration
from greenllm.errors import ConfigError
from greenllm.workloads import workload

DSD = Configuration(kind="dsd", old_gpu="V100", draft_model="llama-1b", num_speculative_tokens=2)
LOW = workload("sharegpt", qps=0.25)


def _pair(acceptance: float, qps: float = 0.25) -> tuple[object, object]:
    w = workload("sharegpt", qps=qps)
    return tuple(SimBackend(acceptance_rate=acceptance, dsd_draft_ahead=ahead).run(
        DSD, w, duration_s=120, seed=3) for ahead in (False, True))  # type: ignore[return-value]  # fmt: skip


def _energy_j(r: object, role: str) -> float:
    return sum(g.energy_j for g in r.gpus if g.role == role)  # type: ignore[attr-defined]


def test_every_round_a_hit_hides_drafting() -> None:
    """Acceptance 1: every proposal and every bonus guess is right, so every verdict after a
    sequence's first finds its next proposal drafted (at least in part) and time per output
    token falls; only what was drafted past a request's end is wasted."""
    off, on = _pair(1.0)
    a = on.extra  # type: ignore[attr-defined]
    assert a["ahead_hits"] > 0 and a["ahead_misses"] <= len(on.requests.finish_s)  # type: ignore[attr-defined]
    assert 0 <= a["ahead_wasted_s"] < 0.1 * a["ahead_hidden_s"]
    tpot = lambda r: float(np.nanmedian(r.requests.tpot_s))  # noqa: E731
    assert tpot(on) < 0.97 * tpot(off)
    assert np.array_equal(on.requests.output_tokens, off.requests.output_tokens)  # type: ignore[attr-defined]


def test_draft_ahead_stays_off_where_too_few_rounds_are_fully_accepted() -> None:
    """Acceptance 0.3 at K = 2: 9% of rounds fully accepted, below AHEAD_MIN_FULL_ROUNDS, so
    the draft does not draft ahead: the same run, no ahead counters."""
    off, on = _pair(0.3)
    assert not any(k.startswith("ahead_") for k in on.extra)  # type: ignore[attr-defined]
    assert np.array_equal(on.requests.finish_s, off.requests.finish_s)  # type: ignore[attr-defined]
    assert _energy_j(on, "draft") == _energy_j(off, "draft")


def test_a_miss_waits_for_the_forward_in_progress_and_drafting_ahead_costs_energy() -> None:
    """Acceptance 0.45 at K = 2 (20% of rounds fully accepted: on, 9% hits): the old GPU's
    energy grows with the rounds drafted for nothing, and no request finishes sooner on
    average, as a verdict that comes mid-forward waits for it."""
    off, on = _pair(0.45)
    a = on.extra  # type: ignore[attr-defined]
    assert a["ahead_wasted_s"] > a["ahead_hidden_s"] > 0
    assert _energy_j(on, "draft") > _energy_j(off, "draft")
    assert _energy_j(on, "target") == pytest.approx(_energy_j(off, "target"), rel=0.05)


def test_the_hit_rate_follows_the_model() -> None:
    """Hits / verdicts near ahead_hit_rate(0.7, 2) = 0.343 at the paper's acceptance."""
    _, on = _pair(0.7, qps=1.0)
    a = on.extra  # type: ignore[attr-defined]
    rate = a["ahead_hits"] / (a["ahead_hits"] + a["ahead_misses"])
    assert rate == pytest.approx(0.7**3, abs=0.03)


def test_live_sim_serves_with_draft_ahead() -> None:
    from greenllm.backends.sim.options import SimOptions

    live = LiveSim(DSD, time_scale=50.0, options=SimOptions(dsd_draft_ahead=True))
    assert live.plan.configuration == DSD


def test_the_flag_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="dsd_draft_ahead"):
        SimBackend(dsd_draft_ahead="yes")  # type: ignore[arg-type]
