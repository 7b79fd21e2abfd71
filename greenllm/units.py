"""Units, physical constants and input limits, defined once for the whole package.

The ``MAX_*``/``MIN_*`` limits bound every number that enters the carbon, workloads and config
API (see docs/carbon.md and docs/workloads.md): a value outside them raises
:class:`~greenllm.errors.ConfigError` where it enters, so no result is NaN or infinite and no
call asks for unbounded memory or time.
"""

from __future__ import annotations

__all__ = [
    "G_PER_KG",
    "J_PER_KWH",
    "MAX_DEVICE_LIFETIME_YEARS",
    "MAX_DEVICE_POWER_W",
    "MAX_EMBODIED_G",
    "MAX_ENERGY_J",
    "MAX_EXACT_COUNT",
    "MAX_INTENSITY_G_PER_KWH",
    "MAX_LIFETIME_YEARS",
    "MAX_PERIOD_S",
    "MAX_PUE",
    "MAX_QPS",
    "MAX_REPLAY_SPEED",
    "MAX_REQUESTS",
    "MAX_TIME_S",
    "MAX_TOKENS",
    "MIN_LIFETIME_YEARS",
    "MIN_QPS",
    "SECONDS_PER_HOUR",
    "SECONDS_PER_YEAR",
]

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_YEAR = 365.25 * 86_400.0
"""A Julian year (31,557,600 s): the unit of GPU lifetimes in Eq. 1."""
J_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour: Eq. 2 multiplies kWh by g/kWh."""
G_PER_KG = 1e3

# ---- input limits -----------------------------------------------------------------------------
MAX_TIME_S = 1e12
"""Largest duration, and largest absolute epoch timestamp, in seconds (about 31,700 years)."""
MAX_ENERGY_J = 1e18
"""Largest energy (J) accepted by Eq. 2 (an exajoule, ~280 TWh)."""
MAX_INTENSITY_G_PER_KWH = 10_000.0
"""Largest grid carbon intensity (g/kWh); real grids stay below ~1,200."""
MAX_EMBODIED_G = 1e12
"""Largest embodied carbon (g) of one device or group of devices (a million tonnes)."""
MIN_LIFETIME_YEARS = 1e-100
"""Shortest device lifetime in Eq. 1: far below any physical one (break-even solvers return
tiny lifetimes), high enough that Eq. 1 stays finite for every in-range input."""
MAX_LIFETIME_YEARS = 1e100
"""Longest device lifetime in Eq. 1 (break-even solvers can return millions of years)."""
MIN_QPS = 1e-6
"""Lowest arrival rate (requests/s) of generated arrivals: one request per ~11.6 days."""
MAX_QPS = 100_000
"""Highest arrival rate (requests/s), as for :class:`~greenllm.config.Workload`."""
MAX_REQUESTS = 10_000_000
"""Most requests one request set may hold (~240 MB of arrays); more raises ConfigError."""
MAX_TOKENS = 1_048_576
"""Most prompt or output tokens of one request, as for :class:`~greenllm.config.RequestSize`."""
MAX_PUE = 10.0
"""Largest power usage effectiveness (facility / IT energy); real data centres: 1.1 to 2."""
MAX_DEVICE_LIFETIME_YEARS = 100.0
"""Longest service life (years) a user may give a real device (``CarbonMeter``); Eq. 1 itself
takes up to :data:`MAX_LIFETIME_YEARS`."""
MAX_DEVICE_POWER_W = 100_000.0
"""Largest power (W) of one measured device: far above any GPU board or CPU socket."""
MAX_PERIOD_S = 86_400.0
"""Longest polling period (s) of a power sampler: one poll a day at least."""
MAX_REPLAY_SPEED = 1e6
"""Largest speed-up of a replayed power trace."""
MAX_EXACT_COUNT = 2**53
"""Largest count (tokens of a meter window) that stays exact as a float, for per-token figures."""
