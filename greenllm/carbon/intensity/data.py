"""The shipped intensity data: which regions have hourly traces, the paper's regions, aliases.

Files live in ``greenllm/carbon/data`` (sources and licences in its README).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["PAPER_REGIONS", "REGION_ALIASES", "TRACE_REGIONS", "canonical_code", "data_text"]

TRACE_REGIONS: dict[str, str] = {
    "BPAT": "Bonneville Power Administration (US Northwest)",
    "CISO": "California ISO",
    "ERCO": "ERCOT (Texas)",
    "MISO": "Midcontinent ISO",
    "NYIS": "New York ISO",
    "PJM": "PJM Interconnection (US Mid-Atlantic)",
}
PAPER_REGIONS: dict[str, tuple[str, float]] = {
    "NCSW": ("North Central Sweden (paper, Sec. 7.5)", 17.0),
    "CISO": ("California ISO (paper, Sec. 7.5)", 261.0),
    "MISO": ("Midcontinent ISO (paper, Sec. 7.5)", 501.0),
}
REGION_ALIASES: dict[str, str] = {"CAISO": "CISO", "ERCOT": "ERCO", "NYISO": "NYIS", "BPA": "BPAT"}


def canonical_code(region: str) -> str:
    """Upper-case ``region`` with its alias resolved (``"caiso"`` -> ``"CISO"``)."""
    key = region.strip().upper()
    return REGION_ALIASES.get(key, key)


def data_text(name: str) -> str:
    """The text of one shipped data file of ``greenllm/carbon/data``."""
    data = resources.files("greenllm.carbon").joinpath("data")
    return data.joinpath(name).read_text(encoding="utf-8")
