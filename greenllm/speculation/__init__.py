"""Speculation policy shared by the engine, the simulator and the vLLM backend (no torch).

- :mod:`.adaptive`: how many tokens to propose per request (:class:`AdaptiveK`) from its
  running acceptance and the measured costs, and speculation off where it cannot pay;
- :mod:`.ahead`: the draft-ahead cache (:class:`DraftAheadCache`), proposals drafted while the
  target verifies the previous round, keyed by the round's outcome, and the hit-rate model.
"""

from greenllm.speculation.adaptive import AdaptiveK, ForwardCost, expected_tokens
from greenllm.speculation.ahead import (
    AHEAD_MIN_FULL_ROUNDS,
    AheadKey,
    DraftAheadCache,
    ahead_hit_rate,
    worth_ahead,
)

__all__ = [
    "AHEAD_MIN_FULL_ROUNDS",
    "AdaptiveK",
    "AheadKey",
    "DraftAheadCache",
    "ForwardCost",
    "ahead_hit_rate",
    "expected_tokens",
    "worth_ahead",
]
