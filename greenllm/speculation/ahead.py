"""Draft-ahead: the draft drafts round r + 1 while the target verifies round r.

In Disg-Spec-Decode the draft GPU waits while the target verifies, and the target waits while
the draft drafts. Draft-ahead fills the first wait: right after sending round r's K proposals,
the draft guesses round r's most likely outcome, all K accepted plus a bonus token it guesses
itself (its own most likely token), and drafts the next proposal after it. When the target's
verdict arrives it is looked up by (request, accepted count, next token): a hit sends the
proposal at once (drafting is off the critical path), a miss drafts on demand as before.
Verification is unchanged, so outputs keep the target's distribution exactly.

:func:`ahead_hit_rate` is the model the simulator uses: a round is a hit when all K proposals
are accepted (alpha^K) and the bonus guess is right.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, NamedTuple, TypeVar

from greenllm.errors import ConfigError

__all__ = ["AHEAD_MIN_FULL_ROUNDS", "AheadKey", "DraftAheadCache", "ahead_hit_rate", "worth_ahead"]

V = TypeVar("V")

AHEAD_MIN_FULL_ROUNDS = 0.15
"""Draft ahead only where at least this share of rounds is fully accepted: below it nearly
every round drafted ahead is thrown away (old-GPU energy), and a verdict that arrives while
the draft is mid-forward on a round that will not happen waits for that forward."""


def worth_ahead(full_round_share: float) -> bool:
    """Whether drafting ahead can pay at this share of fully accepted rounds."""
    return full_round_share >= AHEAD_MIN_FULL_ROUNDS


class AheadKey(NamedTuple):
    """A round's outcome: the request, how many proposals were accepted, the token after them."""

    request_id: int
    accepted: int
    next_token: int


def ahead_hit_rate(alpha: float, k: int, bonus_accuracy: float | None = None) -> float:
    """Probability that the proposal drafted ahead for "all ``k`` accepted" is the one needed:
    alpha^k x the chance the draft's bonus guess is the target's token (default ``alpha``:
    the guess is one more draft token)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha = {alpha!r}: must be in [0, 1]")
    if k < 0:
        raise ConfigError(f"k = {k!r}: must be >= 0")
    g = alpha if bonus_accuracy is None else bonus_accuracy
    if not 0.0 <= g <= 1.0:
        raise ConfigError(f"bonus_accuracy = {bonus_accuracy!r}: must be in [0, 1]")
    return float(alpha**k * g)


class DraftAheadCache(Generic[V]):
    """Proposals drafted ahead, by :class:`AheadKey`, least recently stored evicted first.

    A verdict :meth:`take`-s its request's entries: the one it matches (a hit) or none (a
    miss); the others are stale either way. ``max_entries`` bounds the whole cache (a draft
    server shared by many requests), ``max_per_request`` the outcomes kept per request.
    """

    def __init__(self, max_entries: int = 1024, max_per_request: int = 4) -> None:
        for name, v in (("max_entries", max_entries), ("max_per_request", max_per_request)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"DraftAheadCache.{name} = {v!r}: must be an integer >= 1")
        self.max_entries, self.max_per_request = max_entries, max_per_request
        self._items: OrderedDict[AheadKey, V] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def put(self, key: AheadKey, value: V) -> None:
        """Store (or replace) ``value`` for ``key``, evicting the oldest entries of its request
        beyond ``max_per_request``, then the oldest overall beyond ``max_entries``."""
        self._items.pop(key, None)
        self._items[key] = value
        mine = [k for k in self._items if k.request_id == key.request_id]
        for old in mine[: max(0, len(mine) - self.max_per_request)]:
            del self._items[old]
            self.evictions += 1
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
            self.evictions += 1

    def peek(self, key: AheadKey) -> V | None:
        return self._items.get(key)

    def take(self, key: AheadKey) -> V | None:
        """The value drafted for ``key`` (a hit) or None (a miss); every entry of the request
        is removed."""
        value = self._items.pop(key, None)
        self.drop(key.request_id)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def drop(self, request_id: int) -> None:
        """Forget a request (finished, aborted, or its round settled)."""
        for old in [k for k in self._items if k.request_id == request_id]:
            del self._items[old]

    @property
    def hit_rate(self) -> float | None:
        n = self.hits + self.misses
        return self.hits / n if n else None
