"""A real shaped link between two Linux network namespaces, for link experiments (root only).

:class:`ShapedLink` joins two network namespaces, ``<prefix>-new`` (the new-GPU server) and
``<prefix>-old`` (the old-GPU server), by a veth pair whose two ends each send through a
token-bucket filter (``tc qdisc tbf``) at ``gbps``: every byte between the namespaces crosses
the kernel's TCP stack and a real rate limit, unlike
:class:`~greenllm.engine.comm.link.LinkEmulation`, which sleeps for the modelled wire time.
Latency is not added (``netem`` is absent from many container kernels, this one included).
Needs root, ``ip`` and ``tc`` (iproute2).

Run the driver inside the new namespace (``link.command("new", argv)``) and give the
:class:`~greenllm.engine.comm.placement.NetnsPlacement` of the link to the Engine: the new-side
worker then runs beside the driver and the old-side worker in the old namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = ["ShapedLink", "netns_unavailable_reason"]

_SIDES = ("new", "old")
_IPS = {"new": "10.231.0.1", "old": "10.231.0.2"}


def netns_unavailable_reason() -> str | None:
    """Why a :class:`ShapedLink` cannot be built here (not root, no ``ip``/``tc``), or None."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run as root, or skip the shaped-link benchmark)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found: install iproute2"
    return None


@dataclass(frozen=True)
class ShapedLink:
    """Two namespaces joined by a veth pair shaped to ``gbps`` each way.

    Constructing it changes nothing; :meth:`create` (or ``with ShapedLink(...) as link``)
    builds it and :meth:`destroy` removes both namespaces (and so the veth pair). A process
    inside one of the namespaces can rebuild the handle with the same ``prefix`` and ``gbps``.
    """

    gbps: float = 1.0
    prefix: str = ""

    def __post_init__(self) -> None:
        if not (isinstance(self.gbps, (int, float)) and 0 < self.gbps <= 400):
            raise ConfigError(f"gbps={self.gbps!r}: the link rate must be in (0, 400] Gbit/s")
        prefix = self.prefix or f"gl{os.getpid() % 100000}"
        if not prefix.isalnum() or len(prefix) > 8:
            raise ConfigError(f"prefix={prefix!r}: use at most 8 letters or digits")
        object.__setattr__(self, "prefix", prefix)

    def namespace(self, side: str) -> str:
        return f"{self.prefix}-{self._side(side)}"

    def ifname(self, side: str) -> str:
        """The veth end inside ``side``'s namespace."""
        return f"{self.prefix}{self._side(side)[0]}"

    def ip(self, side: str) -> str:
        return _IPS[self._side(side)]

    def command(self, side: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``side``'s namespace."""
        return ["ip", "netns", "exec", self.namespace(side), *argv]

    def create(self) -> ShapedLink:
        reason = netns_unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"cannot build a shaped link: {reason}")
        rate_bytes_per_s = self.gbps * 1e9 / 8
        burst_bytes = max(64 * 1024, int(rate_bytes_per_s / 1000))  # 1 ms of traffic
        new, old = self.ifname("new"), self.ifname("old")
        steps = [
            ["ip", "netns", "add", self.namespace("new")],
            ["ip", "netns", "add", self.namespace("old")],
            ["ip", "link", "add", new, "netns", self.namespace("new"), "type", "veth",
             "peer", "name", old, "netns", self.namespace("old")],
        ]  # fmt: skip
        for side in _SIDES:
            ns, dev = self.namespace(side), self.ifname(side)
            steps += [
                ["ip", "-n", ns, "addr", "add", f"{self.ip(side)}/30", "dev", dev],
                ["ip", "-n", ns, "link", "set", dev, "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                 "rate", f"{self.gbps * 1000:g}mbit", "burst", str(burst_bytes),
                 "latency", "100ms"],
            ]  # fmt: skip
        try:
            for argv in steps:
                _run(argv)
        except BackendUnavailableError:
            self.destroy()
            raise
        return self

    def destroy(self) -> None:
        """Remove both namespaces (the veth pair goes with them); safe to call twice."""
        for side in _SIDES:
            subprocess.run(["ip", "netns", "del", self.namespace(side)], capture_output=True,
                           check=False)  # fmt: skip

    def exists(self) -> bool:
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 check=False).stdout  # fmt: skip
        names = {line.split()[0] for line in listing.splitlines() if line.strip()}
        return all(self.namespace(side) in names for side in _SIDES)

    def __enter__(self) -> ShapedLink:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    @staticmethod
    def _side(side: str) -> str:
        if side not in _SIDES:
            raise ConfigError(f"side={side!r}: use 'new' or 'old'")
        return side


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackendUnavailableError(
            f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}"
        )
