"""``Engine.stream``: tokens as they come (equal to ``generate`` when greedy, in every mode),
cancellation (``aclose``, a cancelled task, a timeout) that frees the request on every worker,
and a DPD re-run after the decode worker dies that never repeats a streamed token."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest

from tests.engine.helpers import reference
from tests.extras import require

torch = require("torch")

from greenllm.engine import Engine, SamplingParams, TokenEvent
from greenllm.errors import WorkerError

MAX_TOKENS = 12
LONG = 600  # tokens of a request that is cancelled long before its end


@pytest.fixture(scope="module")
def refs(tiny_target: Any, tiny_prompts: list[list[int]]) -> list[list[int]]:
    return reference(tiny_target, tiny_prompts[:3], MAX_TOKENS)


def _engine(mode: str, dirs: dict[str, str], **options: Any) -> Engine:
    draft = dirs["draft"] if mode in ("spec_decode", "dsd") else None
    return Engine(mode, dirs["target"], draft, k=3, timeout_s=30, **options)


async def _collect(engine: Engine, prompt: list[int], sp: SamplingParams) -> list[TokenEvent]:
    return [event async for event in engine.stream(prompt, sp)]


def _check_events(events: list[TokenEvent], expected: list[int]) -> None:
    assert events and events[-1].last and all(not e.last for e in events[:-1])
    streamed = [t for e in events for t in e.tokens]
    assert streamed == expected  # every token once, in order
    out = events[-1].output
    assert out is not None and list(out.tokens) == expected
    times = [t for e in events for t in e.times_s]
    assert len(times) == len(streamed) and times == list(out.token_times_s)
    assert all(e.request_id == out.request_id for e in events)


async def _wait_idle(engine: Engine, timeout_s: float = 30.0) -> float:
    """Seconds until no request is in flight (aborts confirmed by the workers)."""
    start = time.monotonic()
    while engine.in_flight():
        assert time.monotonic() - start < timeout_s, f"still in flight: {engine.in_flight()}"
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@pytest.mark.parametrize("mode", ["standalone", "spec_decode", "dsd", "dpd"])
def test_stream_equals_generate_and_cancel_frees_the_request(
    mode: str, tiny_dirs: dict[str, str], tiny_prompts: Any, refs: Any
) -> None:
    sp = SamplingParams(max_tokens=MAX_TOKENS)
    long = 40 if mode == "spec_decode" else LONG  # spec_decode finishes what it started
    # max_batch=1: a cancelled request still holding its batch slot would block the next one
    lean = {"lean": True} if mode == "dsd" else {}  # lean DSD: drains TOKEN_PROBS on abort
    with _engine(mode, tiny_dirs, max_batch=1, **lean) as engine:

        async def scenario() -> None:
            streams = await asyncio.gather(*(_collect(engine, p, sp) for p in tiny_prompts[:3]))
            for events, ref in zip(streams, refs, strict=True):
                _check_events(events, ref)
            generated = await engine.generate(tiny_prompts[0], sp)
            assert list(generated.tokens) == refs[0]
            assert streams[0][-1].output.finish_reason == generated.finish_reason == "length"
            if mode != "spec_decode":  # spec_decode emits a request's tokens when it is done
                assert sum(1 for e in streams[0] if e.tokens) > 1

            # cancel with aclose() after the first tokens
            stream = engine.stream(tiny_prompts[1], SamplingParams(max_tokens=long))
            got: list[int] = []
            async for event in stream:
                got += event.tokens
                if mode == "spec_decode" or len(got) >= 3:
                    break
            await stream.aclose()
            await _wait_idle(engine)
            # cancel by cancelling the consuming task
            task = asyncio.create_task(
                _collect(engine, tiny_prompts[2], SamplingParams(max_tokens=long))
            )
            while not engine.in_flight():
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await _wait_idle(engine)
            # the engine serves the next request normally, in its one batch slot
            again = await asyncio.wait_for(_collect(engine, tiny_prompts[0], sp), 60)
            _check_events(again, refs[0])

        asyncio.run(scenario())
        if mode in ("standalone", "dsd", "dpd"):  # dropped mid-run, not run to the end
            worked = sum(w.forward_passes for w in engine.stats().workers)
            assert worked < LONG


@pytest.mark.parametrize("mode", ["standalone", "dsd"])
def test_cancelling_one_stream_leaves_the_others_intact_and_timeouts(
    mode: str, tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    n = 60
    ref = reference(tiny_target, tiny_prompts[:1], n)[0]
    with _engine(mode, tiny_dirs) as engine:

        async def scenario() -> None:
            sp = SamplingParams(max_tokens=n)
            kept = asyncio.create_task(_collect(engine, tiny_prompts[0], sp))
            cancelled = engine.stream(tiny_prompts[1], SamplingParams(max_tokens=LONG))
            got: list[int] = []
            async for event in cancelled:  # both run in one batch / pipeline meanwhile
                got += event.tokens
                if len(got) >= 3:
                    break
            await cancelled.aclose()
            _check_events(await kept, ref)
            await _wait_idle(engine)
            # a timeout aborts too, in stream and in generate
            got = []
            with pytest.raises(WorkerError, match=r"not finished within timeout_s=0\.3"):
                async for event in engine.stream(
                    tiny_prompts[0], SamplingParams(max_tokens=LONG), timeout_s=0.3
                ):
                    got += event.tokens
            assert len(got) < LONG
            await _wait_idle(engine)
            with pytest.raises(WorkerError, match="not finished within"):
                await engine.generate(tiny_prompts[1], SamplingParams(max_tokens=LONG),
                                      timeout_s=0.3)  # fmt: skip
            await _wait_idle(engine)

        asyncio.run(scenario())


def test_dpd_rerun_stream_does_not_repeat_tokens(
    tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    prompts, max_tokens = tiny_prompts[:2], 300
    greedy_ref = reference(tiny_target, prompts[:1], max_tokens)[0]
    seeded = SamplingParams(temperature=0.8, max_tokens=max_tokens, seed=11)
    unseeded = SamplingParams(temperature=0.8, max_tokens=max_tokens)
    with _engine("dpd", tiny_dirs) as engine:

        async def scenario() -> None:
            seeded_ref = list((await engine.generate(prompts[1], seeded)).tokens)
            streams = [engine.stream(prompts[0], SamplingParams(max_tokens=max_tokens)),
                       engine.stream(prompts[1], seeded),
                       engine.stream(prompts[1], unseeded)]  # fmt: skip
            got: list[list[int]] = [[], [], []]
            results: list[Any] = [None, None, None]

            async def consume(i: int) -> None:
                try:
                    async for event in streams[i]:
                        got[i] += event.tokens
                        if event.last:
                            results[i] = event.output
                except WorkerError as err:
                    results[i] = err

            tasks = [asyncio.create_task(consume(i)) for i in range(3)]
            deadline = time.monotonic() + 120
            while min(len(g) for g in got) < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.005)
            os.kill(engine.worker_pid("old"), signal.SIGKILL)
            await asyncio.gather(*tasks)
            assert got[0] == greedy_ref and list(results[0].tokens) == greedy_ref
            assert results[0].reruns == 1
            assert got[1] == seeded_ref and results[1].reruns == 1
            assert isinstance(results[2], WorkerError) and "without a seed" in str(results[2])
            assert 5 <= len(got[2]) < max_tokens  # what it streamed before the failure stays
            await _wait_idle(engine)

        asyncio.run(scenario())
