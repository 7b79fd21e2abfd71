"""AdaptiveK: K from the running acceptance and the costs, bounded, off when it cannot pay."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.errors import ConfigError
from greenllm.speculation import AdaptiveK, ForwardCost, expected_tokens


def _cost(base_s: float, per_token_s: float) -> ForwardCost:
    cost = ForwardCost()
    for n in (1, 5, 40, 200):
        cost.add(n, base_s + per_token_s * n)
    return cost


def test_expected_tokens_is_leviathan_eq_1() -> None:
    assert expected_tokens(0.6, 4) == pytest.approx((1 - 0.6**5) / 0.4)
    assert expected_tokens(1.0, 4) == 5 and expected_tokens(0.0, 4) == 1
    assert expected_tokens(0.6, 0) == 1


def test_the_cost_fit_recovers_a_line_and_clamps_at_zero() -> None:
    assert _cost(0.02, 0.001).coefficients() == pytest.approx((0.02, 0.001))
    flat = ForwardCost()
    flat.add(5, 0.03)
    flat.add(5, 0.05)
    assert flat.coefficients() == pytest.approx((0.04, 0.0)) and flat.known
    assert ForwardCost().coefficients() == (0.0, 0.0) and not ForwardCost().known


def test_a_memory_bound_target_and_a_cheap_draft_take_long_rounds() -> None:
    """A GPU's verification costs the same for 1 or 8 tokens: with alpha near 0.9 and a draft
    at 5% of the target's forward, the longest K pays best."""
    policy = AdaptiveK(k_max=8)
    for _ in range(50):
        policy.observe(8, 8)
    policy.observe(8, 3)
    assert policy.alpha > 0.9
    assert policy.next_k(draft=0.001, target=_cost(0.02, 0.0)) == 8


def test_a_compute_bound_target_turns_speculation_off() -> None:
    """On a CPU verifying K + 1 tokens costs K + 1 forwards (the base is small): no K pays, so
    the request decodes plainly (speculation need never be slower)."""
    policy = AdaptiveK(k_max=8)
    assert policy.next_k(draft=0.004, target=_cost(0.001, 0.02)) == 0


def test_a_request_whose_drafts_are_rejected_shortens_then_stops() -> None:
    target = _cost(0.02, 0.0005)
    policy = AdaptiveK(k_max=6)
    first = policy.next_k(draft=0.004, target=target)
    for _ in range(6):
        policy.observe(first, 0)
    later = policy.next_k(draft=0.004, target=target)
    assert first > later
    for _ in range(40):
        policy.observe(1, 0)
    assert policy.next_k(draft=0.004, target=target) == 0


@settings(max_examples=200, deadline=None)
@given(k_max=st.integers(1, 12), limit=st.integers(0, 12), acc=st.integers(0, 200),
       rej=st.integers(0, 200), draft_s=st.floats(0, 0.1), base_s=st.floats(0, 0.1),
       per_s=st.floats(0, 0.01))  # fmt: skip
def test_k_is_bounded_and_zero_only_when_nothing_pays(
    k_max: int, limit: int, acc: int, rej: int, draft_s: float, base_s: float, per_s: float
) -> None:
    policy = AdaptiveK(k_max=k_max)
    policy.accepted, policy.rejected = acc, rej
    target = _cost(base_s, per_s)
    k = policy.next_k(draft_s, target, limit=limit)
    assert 0 <= k <= min(k_max, limit)
    gains = [policy.gain(j, draft_s, target) for j in range(1, min(k_max, limit) + 1)]
    if k == 0:
        assert all(g <= 1.0 for g in gains)
    else:
        assert policy.gain(k, draft_s, target) == pytest.approx(max(gains))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k_max": 0}, "k_max"), ({"k_max": True}, "k_max"), ({"k_max": 4, "prior_alpha": 1.0},
    "prior_alpha"), ({"k_max": 4, "prior_weight": 0}, "prior_weight"),
    ({"k_max": 4, "min_gain": 0.5}, "min_gain"),
])  # fmt: skip
def test_bad_settings_name_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AdaptiveK(**kwargs)  # type: ignore[arg-type]


def test_an_impossible_round_is_refused() -> None:
    with pytest.raises(ConfigError, match="accepted = 5 of proposed = 4"):
        AdaptiveK(k_max=4).observe(4, 5)


def test_a_draft_cost_line_counts_its_fixed_latency() -> None:
    """A link round trip of 10 ms per round (fixed, whatever K) makes short rounds worse."""
    target = _cost(0.02, 0.0)
    policy = AdaptiveK(k_max=8)
    per_token = policy.gain(2, 0.001, target)
    draft = ForwardCost()
    for k in (1, 4, 8):
        draft.add(k, 0.010 + 0.001 * k)
    assert policy.gain(2, draft, target) < per_token
    assert policy.next_k(draft, target) >= policy.next_k(0.001, target)
