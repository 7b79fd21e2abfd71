"""The core every power sampler shares: the :class:`PowerSampler` ABC and its windows.

A sampler keeps, per device, a series of ``(t_s, power_w)`` samples taken by a background thread
every ``period_s`` and at every window edge. A window's energy is the trapezoid integral of that
series over ``[start_s, end_s]``, the power at the edges interpolated linearly; samplers built on
an energy counter (RAPL) report the counter's difference instead. Times are epoch seconds taken
from a monotonic clock (:func:`epoch_clock`), so they line up with carbon-intensity traces.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from greenllm.checks import finite_number
from greenllm.energy.integration import (
    EnergyMeasurement,
    epoch_clock,
    measure_window,
)
from greenllm.errors import ConfigError, ProfileError
from greenllm.units import MAX_DEVICE_POWER_W, MAX_PERIOD_S

__all__ = ["PowerSampler", "Sample"]

logger = logging.getLogger(__name__)

_PRUNE_MIN = 64  # samples kept before pruning is worth a list slice
Sample = tuple[str, float, float]  # (device, t_s, power_w)


@dataclass
class _Window:
    start_s: float
    counters_j: dict[str, float]
    errors: dict[str, int]


class PowerSampler(ABC):
    """Samples the power of some devices in a background thread and measures named windows.

    Use: ``start()`` (or ``with sampler:``), then any number of ``begin_window(name)`` /
    ``end_window(name)`` pairs, nested or interleaved, then ``stop()``. ``begin_window`` starts
    the sampler if needed. Both ``start`` and ``stop`` are idempotent; a stopped sampler can be
    started again (its buffers are reset). Samples older than the oldest open window are dropped.

    Hooks for implementations (``_open``/``_poll`` are required):

    * ``_open() -> Sequence[str]``: acquire the hardware, return the device names.
    * ``_close()``: release it (called by ``stop``).
    * ``_poll(now_s, edge) -> Iterable[(device, t_s, power_w)]``: read power now (``edge`` is
      True at a window edge; a trace-backed sampler then interpolates at ``now_s``). Call
      :meth:`_mark_lost` for a device that disappeared; raise nothing for a missing reading.
    * ``_counters_j() -> Mapping[str, float] | None``: cumulative energy counters, J.
    * ``now_s()``: the sampler's clock (epoch seconds by default).

    Class flags: ``counter_is_primary`` (energy from counters, not from integrated power) and
    ``uses_thread`` (poll in a background thread).
    """

    counter_is_primary: ClassVar[bool] = False
    uses_thread: ClassVar[bool] = True

    def __init__(self, period_s: float = 0.2, *, clock: Callable[[], float] | None = None) -> None:
        self.period_s: float = finite_number(
            "period_s", period_s, 0.0, MAX_PERIOD_S, lo_open=True, where=type(self).__name__
        )
        if clock is not None and not callable(clock):
            raise ConfigError(f"{type(self).__name__}: clock = {clock!r}: must be a callable")
        self._clock: Callable[[], float] = clock or epoch_clock
        self._lock: threading.RLock = threading.RLock()
        self._stop_event: threading.Event = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: bool = False
        self._names: tuple[str, ...] | None = None
        self._t: dict[str, list[float]] = {}
        self._p: dict[str, list[float]] = {}
        self._windows: dict[str, _Window] = {}
        self._dropped: set[str] = set()
        self._lost: dict[str, float] = {}
        self._errors: dict[str, int] = {}
        self._device_flags: dict[str, set[str]] = {}
        self._thread_cpu_s: float = 0.0
        self._thread_failures: int = 0

    # ---- hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> Sequence[str]: ...

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the hardware (optional)."""

    @abstractmethod
    def _poll(self, now_s: float, edge: bool) -> Iterable[Sample]: ...

    def _counters_j(self) -> Mapping[str, float] | None:
        return None

    def now_s(self) -> float:
        """The sampler's clock, epoch seconds unless a ``clock`` was given."""
        return self._clock()

    # ---- state ---------------------------------------------------------------------------------
    @property
    def devices(self) -> tuple[str, ...]:
        """Device names; known once the sampler has started."""
        if self._names is None:
            raise ProfileError(
                f"{type(self).__name__}: devices are known once the sampler has started; "
                "call start() or use `with sampler:` first"
            )
        return self._names

    @property
    def running(self) -> bool:
        return self._running

    @property
    def lost_devices(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._lost)

    @property
    def thread_cpu_s(self) -> float:
        """CPU time the background thread has used so far (``time.thread_time`` inside it)."""
        return self._thread_cpu_s

    def start(self) -> PowerSampler:
        """Acquire the devices and start the background thread; no-op when running."""
        with self._lock:
            if self._running:
                return self
            names = tuple(self._open())
            self._names = names
            self._t = {d: [] for d in names}
            self._p = {d: [] for d in names}
            self._windows, self._dropped, self._lost, self._errors = {}, set(), {}, {}
            self._running, self._thread_cpu_s, self._thread_failures = True, 0.0, 0
            self._stop_event.clear()
            self._take(self.now_s(), edge=True)
            if self.uses_thread and names:
                self._thread = threading.Thread(
                    target=self._run, name=f"greenllm-{type(self).__name__}", daemon=True
                )
                self._thread.start()
        logger.debug("%s started on %s", type(self).__name__, names or "no devices")
        return self

    def stop(self) -> None:
        """Stop the thread and release the devices; windows still open are dropped (logged)."""
        with self._lock:
            if not self._running:
                return
            self._running = False
            self._stop_event.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=max(5.0, 5 * self.period_s))
        with self._lock:
            if self._windows:
                logger.warning(
                    "%s stopped with open windows %s", type(self).__name__, sorted(self._windows)
                )
                self._dropped |= set(self._windows)
                self._windows.clear()
            self._close()

    def __enter__(self) -> PowerSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- sampling ------------------------------------------------------------------------------
    def sample_now(self) -> None:
        """Take one reading now, besides the background thread's (e.g. at a request boundary)."""
        with self._lock:
            self._require_running("sample_now()")
            self._take(self.now_s(), edge=False)

    def _mark_lost(self, device: str, now_s: float, reason: object) -> None:
        if device not in self._lost:
            self._lost[device] = now_s
            logger.warning(
                "%s: device %s lost at t=%.3f s: %s; its later windows are flagged",
                type(self).__name__,
                device,
                now_s,
                reason,
            )

    def _count_error(self, device: str) -> None:
        self._errors[device] = self._errors.get(device, 0) + 1

    def _take(self, now_s: float, edge: bool) -> None:
        for dev, t, p in self._poll(now_s, edge):
            ts = self._t.get(dev)
            if ts is None or (ts and t <= ts[-1]):
                continue
            if not (math.isfinite(p) and 0.0 <= p <= MAX_DEVICE_POWER_W and math.isfinite(t)):
                self._count_error(dev)
                continue
            ts.append(float(t))
            self._p[dev].append(float(p))
        self._prune()

    def _run(self) -> None:
        next_t = time.monotonic()
        while True:
            next_t += self.period_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (a slow read): skip the missed periods
                next_t, delay = time.monotonic(), 0.0
            if self._stop_event.wait(delay):
                break
            with self._lock:
                if not self._running:
                    break
                try:
                    self._take(self.now_s(), edge=False)
                except Exception:  # never let a reading kill the thread
                    self._thread_failures += 1
                    if self._thread_failures == 1:
                        logger.exception(
                            "%s: reading failed; flagging windows", type(self).__name__
                        )
                    for dev in self._names or ():
                        self._count_error(dev)
            self._thread_cpu_s = time.thread_time()
        self._thread_cpu_s = time.thread_time()

    def _prune(self) -> None:
        keep_from = min((w.start_s for w in self._windows.values()), default=None)
        for dev, ts in self._t.items():
            if len(ts) < _PRUNE_MIN:
                continue
            i = len(ts) - 1 if keep_from is None else bisect.bisect_right(ts, keep_from) - 1
            if i >= _PRUNE_MIN // 2:
                del ts[:i]
                del self._p[dev][:i]

    def _require_running(self, what: str) -> None:
        if not self._running:
            raise ProfileError(f"{type(self).__name__}.{what}: the sampler is stopped; start() it")

    # ---- windows -------------------------------------------------------------------------------
    @staticmethod
    def _check_name(name: object) -> str:
        if not isinstance(name, str) or not name:
            raise ProfileError(f"window name {name!r}: must be a non-empty string")
        return name

    def _read_counters(self) -> dict[str, float]:
        counters = self._counters_j()
        return dict(counters) if counters else {}

    def begin_window(self, name: str) -> float:
        """Open window ``name`` now (starting the sampler if needed); names must be unique.
        Returns the window's start time (the sampler's clock)."""
        self._check_name(name)
        with self._lock:
            if not self._running:
                self.start()
            if name in self._windows:
                raise ProfileError(
                    f"window {name!r} is already open; end it first or pick another name "
                    f"(open: {sorted(self._windows)})"
                )
            now = self.now_s()
            self._take(now, edge=True)
            self._dropped.discard(name)
            self._windows[name] = _Window(now, self._read_counters(), dict(self._errors))
        return now

    def end_window(self, name: str) -> EnergyMeasurement:
        """Close window ``name`` now and return what it measured."""
        self._check_name(name)
        with self._lock:
            win = self._windows.get(name)
            if win is None:
                why = (
                    " (the sampler was stopped while it was open)" if name in self._dropped else ""
                )
                raise ProfileError(
                    f"no open window {name!r}{why}; open windows: {sorted(self._windows)}. "
                    f"Call begin_window({name!r}) first"
                )
            now = self.now_s()
            self._take(now, edge=True)
            counters = self._read_counters()
            del self._windows[name]
            series = {}
            for dev, ts in self._t.items():
                i = max(bisect.bisect_right(ts, win.start_s) - 1, 0)
                series[dev] = (np.array(ts[i:]), np.array(self._p[dev][i:]))
            lost = {d: t for d, t in self._lost.items() if t <= now}
            errors = {d: n - win.errors.get(d, 0) for d, n in self._errors.items()}
            dev_flags = {d: set(f) for d, f in self._device_flags.items()}
        return measure_window(
            name,
            win.start_s,
            now,
            series,
            win.counters_j,
            counters,
            counter_is_primary=self.counter_is_primary,
            lost=lost,
            errors=errors,
            device_flags=dev_flags,
        )
