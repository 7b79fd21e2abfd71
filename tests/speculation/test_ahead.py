"""The draft-ahead cache (keys, eviction, hit accounting) and the hit-rate model."""

from __future__ import annotations

import pytest

from greenllm.errors import ConfigError
from greenllm.speculation import AheadKey, DraftAheadCache, ahead_hit_rate


def test_a_verdict_takes_its_outcome_and_clears_the_request() -> None:
    cache: DraftAheadCache[str] = DraftAheadCache()
    cache.put(AheadKey(1, 4, 17), "all accepted, bonus 17")
    cache.put(AheadKey(1, 2, 9), "rejected at 2, correction 9")
    cache.put(AheadKey(2, 4, 5), "another request")
    assert cache.take(AheadKey(1, 4, 17)) == "all accepted, bonus 17"
    assert AheadKey(1, 2, 9) not in cache and AheadKey(2, 4, 5) in cache  # stale: dropped
    assert cache.take(AheadKey(2, 4, 6)) is None  # the bonus guess was wrong: a miss
    assert len(cache) == 0 and (cache.hits, cache.misses) == (1, 1) and cache.hit_rate == 0.5


def test_the_key_is_request_accepted_and_token() -> None:
    cache: DraftAheadCache[int] = DraftAheadCache()
    cache.put(AheadKey(7, 3, 11), 1)
    assert cache.peek(AheadKey(7, 3, 11)) == 1
    assert cache.peek(AheadKey(7, 2, 11)) is None and cache.peek(AheadKey(7, 3, 12)) is None
    assert cache.peek(AheadKey(8, 3, 11)) is None
    cache.put(AheadKey(7, 3, 11), 2)  # replaced, not duplicated
    assert len(cache) == 1 and cache.peek(AheadKey(7, 3, 11)) == 2


def test_eviction_per_request_then_overall_oldest_first() -> None:
    cache: DraftAheadCache[int] = DraftAheadCache(max_entries=3, max_per_request=2)
    for token in range(3):
        cache.put(AheadKey(1, 4, token), token)
    assert AheadKey(1, 4, 0) not in cache and len(cache) == 2 and cache.evictions == 1
    cache.put(AheadKey(2, 4, 0), 10)
    cache.put(AheadKey(3, 4, 0), 20)  # over max_entries: the oldest overall goes
    assert AheadKey(1, 4, 1) not in cache and len(cache) == 3 and cache.evictions == 2
    cache.drop(2)
    assert AheadKey(2, 4, 0) not in cache and cache.hit_rate is None


def test_hit_rate_model() -> None:
    assert ahead_hit_rate(0.6, 4) == pytest.approx(0.6**5)
    assert ahead_hit_rate(0.8, 2, bonus_accuracy=1.0) == pytest.approx(0.64)
    assert ahead_hit_rate(1.0, 8) == 1.0 and ahead_hit_rate(0.5, 0) == 0.5


@pytest.mark.parametrize(("call", "match"), [
    (lambda: ahead_hit_rate(1.5, 2), "alpha"), (lambda: ahead_hit_rate(0.5, -1), "k"),
    (lambda: ahead_hit_rate(0.5, 2, 2.0), "bonus_accuracy"),
    (lambda: DraftAheadCache(max_entries=0), "max_entries"),
    (lambda: DraftAheadCache(max_per_request=False), "max_per_request"),
])  # fmt: skip
def test_bad_values_name_the_field(call: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        call()  # type: ignore[operator]
