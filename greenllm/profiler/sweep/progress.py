"""Progress of a sweep on stderr: a tqdm bar with ETA if tqdm is importable, else plain lines.

tqdm is optional (the ``test`` extra has it); greenllm's core never needs it. The plain
fallback rewrites one line (``\\r``) on a terminal and prints a line at most every
``interval_s`` seconds otherwise (logs, CI), always with the ETA from this session's rate.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["SweepProgress", "format_eta"]


def format_eta(seconds: float) -> str:
    """``1h02m``, ``3m07s``, ``12s``; ``?`` when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class SweepProgress:
    """Counts cells done this session out of ``total`` to do; shows rate and ETA.

    ``initial`` cells were already done before (resumed) and only shown, never timed.
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        desc: str = "profile",
        file: TextIO | None = None,
        use_tqdm: bool | None = None,
        interval_s: float = 5.0,
    ) -> None:
        self.total = int(total)
        self.initial = int(initial)
        self.done = 0
        self.infeasible = 0
        self.failed = 0
        self.desc = desc
        self.file = file
        self.interval_s = float(interval_s)
        self._use_tqdm = use_tqdm
        self._bar: Any = None
        self._t0 = 0.0
        self._last = 0.0
        self._started = False

    @property
    def _out(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    def _tty(self) -> bool:
        isatty = getattr(self._out, "isatty", None)
        return bool(isatty and isatty())

    def start(self) -> SweepProgress:
        self._t0 = self._last = time.monotonic()
        self._started = True
        if self._use_tqdm is not False:
            try:
                from tqdm import tqdm
            except ImportError:
                self._bar = None
            else:
                self._bar = tqdm(
                    total=self.initial + self.total,
                    initial=self.initial,
                    desc=self.desc,
                    unit="cell",
                    file=self._out,
                    dynamic_ncols=True,
                    smoothing=0.1,
                    mininterval=0.1 if self._tty() else self.interval_s,
                )
        if self._bar is None:
            self._line(force=True)
        return self

    def update(self, outcome: str = "ok") -> None:
        """One more cell processed (``ok``, ``infeasible`` or ``failed``)."""
        self.done += 1
        if outcome == "infeasible":
            self.infeasible += 1
        elif outcome == "failed":
            self.failed += 1
        if not self._started:
            return
        if self._bar is not None:
            post = {}
            if self.infeasible:
                post["infeasible"] = self.infeasible
            if self.failed:
                post["failed"] = self.failed
            if post:
                self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        else:
            self._line(force=self.done == self.total)

    def eta_s(self) -> float:
        """Seconds left at this session's mean rate (``nan`` before the first cell)."""
        if not self.done:
            return float("nan")
        rate = self.done / max(time.monotonic() - self._t0, 1e-9)
        return (self.total - self.done) / rate

    def text(self) -> str:
        n, total = self.initial + self.done, self.initial + self.total
        pct = 100.0 * n / total if total else 100.0
        extra = "".join(
            f", {v} {k}" for k, v in (("infeasible", self.infeasible), ("failed", self.failed)) if v
        )
        return f"{self.desc}: {n}/{total} cells ({pct:.0f}%){extra}, ETA {format_eta(self.eta_s())}"

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        tty = self._tty()
        if not (force or tty or now - self._last >= self.interval_s):
            return
        self._last = now
        self._out.write(("\r" + self.text()) if tty else self.text() + "\n")
        self._out.flush()

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._tty():
            self._out.write("\n")
            self._out.flush()

    def __enter__(self) -> SweepProgress:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
