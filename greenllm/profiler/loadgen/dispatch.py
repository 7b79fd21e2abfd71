"""Open-loop dispatch: start job ``i`` at ``t0 + arrival_s[i]`` whatever the earlier jobs do.

The calling thread sleeps until each arrival and hands the job to a thread pool, so a slow
server never delays later sends (the pool grows to ``max_workers`` threads; only past that do
sends queue, and the job sees its own lag). Ctrl-C (``KeyboardInterrupt``) or ``stop_event``
stops sending; jobs in flight get ``grace_s`` seconds to finish, then ``abort()`` is called to
cut the rest and the pool is joined.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

__all__ = ["DispatchOutcome", "dispatch_open_loop"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_POLL_S = 0.1  # longest single wait, so a Ctrl-C is seen within 100 ms on every platform


@dataclass(frozen=True)
class DispatchOutcome(Generic[T]):
    """What :func:`dispatch_open_loop` did: ``results[i]`` for every job started (in order)."""

    t0: float  # perf_counter at the schedule's zero
    results: tuple[T, ...]  # jobs 0 .. n_sent-1
    end_s: float  # when the last job returned, seconds after t0
    interrupted: bool  # sending stopped early (Ctrl-C or stop_event)
    keyboard_interrupt: bool  # the stop was a Ctrl-C


def _sleep_until(target: float, stop_event: threading.Event) -> bool:
    """Sleep until ``perf_counter() >= target``; False if ``stop_event`` was set first.

    No busy-waiting: a spinning thread would hold the GIL and delay the streaming threads'
    timestamps. A timed wait wakes ~0.1 ms late on Linux (docs/loadgen.md).
    """
    while True:
        left = target - time.perf_counter()
        if left <= 0:
            return not stop_event.is_set()
        if stop_event.wait(min(left, _POLL_S)):
            return False


def dispatch_open_loop(
    arrival_s: Sequence[float] | np.ndarray,
    job: Callable[[int, float], T],
    *,
    max_workers: int,
    stop_event: threading.Event | None = None,
    grace_s: float = 5.0,
    abort: Callable[[], object] | None = None,
    on_fail: Callable[[int, BaseException], T] | None = None,
) -> DispatchOutcome[T]:
    """Run ``job(i, t0)`` at ``t0 + arrival_s[i]`` on a pool of up to ``max_workers`` threads.

    A job that raises gets ``on_fail(i, exc)`` as its result (the exception propagates when
    ``on_fail`` is None). After an interrupt, jobs still queued are cancelled and the results
    end before the first of them. Never returns before every started job has ended.
    """
    arrivals = np.asarray(arrival_s, dtype=float)
    stop = stop_event if stop_event is not None else threading.Event()
    futures: list[Future[T]] = []
    interrupted = keyboard = False
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="greenllm-loadgen")
    t0 = time.perf_counter()
    try:
        try:
            for i, at in enumerate(arrivals):
                if not _sleep_until(t0 + float(at), stop):
                    interrupted = True
                    break
                futures.append(pool.submit(job, i, t0))
            pending = set() if interrupted else {f for f in futures if not f.done()}
            while pending:
                pending = wait(pending, timeout=_POLL_S).not_done
        except KeyboardInterrupt:
            interrupted = keyboard = True
            logger.warning(
                "interrupted: stopped sending after %d of %d requests; waiting up to %g s "
                "for %d in flight", len(futures), len(arrivals), grace_s,
                sum(not f.done() for f in futures),
            )  # fmt: skip
        if interrupted:
            for fut in futures:  # stop sending: jobs still queued never start
                fut.cancel()
            _drain(futures, grace_s)
            if abort is not None:  # always: a job submitted as Ctrl-C hit is not in `futures`
                abort()
    finally:
        pool.shutdown(wait=True)
    results: list[T] = []
    for i, fut in enumerate(futures):
        if fut.cancelled():  # queued, never started: it and every later job were not sent
            break
        exc = fut.exception()
        if exc is None:
            results.append(fut.result())
        elif on_fail is not None:
            results.append(on_fail(i, exc))
        else:
            raise exc
    return DispatchOutcome(
        t0=t0,
        results=tuple(results),
        end_s=time.perf_counter() - t0,
        interrupted=interrupted,
        keyboard_interrupt=keyboard,
    )


def _drain(futures: list[Future[T]], grace_s: float) -> None:
    """Wait up to ``grace_s`` for jobs in flight (a second Ctrl-C stops waiting at once)."""
    end = time.perf_counter() + grace_s
    try:
        pending = {f for f in futures if not f.done()}
        while pending and (left := end - time.perf_counter()) > 0:
            pending = wait(pending, timeout=min(left, _POLL_S)).not_done
    except KeyboardInterrupt:
        pending = {f for f in futures if not f.done()}
    if pending:
        logger.warning("aborting %d requests still in flight", len(pending))
