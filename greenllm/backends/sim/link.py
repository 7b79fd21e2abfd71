"""A network link between two GPU servers: fixed bandwidth and latency, FIFO queueing.

A message of ``n`` bytes handed to the link at ``ready_s`` starts serialising when the link is
free and the message is ready, occupies the link for ``8 n / (Gbps x 1e9)`` seconds, and arrives
one propagation latency later:

    start   = max(link free, ready_s)
    arrival = start + latency_s + n x 8 / (Gbps x 1e9)

The latency does not occupy the link (the next message may start serialising while the previous
one is in flight), so back-to-back messages pipeline as on a real network. A link is one
direction; a full-duplex connection is two :class:`Link` objects.

``DEFAULT_LINK_LATENCY_S`` (100 us one way) is an assumption of the order of a same-zone cloud
VM-to-VM TCP hop (a 2014 EC2 same-zone ping measured 0.39-0.65 ms round trip; RDMA fabrics are
an order of magnitude faster); docs/simulator.md discusses it. Pass ``link_latency_s`` to
:class:`~greenllm.backends.sim.SimBackend` to change it.
"""

from __future__ import annotations

import math

from greenllm.errors import ConfigError

__all__ = ["DEFAULT_LINK_LATENCY_S", "Link"]

DEFAULT_LINK_LATENCY_S = 100e-6


class Link:
    """One direction of a network link with FIFO queueing (see the module docstring)."""

    __slots__ = ("_s_per_byte", "free_s", "gbps", "latency_s", "messages", "sent_bytes")

    def __init__(self, gbps: float, latency_s: float = DEFAULT_LINK_LATENCY_S) -> None:
        if isinstance(gbps, bool) or not isinstance(gbps, (int, float)) or not math.isfinite(gbps):
            raise ConfigError(f"link gbps = {gbps!r}: must be a finite number > 0 (e.g. 16)")
        if gbps <= 0:
            raise ConfigError(f"link gbps = {gbps!r}: must be > 0 (e.g. 1 to 100)")
        if (
            isinstance(latency_s, bool)
            or not isinstance(latency_s, (int, float))
            or not math.isfinite(latency_s)
            or latency_s < 0
        ):
            raise ConfigError(f"link latency_s = {latency_s!r}: must be a finite number >= 0")
        self.gbps = float(gbps)
        self.latency_s = float(latency_s)
        self._s_per_byte = 8.0 / (self.gbps * 1e9)
        self.free_s = 0.0  # when the link finishes serialising the last queued message
        self.sent_bytes = 0
        self.messages = 0

    @property
    def busy_s(self) -> float:
        """Total time the link spent serialising messages."""
        return self.sent_bytes * self._s_per_byte

    def send(self, ready_s: float, nbytes: int) -> float:
        """Queue ``nbytes`` ready at ``ready_s``; return its arrival time at the other end."""
        free = self.free_s
        free = (free if free > ready_s else ready_s) + nbytes * self._s_per_byte
        self.free_s = free
        self.sent_bytes += nbytes
        self.messages += 1
        return free + self.latency_s

    def __repr__(self) -> str:
        return f"Link({self.gbps:g} Gbps, {self.latency_s * 1e6:g} us)"
