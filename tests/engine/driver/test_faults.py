"""Faults with real processes: SIGKILL of the draft (DSD) or decode (DPD) worker mid-run, a
hung (SIGSTOP) draft hitting the receive timeout, and a peer that never joins the group."""

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

from greenllm.engine import (
    Engine,
    LinkEmulation,
    SamplingParams,
)
from greenllm.engine.worker.main import free_port
from greenllm.errors import WorkerError


async def _run_and_disrupt(
    engine: Any, prompts: list[list[int]], max_tokens: int, disrupt: Any, min_tokens: int = 3
) -> list[Any]:
    """Start all requests, wait until each has ``min_tokens`` tokens, call ``disrupt()``."""
    sp = SamplingParams(max_tokens=max_tokens)
    tasks = [asyncio.create_task(engine.generate(p, sp)) for p in prompts]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = engine.in_flight()
        if len(progress) == len(prompts) and min(progress.values()) >= min_tokens:
            break
        await asyncio.sleep(0.005)
    assert len(engine.in_flight()) == len(prompts), "requests finished before the fault"
    disrupt()
    return list(await asyncio.gather(*tasks))


def _check(outs: list[Any], refs: list[list[int]]) -> None:
    assert [list(o.tokens) for o in outs] == refs  # answered, same greedy output
    assert len({o.request_id for o in outs}) == len(outs)  # once each
    for o in outs:
        assert len(o.token_times_s) == len(o.tokens)


def test_dsd_draft_killed_requests_finish_on_target(
    tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    prompts, max_tokens = tiny_prompts[:4], 120
    refs = reference(tiny_target, prompts, max_tokens)
    link = LinkEmulation(bandwidth_gbps=1.0, latency_s=0.004)  # slows steps, keeps work in flight
    with Engine(
        "dsd", tiny_dirs["target"], tiny_dirs["draft"], k=3, link=link, timeout_s=30
    ) as engine:
        pid = engine.worker_pid("old")
        outs = asyncio.run(
            _run_and_disrupt(engine, prompts, max_tokens, lambda: os.kill(pid, signal.SIGKILL))
        )
        _check(outs, refs)
        assert any("exited" in e for e in engine.events)
        stats = engine.stats()
        assert stats.fallback_requests >= 1
        assert any("draft worker lost" in e for w in stats.workers for e in w.events)
        assert [w.alive for w in stats.workers] == [True, False]
        # bytes of the dead draft are counted on the target's receiving side
        assert stats.bytes_old_to_new["probs"] > 0 and stats.bytes_old_to_new["ids"] > 0
        # link emulation: each category's wire time is its bytes * 8 / bandwidth
        for category, nbytes in stats.bytes_new_to_old.items():
            expected = nbytes * 8 / 1e9
            assert stats.wire_s_new_to_old[category] == pytest.approx(expected, rel=1e-6)
        # the engine keeps serving on the target alone
        again = engine.generate_batch(prompts[:1], SamplingParams(max_tokens=max_tokens))
        assert list(again[0].tokens) == refs[0]


def test_dpd_decode_killed_requests_rerun_on_prefill(
    tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    prompts, max_tokens = tiny_prompts[:4], 300
    refs = reference(tiny_target, prompts, max_tokens)
    with Engine("dpd", tiny_dirs["target"], timeout_s=30) as engine:
        pid = engine.worker_pid("old")
        outs = asyncio.run(
            _run_and_disrupt(engine, prompts, max_tokens, lambda: os.kill(pid, signal.SIGKILL))
        )
        _check(outs, refs)
        assert all(o.reruns == 1 for o in outs)
        stats = engine.stats()
        assert stats.reruns == len(prompts)
        again = engine.generate_batch(prompts[:2], SamplingParams(max_tokens=20))
        assert [list(o.tokens) for o in again] == [r[:20] for r in refs[:2]]


@pytest.mark.slow
def test_dsd_hung_draft_hits_receive_timeout(
    tiny_dirs: dict[str, str], tiny_target: Any, tiny_prompts: Any
) -> None:
    prompts, max_tokens = tiny_prompts[:2], 120
    refs = reference(tiny_target, prompts, max_tokens)
    link = LinkEmulation(bandwidth_gbps=1.0, latency_s=0.004)
    with Engine(
        "dsd", tiny_dirs["target"], tiny_dirs["draft"], k=3, link=link, timeout_s=1.5
    ) as engine:
        pid = engine.worker_pid("old")
        start = time.monotonic()
        try:
            outs = asyncio.run(
                _run_and_disrupt(engine, prompts, max_tokens, lambda: os.kill(pid, signal.SIGSTOP))
            )
            _check(outs, refs)
            assert time.monotonic() - start >= 1.5  # waited for the timeout, then went solo
            events = [e for w in engine.stats().workers for e in w.events]
            text = next(e for e in events if "draft worker lost" in e)
            assert "timed out after 1.5 s waiting for" in text and "dsd_draft worker" in text
        finally:
            os.kill(pid, signal.SIGCONT)


def test_peer_never_connects_raises_within_rendezvous_timeout() -> None:
    from greenllm.engine.comm.transport import Transport

    transport = Transport(0, "dsd_draft worker (rank 1)")
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"never connected .* rendezvous timeout of 1\.5 s"):
        transport.connect("127.0.0.1", free_port(), rendezvous_timeout_s=1.5)
    assert time.monotonic() - start < 10


_IDLE_PEER = """
import sys, time, torch
from greenllm.engine.comm.transport import Kind, Transport
rank, port = int(sys.argv[1]), int(sys.argv[2])
t = Transport(rank, "peer", timeout_s=30)
t.connect("127.0.0.1", port, rendezvous_timeout_s=2)
if rank == 1:
    time.sleep(4)  # idle for longer than the rendezvous timeout
    t.send(Kind.IDS, 5, torch.tensor([1, 2, 3]), blocking=True)
    t.recv(Kind.FINISH, 5)
else:
    print(t.recv(Kind.IDS, 5).tensor.tolist(), flush=True)
    t.send(Kind.FINISH, 5, blocking=True)
import os; os._exit(0)
"""


@pytest.mark.slow
def test_idle_link_outlives_the_rendezvous_timeout(tmp_path: Any) -> None:
    """gloo applies the group timeout to waits without one; an idle link must survive it."""
    import subprocess
    import sys

    script = tmp_path / "idle_peer.py"
    script.write_text(_IDLE_PEER)
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port],
                              stdout=subprocess.PIPE, text=True) for r in (0, 1)]  # fmt: skip
    try:
        out, _ = procs[0].communicate(timeout=120)
        assert procs[1].wait(timeout=30) == 0
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 0 and out.strip() == "[1, 2, 3]"
