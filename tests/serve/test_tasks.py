"""cancel_and_wait: a background task stops, and the caller's own cancellation is kept."""

from __future__ import annotations

import asyncio

import pytest

from greenllm.serve.tasks import cancel_and_wait


def test_a_background_task_is_cancelled_and_awaited() -> None:
    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(asyncio.sleep(60))
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        return task

    assert asyncio.run(main()).cancelled()


def test_the_callers_own_cancellation_propagates() -> None:
    """The caller is cancelled while it waits for a task that takes a while to stop: the
    caller ends cancelled (``suppress(CancelledError)`` would have let it go on)."""

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup
            raise

    async def main() -> tuple[bool, bool]:
        inner = asyncio.create_task(slow_to_stop())
        await asyncio.sleep(0)
        went_on = []

        async def stopper() -> None:
            await cancel_and_wait(inner)
            went_on.append(True)

        outer = asyncio.create_task(stopper())
        await asyncio.sleep(0.01)  # outer is waiting for inner's cleanup
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0.1)
        return inner.cancelled(), bool(went_on)

    assert asyncio.run(main()) == (True, False)


def test_quiet_keeps_the_tasks_error_and_none_is_nothing() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("boom")

    async def main() -> None:
        task = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(task, quiet=True)
        await cancel_and_wait(None)

    asyncio.run(main())
