"""Link emulation: a bandwidth/latency limiter for the engine's data plane (EMULATION ONLY).

The paper's disaggregated configurations move draft probabilities (Disg-Spec-Decode) or KV
caches (Disg-Pref-Decode) between a new and an old GPU over a network link (Section 3.2,
Figure 7). On one machine the real transport (gloo over loopback, ~2 GB/s) is much faster than
a datacentre link, so experiments can slow it down here: every message is held back by the
time a real link of ``bandwidth_gbps`` would need to serialise it, plus ``latency_s``.

The model is a single FIFO wire per direction: a message departs when the wire is free, takes
``bytes * 8 / (bandwidth_gbps * 1e9)`` seconds on the wire, and arrives ``latency_s`` later.
:class:`LinkShaper` applies it by sleeping in a sender thread before the real ``isend``, so the
sending worker itself is not blocked (non-blocking sends stay non-blocking). This emulates
wire time only; it does not model congestion, loss or TCP dynamics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from greenllm.errors import ConfigError

__all__ = ["LinkDict", "LinkEmulation", "LinkShaper"]

logger = logging.getLogger(__name__)


class LinkDict(TypedDict):
    """A :class:`LinkEmulation` as JSON (in the workers' ``init`` message)."""

    bandwidth_gbps: float
    latency_s: float


@dataclass(frozen=True)
class LinkEmulation:
    """An emulated link: ``bandwidth_gbps`` (gigabits per second) and one-way ``latency_s``."""

    bandwidth_gbps: float = 1.0
    latency_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.bandwidth_gbps > 0:
            raise ConfigError(f"bandwidth_gbps={self.bandwidth_gbps!r}: must be > 0 (e.g. 1.0)")
        if not self.latency_s >= 0:
            raise ConfigError(f"latency_s={self.latency_s!r}: must be >= 0")

    def wire_time_s(self, nbytes: int) -> float:
        """Serialisation time of ``nbytes`` on this link (latency excluded)."""
        return nbytes * 8.0 / (self.bandwidth_gbps * 1e9)

    def to_dict(self) -> LinkDict:
        return {"bandwidth_gbps": self.bandwidth_gbps, "latency_s": self.latency_s}

    @classmethod
    def from_dict(cls, data: LinkDict | None) -> LinkEmulation | None:
        """The link ``data`` describes, or None for no emulation."""
        return (
            None if data is None else cls(float(data["bandwidth_gbps"]), float(data["latency_s"]))
        )


@dataclass
class _Pending:
    deliver_at: float
    send: Callable[[], None]
    done: threading.Event
    error: list[BaseException]


class LinkShaper:
    """Delays sends as an emulated FIFO link; each send runs in the shaper's thread when due.

    ``submit({category: nbytes}, send)`` returns an event set once ``send()`` has run (and any
    exception is
    kept in ``error``). ``wire_s`` accumulates the emulated serialisation time per category.
    """

    def __init__(self, link: LinkEmulation, name: str = "link") -> None:
        self.link = link
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._free_at = 0.0
        self._lock = threading.Lock()
        self.wire_s: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name=f"greenllm-{name}", daemon=True)
        self._thread.start()

    def submit(
        self, nbytes: dict[str, int], send: Callable[[], None]
    ) -> tuple[threading.Event, list[BaseException]]:
        """Schedule ``send()`` for when a message of ``nbytes`` (bytes per category, summed)
        would have arrived over the link."""
        wire = self.link.wire_time_s(sum(nbytes.values()))
        with self._lock:
            depart = max(time.monotonic(), self._free_at)
            self._free_at = depart + wire
            deliver = self._free_at + self.link.latency_s
            for category, n in nbytes.items():
                self.wire_s[category] = self.wire_s.get(category, 0.0) + self.link.wire_time_s(n)
        item = _Pending(deliver, send, threading.Event(), [])
        self._queue.put(item)
        return item.done, item.error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            delay = item.deliver_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                item.send()
            except BaseException as err:  # handed to the waiter; the link keeps running
                item.error.append(err)
            item.done.set()

    def close(self) -> None:
        self._queue.put(None)
