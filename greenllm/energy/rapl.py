"""CPU package and DRAM energy from Linux powercap RAPL (``/sys/class/powercap/intel-rapl:*``).

Each zone has a cumulative ``energy_uj`` counter that wraps at ``max_energy_range_uj``; the
sampler unwraps it (a read every ``period_s`` is far more often than the counter wraps: ~262 kJ,
over 40 min at 100 W). A window's energy is the counter difference; the power samples (counter
difference / time between reads) give the peak. Recent kernels expose AMD Zen CPUs under the
same ``intel-rapl`` name. Since the fix for CVE-2020-8694 (Linux 5.10 and stable backports)
``energy_uj`` is readable by root only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from greenllm.energy.sampler import PowerSampler, Sample
from greenllm.errors import ConfigError, ProfileError

__all__ = ["RAPL_ROOT", "RAPLSampler", "RaplZone", "find_rapl_zones", "rapl_available"]

logger = logging.getLogger(__name__)

RAPL_ROOT = "/sys/class/powercap"
DOMAINS = ("package", "dram", "core", "uncore", "psys")


@dataclass(frozen=True)
class RaplZone:
    """One RAPL zone: ``name`` like ``package-0`` or ``package-0/dram``."""

    name: str
    path: Path
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def _domain(zone_name: str) -> str:
    return zone_name.split("-", 1)[0]


def find_rapl_zones(
    root: str | Path = RAPL_ROOT, domains: Sequence[str] = ("package", "dram")
) -> list[RaplZone]:
    """RAPL zones under ``root`` whose domain is in ``domains``, readable or not.

    ``core`` and ``uncore`` are parts of ``package`` and ``psys`` covers the whole platform, so
    the default (package + DRAM) does not count any energy twice.
    """
    root = Path(root)
    zones: list[RaplZone] = []
    names: dict[str, str] = {}
    dirs = sorted(root.glob("intel-rapl:*"), key=lambda p: [int(x) for x in p.name.split(":")[1:]])
    for d in dirs:
        try:
            name = (d / "name").read_text().strip()
            max_uj = int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        names[d.name] = name
        parent = d.name.rsplit(":", 1)[0]
        full = f"{names[parent]}/{name}" if d.name.count(":") == 2 and parent in names else name
        if _domain(name) in domains:
            zones.append(RaplZone(full, d, max_uj))
    return zones


def rapl_available(root: str | Path = RAPL_ROOT) -> bool:
    """True when at least one package/DRAM zone exists and its ``energy_uj`` is readable."""
    try:
        zones = find_rapl_zones(root)
        for z in zones:
            z.read_uj()
    except (OSError, ValueError):
        return False
    return bool(zones)


class RAPLSampler(PowerSampler):
    """CPU energy from RAPL counters; devices are zones (``package-0``, ``package-0/dram``)."""

    counter_is_primary = True

    def __init__(
        self,
        period_s: float = 0.2,
        *,
        root: str | Path = RAPL_ROOT,
        domains: Sequence[str] = ("package", "dram"),
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(period_s, clock=clock)
        bad = [d for d in domains if d not in DOMAINS]
        if isinstance(domains, str) or not domains or bad:
            raise ConfigError(f"RAPLSampler: domains = {domains!r}: choose from {DOMAINS}")
        self._root, self._domains = Path(root), tuple(domains)
        self._zones: list[RaplZone] = []
        self._last_uj: dict[str, int] = {}
        self._total_j: dict[str, float] = {}
        self._last_poll: tuple[float, dict[str, float]] | None = None

    def _unavailable(self, why: str) -> ProfileError:
        return ProfileError(
            f"RAPL not available: {why}. On Linux with an Intel or AMD Zen CPU, load the "
            f"intel_rapl_common module; energy_uj is root-only since CVE-2020-8694: run as root or "
            f"`sudo chmod a+r {self._root}/intel-rapl:*/energy_uj`. Or use NullSampler/"
            f"ModelledSampler"
        )

    def _open(self) -> Sequence[str]:
        zones = find_rapl_zones(self._root, self._domains)
        if not zones:
            raise self._unavailable(f"no {'/'.join(self._domains)} zone under {self._root}")
        try:
            self._last_uj = {z.name: z.read_uj() for z in zones}
        except (OSError, ValueError) as err:
            raise self._unavailable(f"cannot read energy_uj: {err}") from err
        self._zones = zones
        self._total_j = {z.name: 0.0 for z in zones}
        self._last_poll = None
        return tuple(z.name for z in zones)

    def _counters_j(self) -> Mapping[str, float] | None:
        for z in self._zones:
            try:
                raw = z.read_uj()
            except (OSError, ValueError):
                self._count_error(z.name)
                continue
            last = self._last_uj[z.name]
            delta = raw - last if raw >= last else raw + z.max_energy_range_uj - last
            self._total_j[z.name] += delta / 1e6
            self._last_uj[z.name] = raw
        return dict(self._total_j)

    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]:
        totals = dict(self._counters_j() or {})
        prev, self._last_poll = self._last_poll, (now_s, totals)
        if prev is None or now_s <= prev[0]:
            return []
        dt = now_s - prev[0]
        return [(d, now_s, (e - prev[1][d]) / dt) for d, e in totals.items()]
