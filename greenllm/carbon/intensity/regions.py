"""Annual grid carbon intensity by region (the ``CI``/``alpha`` of Eq. 2 and 5).

``carbon_intensity(region)`` gives one g/kWh figure. Sources, in lookup order:

* the paper's regions (Section 7.5): ``NCSW`` 17, ``CISO`` 261, ``MISO`` 501 -- these exact
  values win even where a shipped trace exists (CISO's 2022 trace mean is 256, MISO's 441);
* US balancing authorities ``ERCO``, ``PJM``, ``NYIS``, ``BPAT``: the time-weighted 2022 mean of
  the shipped hourly traces (HewlettPackard/dc-rl, from US EIA data; MIT);
* countries by ISO-3166 alpha-3 code (``FRA``, ``USA``, ...) or English name: Our World in Data's
  ``carbon_intensity_elec`` (Ember / Energy Institute), latest year per country, as packaged in
  codecarbon 3.3.2's ``global_energy_mix.json`` (MIT). See ``data/README.md``.

The hourly traces are :class:`~greenllm.carbon.intensity.trace.CarbonIntensityTrace`; a grid
region's annual figure is its trace's time-weighted mean.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
from dataclasses import dataclass
from typing import Literal

from greenllm.carbon.intensity.data import PAPER_REGIONS, TRACE_REGIONS, canonical_code, data_text
from greenllm.carbon.intensity.trace import CarbonIntensityTrace
from greenllm.errors import ConfigError

__all__ = [
    "RegionInfo",
    "RegionKind",
    "annual_table",
    "carbon_intensity",
    "list_regions",
    "region_info",
]

RegionKind = Literal["paper", "grid", "country"]


@dataclass(frozen=True)
class RegionInfo:
    """One region's annual carbon intensity and where the number comes from."""

    code: str
    name: str
    g_per_kwh: float
    kind: RegionKind
    year: int
    source: str


@functools.lru_cache(maxsize=1)
def annual_table() -> dict[str, RegionInfo]:
    table: dict[str, RegionInfo] = {}
    for row in csv.DictReader(io.StringIO(data_text("countries-carbon-intensity.csv"))):
        table[row["iso3"]] = RegionInfo(
            row["iso3"], row["country"], float(row["g_per_kwh"]), "country", int(row["year"]),
            "Our World in Data carbon_intensity_elec via codecarbon 3.3.2",
        )  # fmt: skip
    for code, name in TRACE_REGIONS.items():
        trace = CarbonIntensityTrace.from_region(code, periodic=False)
        mean = float(trace.mean(trace.start_s, trace.end_s))
        table[code] = RegionInfo(code, name, mean, "grid", 2022, "HewlettPackard/dc-rl (US EIA)")
    for code, (name, value) in PAPER_REGIONS.items():
        table[code] = RegionInfo(code, name, value, "paper", 2022, "GreenLLM paper, Sec. 7.5")
    return table


def region_info(region: str) -> RegionInfo:
    """Where ``region``'s intensity comes from; case-insensitive code, alias or country name."""
    table = annual_table()
    key = canonical_code(region) if isinstance(region, str) else ""
    if key in table:
        return table[key]
    by_name = {info.name.upper(): info for info in table.values() if info.kind == "country"}
    if key in by_name:
        return by_name[key]
    close = difflib.get_close_matches(key, [*table, *by_name], n=4, cutoff=0.6)
    hints = {(table[c] if c in table else by_name[c]).code: c for c in close}
    hint = ", ".join(f"{code} ({table[code].name})" for code in hints) or "none"
    raise ConfigError(
        f"unknown region {region!r}; close matches: {hint}. Regions are the paper's "
        f"NCSW/CISO/MISO, US grids {', '.join(TRACE_REGIONS)}, and ISO-3166 alpha-3 country "
        "codes; list them all with greenllm.carbon.list_regions()"
    )


def carbon_intensity(region: str) -> float:
    """Annual carbon intensity of ``region`` in gCO2eq/kWh (the ``CI`` of Eq. 2)."""
    return region_info(region).g_per_kwh


def list_regions(kind: RegionKind | None = None) -> dict[str, float]:
    """All known region codes -> g/kWh, sorted; ``kind`` filters paper/grid/country."""
    if kind not in (None, "paper", "grid", "country"):
        raise ConfigError(f"list_regions(kind={kind!r}): kind must be paper, grid, country or None")
    table = annual_table()
    return {c: table[c].g_per_kwh for c in sorted(table) if kind in (None, table[c].kind)}
