"""Units and physical constants, defined once for the whole package."""

from __future__ import annotations

__all__ = ["G_PER_KG", "J_PER_KWH", "SECONDS_PER_HOUR", "SECONDS_PER_YEAR"]

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_YEAR = 365.25 * 86_400.0
"""A Julian year (31,557,600 s): the unit of GPU lifetimes in Eq. 1."""
J_PER_KWH = 3.6e6
"""Joules in one kilowatt-hour: Eq. 2 multiplies kWh by g/kWh."""
G_PER_KG = 1e3
