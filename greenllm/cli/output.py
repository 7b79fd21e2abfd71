"""Plain-text tables and JSON output shared by the subcommands."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from greenllm.errors import GreenLLMError


class OutputError(GreenLLMError):
    """A result cannot be printed (a NaN or an infinity): a runtime failure, exit code 1."""


def fmt(value: Any, digits: int = 4) -> str:
    """Format a number with ``digits`` significant digits (``-`` for None).

    A NaN or an infinity raises :class:`OutputError`: no such value reaches the output.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OutputError(f"a result is not a finite number ({value}); nothing printed")
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


def dumps(payload: Any, indent: int | None = 2) -> str:
    """Strict JSON: a NaN or an infinity anywhere raises :class:`OutputError`."""
    try:
        return json.dumps(payload, indent=indent, default=_default, allow_nan=False)
    except ValueError as err:
        if "Out of range float" in str(err):
            raise OutputError(
                "a result is not a finite number (NaN or infinity); nothing printed"
            ) from None
        raise


def emit_json(payload: Any) -> None:
    """Print ``payload`` as strict JSON, all at once (nothing is printed if it fails)."""
    sys.stdout.write(dumps(payload) + "\n")


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
