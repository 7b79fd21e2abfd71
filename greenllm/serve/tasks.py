"""Stopping a background task without swallowing the caller's own cancellation."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[object] | None, *, quiet: bool = False) -> None:
    """Cancel ``task`` and wait until it has ended. Its CancelledError stays here, but a
    cancellation of the caller itself (``with suppress(CancelledError): await task`` would
    swallow it: a stop that never stops) propagates. ``quiet``: its other errors stay here too
    (logged by the task itself)."""
    if task is None:
        return
    task.cancel()
    try:
        if quiet:
            with contextlib.suppress(Exception):
                await task
        else:
            await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
