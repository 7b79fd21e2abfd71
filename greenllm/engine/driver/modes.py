"""The engine's modes and the workers each one runs (shared by the engine and its supervisor)."""

from __future__ import annotations

__all__ = ["DRAFT_MODES", "MODES"]

#: Engine modes and their workers, (side, role), the leader (new GPU) first.
MODES: dict[str, tuple[tuple[str, str], ...]] = {
    "standalone": (("new", "standalone"),),
    "spec_decode": (("new", "spec_decode"),),
    "dsd": (("new", "dsd_target"), ("old", "dsd_draft")),
    "dpd": (("new", "dpd_prefill"), ("old", "dpd_decode")),
}

#: Modes that need a draft model.
DRAFT_MODES: frozenset[str] = frozenset({"spec_decode", "dsd"})
