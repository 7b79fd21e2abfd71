"""Plain-text tables and JSON output shared by the subcommands."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number with ``digits`` significant digits (``-`` for None, ``inf`` kept)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """A left-aligned plain-text table (numbers right-aligned)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    numeric = [
        all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [title, ""] if title else []
    out += [line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    return "\n".join(out)


def emit_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, default=_default)
    sys.stdout.write("\n")


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
