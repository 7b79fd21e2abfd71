"""The simulator against greenllm's engine on this CPU: measured times next to the ``cpu``
device's predictions (:mod:`greenllm.backends.sim.cpu`).

Each quantity is timed through the engine's own code, one torch thread (as each worker runs when
two share the machine), median of ``reps``:

* **prefill** of ``n`` prompt tokens: :func:`greenllm.engine.model.batching.prefill` (Standalone
  and DPD prefill); sim: one step of ``n`` new tokens;
* **decode** per token after ``c`` tokens: ``CachedLM.feed`` of one token and greedy sampling,
  as every decode loop; sim: one step of 1 new token at context ``c``;
* **DSD step**: the draft's K single-token forwards with sampling (the draft worker's
  ``_propose``) then the target's forward over K + 1 tokens and its probabilities (the target
  worker's verification), both at context ``c``; sim: one iteration of
  :class:`~greenllm.backends.sim.speculation.SpecOneGPUTimeline` (draft K, verify K + 1);
* **DPD KV transfer** of an ``n``-token prompt: the prefill worker's ``_hand_off`` to the decode
  worker's ``_receive`` (ADMIT, then keys and values per layer) over the engine's transport
  (gloo, two processes) through :class:`~greenllm.engine.comm.link.LinkEmulation` at ``gbps``;
  sim: :class:`~greenllm.backends.sim.link.Link` sending ``kv_cache_bytes(n)``.

``benchmarks/bench_sim_vs_engine.py`` prints the table; tests/backends/sim/test_cpu_profile.py
asserts each ratio within +-15 %. The ``cpu`` device is measured by micro-benchmarks of the
engine's kernels (:mod:`.cpu_profile`), none of them a checked quantity; nothing is fitted.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from greenllm.backends.torch.timing import (
    cached_lm,
    decode_s,
    median,
    random_prompt,
    thread_clock,
)
from greenllm.errors import missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = [
    "CheckRow",
    "check_cpu",
    "dsd_step_s",
    "measure_kv_transfer_s",
    "median_profile",
    "prefill_s",
]

TARGET, DRAFT = "smollm2-135m", "smollm2-135m-draft"
_VOCAB = 49152


@dataclass(frozen=True)
class CheckRow:
    """One quantity: what the engine took and what the simulator predicts (seconds)."""

    quantity: str
    measured_s: float
    predicted_s: float

    @property
    def ratio(self) -> float:
        """Predicted / measured."""
        return self.predicted_s / self.measured_s


class _NoCounters:
    def busy(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def prefill_s(model: Any, n: int, reps: int) -> float:
    """Median seconds of the engine's prefill of ``n`` tokens (after one warm-up)."""
    from greenllm.engine.model.batching import prefill

    times = []
    for i in range(reps + 1):
        prompt = random_prompt(n, i, int(model.config.vocab_size))
        start = thread_clock()
        prefill(model, prompt, _NoCounters())
        times.append(thread_clock() - start)
    return median(times[1:])


def dsd_step_s(target: Any, draft: Any, k: int, context: int, reps: int) -> float:
    """Median seconds of K draft forwards then the target's K + 1-token verification forward."""
    from greenllm.engine import SamplingParams, probs_from_logits
    from greenllm.engine.model.sampling import sample_row

    params = SamplingParams()
    tgt, drf = cached_lm(target, context), cached_lm(draft, context)
    times = []
    for _ in range(reps + 1):
        start = thread_clock()
        feed, proposal = [7], []
        for _ in range(k):
            proposal.append(sample_row(probs_from_logits(drf.feed(feed)[-1], params)))
            feed = proposal[-1:]
        probs_from_logits(tgt.feed([7, *proposal]), params)
        times.append(thread_clock() - start)
        drf.crop(context)
        tgt.crop(context)
    return median(times[1:])


def _transfer_worker(rank: int, port: int, gbps: float, latency_s: float,
                     sizes: list[int], reps: int, out: Any) -> None:  # fmt: skip
    """One side of :func:`measure_kv_transfer_s` (a spawned process)."""
    torch.set_num_threads(1)
    from greenllm.engine import LinkEmulation, SamplingParams
    from greenllm.engine.comm.transport import Kind, Transport
    from greenllm.engine.worker import dpd
    from greenllm.engine.worker.context import SeqOutput

    t = Transport(rank, "peer", link=LinkEmulation(gbps, latency_s), timeout_s=120.0)
    t.connect("127.0.0.1", port)
    rid = 0
    for n in sizes:
        kv = [(torch.zeros(1, 3, n, 64), torch.zeros(1, 3, n, 64)) for _ in range(30)]
        for _ in range(reps + 1):
            rid += 1
            if rank == 0:
                t.recv(Kind.FINISH, rid)  # the receiver is ready
                seq = SeqOutput(rid, SamplingParams())
                seq.add([7])
                start = time.monotonic()
                dpd.send_kv(t, rid, seq, torch.Generator(), kv)
                out.put(("start", n, rid, start))
            else:
                t.send(Kind.FINISH, rid)
                admit = t.recv(Kind.ADMIT, rid)
                dpd.receive_kv(t, admit, torch.device("cpu"))
                out.put(("end", n, rid, time.monotonic()))
    if rank == 1:
        t.send(Kind.FINISH, 0, blocking=True)
    else:
        t.recv(Kind.FINISH, 0)
    t.close()
    # both peers are alive here, so the group can be torn down (left to process exit, gloo's
    # threads abort with "terminate called without an active exception")
    torch.distributed.destroy_process_group()


def measure_kv_transfer_s(
    sizes: Sequence[int], gbps: float, latency_s: float = 0.0, reps: int = 3, port: int = 0
) -> dict[int, list[float]]:
    """Seconds from the prefill worker's hand-off of an ``n``-token SmolLM2 KV cache to the
    decode worker holding it, ``reps`` transfers (after a warm-up) per ``n`` in ``sizes``, over
    the emulated link (two processes)."""
    import socket

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_transfer_worker, args=(r, port, gbps, latency_s, list(sizes),
                                                        reps, out)) for r in (0, 1)]  # fmt: skip
    for p in procs:
        p.start()
    events: dict[tuple[str, int], float] = {}
    sizes_of: dict[int, int] = {}
    want = 2 * len(sizes) * (reps + 1)
    try:
        for _ in range(want):
            what, n, rid, when = out.get(timeout=180)
            events[(what, rid)] = when
            sizes_of[rid] = n
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    result = {}
    for n in sizes:
        rids = sorted(r for r, m in sizes_of.items() if m == n)[1:]  # the first is a warm-up
        result[n] = [events[("end", r)] - events[("start", r)] for r in rids]
    return result


def median_profile(profiles: Sequence[Any]) -> Any:
    """The field-wise median of :class:`~greenllm.backends.sim.CpuProfile` s of one machine."""
    first = profiles[0]
    numeric = {f.name: statistics.median(getattr(p, f.name) for p in profiles)
               for f in dataclasses.fields(first)
               if isinstance(getattr(first, f.name), float)}  # fmt: skip
    numeric["gemv_rows"] = int(statistics.median_low(p.gemv_rows for p in profiles))
    return dataclasses.replace(first, **numeric)


def check_cpu(
    *,
    prompt_lengths: Sequence[int] = (100, 300, 600),
    context: int = 300,
    k: int = 4,
    gbps: float = 1.0,
    kv_tokens: Sequence[int] = (300,),
    rounds: int = 3,
    threads: int = 1,
) -> list[CheckRow]:
    """Measure the engine and predict it with the simulator's ``cpu`` device (module docstring).

    The load of a shared machine changes, so both sides are measured back to back: each of
    ``rounds`` rounds (after a warm-up round) measures the CPU's profile
    (:func:`~greenllm.backends.torch.cpu_profile.measure_cpu`), then times every compute
    quantity (prefills once, 8 decode steps, 3 DSD steps); the device is the field-wise median
    of the rounds' profiles, the engine's times are the medians of the rounds. The KV transfer
    (wall time of the emulated link, ``rounds`` transfers) is predicted by the link model
    alone. Registers the median profile as the ``cpu`` device."""
    from greenllm.backends.sim import Link, StepModel, get_model, register_cpu
    from greenllm.backends.sim.instance import BusyLog
    from greenllm.backends.sim.speculation import SpecOneGPUTimeline
    from greenllm.backends.torch.cpu_profile import measure_cpu
    from greenllm.engine import load_model

    torch.set_num_threads(threads)
    target, _ = load_model(TARGET)
    draft, _ = load_model(DRAFT + "-layerskip")
    profiles, times = [], []
    for r in range(rounds + 1):
        profile = measure_cpu(TARGET, threads, refresh=True, reps=3)
        t = [prefill_s(target, n, 1) for n in prompt_lengths]
        t += [decode_s(target, context, 8), dsd_step_s(target, draft, k, context, 3)]
        if r:  # the first round warms up
            profiles.append(profile)
            times.append(t)
    spec = register_cpu(median_profile(profiles))
    tgt_sim, drf_sim = StepModel(TARGET, spec), StepModel(DRAFT, spec)
    timeline = SpecOneGPUTimeline(tgt_sim, drf_sim, k, BusyLog())
    names = [f"prefill {n} tokens" for n in prompt_lengths]
    names += [f"decode per token (context {context})",
              f"DSD step, draft {k} + verify {k + 1} (context {context})"]  # fmt: skip
    preds = [tgt_sim.time_s(n, 0, 1) for n in prompt_lengths]
    preds += [tgt_sim.time_s(1, context, 1), timeline.step(0.0, 1, context, 0, 0, 0)[0]]
    rows = [CheckRow(name, median([t[i] for t in times]), preds[i])
            for i, name in enumerate(names)]  # fmt: skip
    transfers = measure_kv_transfer_s(kv_tokens, gbps, reps=rounds)
    kv_model = get_model(TARGET)
    for n in kv_tokens:
        rows.append(CheckRow(f"DPD KV transfer {n} tokens at {gbps:g} Gbit/s",
                             median(transfers[n]),
                             Link(gbps, 0.0).send(0.0, kv_model.kv_cache_bytes(n))))  # fmt: skip
    return rows
