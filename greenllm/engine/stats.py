"""Counters the engine reports: bytes per link direction and category, busy time per worker,
draft tokens proposed/accepted, and how long the target waited for draft probabilities.

Workers keep a :class:`WorkerCounters` and send its :meth:`~WorkerCounters.snapshot` to the
driver on request; the driver folds the snapshots into one :class:`EngineStats`. The
"new -> old" direction is what the new-GPU worker (target / prefill) sent; "old -> new" what
the old-GPU worker (draft / decode) sent. Categories: ``ids`` (draft token ids), ``probs``
(draft probability rows, or draft-token probabilities in lean mode), ``kv`` (KV cache),
``control`` (admission, feedback, row requests) and ``header`` (framing, 96 bytes a message).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EngineStats", "WorkerCounters", "WorkerStats"]


class WorkerCounters:
    """Mutable counters inside one worker (updated by its compute thread)."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.busy_s = 0.0
        self.forward_passes = 0
        self.proposed = 0
        self.accepted = 0
        self.steps = 0
        self.probs_wait_s = 0.0  # target: time blocked on draft probabilities after its forward
        self.row_fetches = 0
        self.fallback_requests = 0
        self.reruns = 0
        self.requests = 0
        # draft-ahead (DSD draft): verdicts that found their proposal drafted ahead or not;
        # drafting time before a hit's verdict (hidden), after it (exposed), on misses (wasted)
        self.ahead_hits = 0
        self.ahead_misses = 0
        self.ahead_hidden_s = 0.0
        self.ahead_exposed_s = 0.0
        self.ahead_wasted_s = 0.0
        self.events: list[str] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Time a forward pass (or another compute span) as busy time."""
        start_s = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.busy_s += time.perf_counter() - start_s
                self.forward_passes += 1

    def event(self, text: str) -> None:
        with self._lock:
            self.events.append(f"{time.time():.3f} {text}")

    def snapshot(self, transport: Any = None) -> dict[str, Any]:
        with self._lock:
            snap: dict[str, Any] = {
                "role": self.role, "busy_s": self.busy_s, "forward_passes": self.forward_passes,
                "proposed": self.proposed, "accepted": self.accepted, "steps": self.steps,
                "probs_wait_s": self.probs_wait_s, "row_fetches": self.row_fetches,
                "fallback_requests": self.fallback_requests, "reruns": self.reruns,
                "requests": self.requests, "events": list(self.events),
                "ahead_hits": self.ahead_hits, "ahead_misses": self.ahead_misses,
                "ahead_hidden_s": self.ahead_hidden_s, "ahead_exposed_s": self.ahead_exposed_s,
                "ahead_wasted_s": self.ahead_wasted_s,
            }  # fmt: skip
        if transport is not None:
            snap["bytes_sent"] = dict(transport.bytes_sent)
            snap["bytes_received"] = dict(transport.bytes_received)
            snap["wire_s"] = transport.wire_s
        return snap


@dataclass(frozen=True)
class WorkerStats:
    """One worker's counters as reported to the driver."""

    role: str
    side: str  # "new" or "old"
    busy_s: float
    forward_passes: int
    requests: int
    events: tuple[str, ...] = ()
    alive: bool = True


@dataclass(frozen=True)
class EngineStats:
    """Totals over an engine's lifetime (since :meth:`Engine.start`).

    bytes_new_to_old / bytes_old_to_new: bytes sent in each direction per category.
    wire_s_new_to_old / wire_s_old_to_new: emulated wire seconds per category (link emulation).
    probs_wait_s: time the target spent blocked on draft probabilities after its verification
    forward (Disg-Spec-Decode); with the overlap this is the part of the transfer not hidden.
    ahead_*: draft-ahead (DSD): verdicts whose next proposal was drafted ahead (hits) or not,
    and the draft's drafting time before a hit's verdict (hidden behind the target's
    verification), after it (exposed), and for outcomes that did not happen (wasted).
    """

    mode: str
    workers: tuple[WorkerStats, ...]
    bytes_new_to_old: dict[str, int] = field(default_factory=dict)
    bytes_old_to_new: dict[str, int] = field(default_factory=dict)
    wire_s_new_to_old: dict[str, float] = field(default_factory=dict)
    wire_s_old_to_new: dict[str, float] = field(default_factory=dict)
    proposed_tokens: int = 0
    accepted_tokens: int = 0
    verify_steps: int = 0
    probs_wait_s: float = 0.0
    row_fetches: int = 0
    fallback_requests: int = 0
    reruns: int = 0
    ahead_hits: int = 0
    ahead_misses: int = 0
    ahead_hidden_s: float = 0.0
    ahead_exposed_s: float = 0.0
    ahead_wasted_s: float = 0.0

    @property
    def ahead_hit_rate(self) -> float:
        """Hits / verdicts of draft-ahead (NaN without it)."""
        n = self.ahead_hits + self.ahead_misses
        return self.ahead_hits / n if n else float("nan")

    @property
    def ahead_hidden_share(self) -> float:
        """Share of the hits' drafting time done before their verdicts (NaN without hits)."""
        total = self.ahead_hidden_s + self.ahead_exposed_s
        return self.ahead_hidden_s / total if total else float("nan")

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (NaN without speculation)."""
        return self.accepted_tokens / self.proposed_tokens if self.proposed_tokens else float("nan")

    @property
    def link_bytes(self) -> int:
        """All bytes moved between the two workers, both directions, headers included."""
        return sum(self.bytes_new_to_old.values()) + sum(self.bytes_old_to_new.values())

    def busy_s(self, side: str) -> float:
        """Busy seconds of the worker on ``side`` ("new" or "old"); 0 if there is none."""
        return sum(w.busy_s for w in self.workers if w.side == side)

    @classmethod
    def combine(cls, mode: str, snaps: list[tuple[str, dict[str, Any], bool]]) -> EngineStats:
        """Fold ``(side, snapshot, alive)`` triples from the workers into totals."""
        out: dict[str, Any] = {"new": {}, "old": {}, "wire_new": {}, "wire_old": {}}
        totals = dict.fromkeys(("proposed", "accepted", "steps", "row_fetches",
                                "fallback_requests", "reruns"), 0)  # fmt: skip
        wait_s = 0.0
        ahead = dict.fromkeys(("ahead_hits", "ahead_misses"), 0)
        ahead_s = dict.fromkeys(("ahead_hidden_s", "ahead_exposed_s", "ahead_wasted_s"), 0.0)
        workers = []
        received = {side: snap.get("bytes_received", {}) for side, snap, _ in snaps}
        for side, snap, alive in snaps:
            workers.append(WorkerStats(snap.get("role", "?"), side, float(snap.get("busy_s", 0.0)),
                                       int(snap.get("forward_passes", 0)),
                                       int(snap.get("requests", 0)),
                                       tuple(snap.get("events", ())), alive))  # fmt: skip
            sent = snap.get("bytes_sent")
            if sent is None:  # a dead worker never reported: count what its peer received
                sent = received.get("old" if side == "new" else "new", {})
            out[side] = _add(out[side], sent)
            out["wire_" + side] = _add(out["wire_" + side], snap.get("wire_s", {}))
            for key in totals:
                totals[key] += int(snap.get(key, 0))
            wait_s += float(snap.get("probs_wait_s", 0.0))
            for key in ahead:
                ahead[key] += int(snap.get(key, 0))
            for key in ahead_s:
                ahead_s[key] += float(snap.get(key, 0.0))
        return cls(mode, tuple(workers), out["new"], out["old"], out["wire_new"],
                   out["wire_old"], totals["proposed"], totals["accepted"], totals["steps"],
                   wait_s, totals["row_fetches"], totals["fallback_requests"],
                   totals["reruns"], **ahead, **ahead_s)  # fmt: skip


def _add(into: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    merged = dict(into)
    for k, v in more.items():
        merged[k] = merged.get(k, 0) + v
    return merged
