"""The simulator online: requests arrive while it runs and stream their tokens in (scaled) time.

:class:`LiveSim` is :func:`~greenllm.backends.sim.engine.serve` turned inside out. The offline
loop replays a known arrival set as fast as it can; here one asyncio task per *instance* (the
same instances as the offline simulator: one for Standalone, SpecDecode and DSD, a prefill and
a decode instance for DPD) runs continuous-batching iterations while requests come in through
:meth:`LiveSim.submit` / :meth:`LiveSim.stream`. Each iteration is formed as ``serve`` forms it
(every decoding sequence, then prompt chunks FCFS within ``max_batched_tokens`` and
``max_num_seqs``; KV reservation of the final size on admission, FCFS, never skipping the head),
timed by the *same* timeline objects (:class:`~.instance.PlainTimeline`,
:class:`~.speculation.SpecOneGPUTimeline`, :class:`~.speculation.SpecTwoGPUTimeline`, the DPD
:class:`~.link.Link`) and step models, and the task then sleeps until the iteration's end in
wall time (``duration / time_scale``) before its tokens come out.

Virtual time: ``now_s()`` = wall seconds since the sim was created (or since another sim's
``origin``: several sims then share one clock) x ``time_scale``; ``clock_s()`` = the epoch at
the origin + ``now_s()``. A request's arrival is ``clock_s()`` when it
is submitted; iterations are scheduled back to back on the virtual clock (an idle instance
jumps to the next arrival, as the offline loop does), and every token is stamped with the
virtual time its iteration ends, not with the (slightly later) wall time it is delivered. So
TTFT/TPOT read on the virtual clock are the offline simulator's prediction for the same arrivals
at any time scale (exactly for Standalone and DPD; SpecDecode and DSD differ only in the random
acceptance draws). If the host cannot keep up (``time_scale`` too high for the load) the tasks
run behind the clock, skip their sleeps and catch up; token stamps stay exact, delivery is late
(``LiveStats.max_lag_s``).

Differences from the offline simulator (all deliberate):

* No overload detection (``max_queue_delay_s``, ``drain_timeout_s``): the queue is unbounded and
  the gateway bounds it. A request that can never fit (prompt + ``max_tokens`` (+ K) over the KV
  capacity of an instance it needs, or over the target's context length) is refused at
  :meth:`~LiveSim.submit` with :class:`~greenllm.errors.ConfigError` instead of failing later.
* Admission looks ahead only at requests already submitted (the offline loop knows the future);
  for DPD the decode instance reserves memory and queues the KV transfer the moment the first
  token comes out (or when memory frees), which is what the offline look-ahead amounts to.
* Speculation: each request draws its ``1 + X`` tokens per step from one
  :class:`~.speculation.AcceptanceSampler` (seeded) when it starts decoding, instead of one
  stream dealt out in request order, so the draws (not their law) differ from the offline run.
* Cancellation (:meth:`LiveRequest.cancel`, or closing :meth:`LiveSim.stream`'s generator)
  removes a request wherever it is and frees its KV reservation and batch slot at once; the
  iteration already running keeps its duration.

Power: :meth:`~LiveSim.utilisation` is each GPU's utilisation at a virtual instant (that of the
step the GPU runs then, 0 between steps), :meth:`~LiveSim.power_w` the power model's watts for
it, :meth:`~LiveSim.energy_j` the modelled joules since creation (idle power throughout plus
each step's dynamic power), all readable from another thread (a power sampler's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass

import numpy as np

from greenllm.backends.sim.instance import BusyLog, PlainTimeline, Timeline
from greenllm.backends.sim.link import Link
from greenllm.backends.sim.options import SimOptions, SimPlan, plan
from greenllm.backends.sim.roofline import step_model
from greenllm.backends.sim.speculation import (
    AcceptanceSampler,
    SpecOneGPUTimeline,
    SpecTwoGPUTimeline,
    ahead_rate,
)
from greenllm.config import ConfigKind, Configuration
from greenllm.energy import power_model
from greenllm.errors import BackendClosedError, ConfigError

__all__ = ["CONTEXT_TOKENS", "LiveRequest", "LiveSim", "LiveStats", "TokenEvent"]

logger = logging.getLogger(__name__)

#: Context length (``max_position_embeddings``) of the simulator's target models, from their
#: ``config.json`` (Llama 2: 4,096, Touvron et al. 2023; TinyLlama: 2,048; Llama 3.1: 131,072).
#: A model not listed is limited by its KV capacity only.
CONTEXT_TOKENS: dict[str, int] = {
    "llama-2-7b": 4096,
    "llama-1b": 2048,
    "llama-3.1-8b": 131072,
}
_MAX_TIME_SCALE = 1e6
_RECENT = 8  # busy intervals kept per GPU for utilisation look-ups

# sequence states inside an instance
_PENDING, _RESERVED, _PREFILL, _TO_DECODE, _DECODE, _GONE = range(6)


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Tokens one request got at one instant: ``time_s`` on :meth:`LiveSim.clock_s`'s clock
    (the end of the iteration that produced them), ``first`` for the first token, ``last`` for
    the request's final event."""

    time_s: float
    tokens: int
    first: bool = False
    last: bool = False


@dataclass(frozen=True)
class LiveStats:
    """Counters since the sim was created (per GPU in ``configuration.gpus`` order)."""

    iterations: int
    iterations_per_instance: tuple[int, ...]
    busy_s: tuple[float, ...]
    """Virtual seconds each GPU spent in steps (including the part of a running step ahead)."""
    spec_proposed_tokens: int
    spec_accepted_tokens: int
    spec_steps: int
    link_bytes: int
    link_messages: int
    requests_submitted: int
    requests_finished: int
    requests_cancelled: int
    requests_active: int
    tokens_emitted: int
    max_lag_s: float
    """Largest virtual time an instance has been behind the clock at an iteration start."""


class _Seq:
    """One request inside one instance."""

    __slots__ = ("ctx", "ctx0", "dec", "done", "draws", "inst", "pre", "ready", "remaining",
                 "req", "res", "state", "step")  # fmt: skip

    def __init__(self, req: LiveRequest, inst: _Instance, pre: int, dec: int, ctx0: int,
                 res: int, ready: float) -> None:  # fmt: skip
        self.req, self.inst = req, inst
        self.pre, self.dec, self.ctx0, self.res, self.ready = pre, dec, ctx0, res, ready
        self.done = 0  # prompt tokens prefilled
        self.ctx = 0  # context while decoding (prompt + decode tokens emitted)
        self.remaining = dec
        self.draws: list[int] = []
        self.step = 0
        self.state = _PENDING


class LiveRequest:
    """One submitted request: an async iterator of :class:`TokenEvent` (the last has
    ``last=True``). :meth:`cancel` (or ``aclose()``) withdraws it from the simulator."""

    def __init__(self, sim: LiveSim, request_id: str, prompt_tokens: int, max_tokens: int,
                 arrival_s: float) -> None:  # fmt: skip
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.arrival_s = arrival_s
        """Arrival on :meth:`LiveSim.clock_s`'s clock."""
        self.emitted = 0
        self.finished = False
        self.cancelled = False
        self._sim = sim
        self._queue: asyncio.Queue[TokenEvent | BaseException | None] = asyncio.Queue()
        self._seqs: list[_Seq] = []  # where it is (DPD: prefill and decode at the hand-off)
        self._got_first = False
        self._held: list[TokenEvent | None] = []
        self._ended = False
        self._key = -1

    def __aiter__(self) -> LiveRequest:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._ended:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self._ended = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        return item

    def cancel(self) -> None:
        """Withdraw the request (no-op once finished): frees its KV memory and batch slot."""
        self._sim._cancel(self)

    async def aclose(self) -> None:
        self.cancel()

    def __repr__(self) -> str:
        return (
            f"LiveRequest({self.request_id!r}, prompt={self.prompt_tokens}, "
            f"max_tokens={self.max_tokens}, emitted={self.emitted})"
        )


class _Instance:
    """One model set serving an FCFS queue (the online twin of ``engine.serve``'s loop)."""

    def __init__(
        self,
        sim: LiveSim,
        name: str,
        timeline: Timeline,
        capacity: int,
        gpus: tuple[int, ...],
        *,
        sampler: AcceptanceSampler | None = None,
        admit_hook: Callable[[_Seq, float], float] | None = None,
        on_prefilled: Callable[[_Seq, float], None] | None = None,
    ) -> None:
        self.sim, self.name, self.timeline, self.capacity = sim, name, timeline, capacity
        self.gpus = gpus
        self.sampler = sampler
        self.k = sampler.k if sampler is not None else 0
        self.k1 = self.k + 1
        self.admit_hook, self.on_prefilled = admit_hook, on_prefilled
        self.free = capacity
        self.pending: deque[_Seq] = deque()
        self.reserved: deque[_Seq] = deque()
        self.prefilling: list[_Seq] = []
        self.to_decode: deque[_Seq] = deque()
        self.decoding: list[_Seq] = []
        self.ctx_total = 0
        self.t = 0.0  # virtual time of the current (or last) iteration boundary
        self.iterations = 0
        self.wake = asyncio.Event()

    # ---- requests in and out ---------------------------------------------------------------
    def add(self, seq: _Seq) -> None:
        seq.state = _PENDING
        seq.req._seqs.append(seq)
        self.pending.append(seq)
        self.try_admit()

    def try_admit(self) -> None:
        """FCFS reservation of the final KV size, never skipping the head."""
        admitted = False
        while self.pending and self.pending[0].res <= self.free:
            s = self.pending.popleft()
            self.free -= s.res
            if self.admit_hook is not None:
                s.ready = self.admit_hook(s, self.t)
            s.state = _RESERVED
            self.reserved.append(s)
            admitted = True
        if admitted:
            self.wake.set()

    def remove(self, s: _Seq) -> None:
        """Take ``s`` out at once (cancellation), freeing its memory and slot."""
        st = s.state
        if st == _PENDING:
            self.pending.remove(s)
        elif st == _RESERVED:
            self.reserved.remove(s)
        elif st == _PREFILL:
            self.prefilling.remove(s)
        elif st == _TO_DECODE:
            self.to_decode.remove(s)
        elif st == _DECODE:
            self.decoding.remove(s)
            self.ctx_total -= s.ctx
        if st != _PENDING and st != _GONE:
            self.free += s.res
        s.state = _GONE
        self.try_admit()
        self.wake.set()

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        sim = self.sim
        params = sim.options.engine
        max_tok, max_seqs, chunked = (
            params.max_batched_tokens,
            params.max_num_seqs,
            params.chunked_prefill,
        )
        while True:
            t = self.t
            while self.reserved and self.reserved[0].ready <= t:
                s = self.reserved.popleft()
                if s.pre > 0:
                    s.state = _PREFILL
                    self.prefilling.append(s)
                else:
                    s.state = _TO_DECODE
                    self.to_decode.append(s)
            while self.to_decode and len(self.decoding) < max_seqs:
                self._join(self.to_decode.popleft())
            if not self.decoding and not self.prefilling:
                await self._idle()
                continue
            lag = sim.now_s() - t
            if lag > sim._max_lag_s:
                sim._max_lag_s = lag
            b = len(self.decoding)
            bd = 0 if self.prefilling and not chunked and b < max_seqs else b
            room, slots = max_tok - bd * self.k1, max_seqs - b
            ctok = cctx = 0
            chunks: list[tuple[_Seq, int]] = []
            for s in self.prefilling:
                if room <= 0 or len(chunks) >= slots:
                    break
                left = s.pre - s.done
                if left <= room:
                    take = left
                elif chunked:
                    take = room
                elif not chunks:
                    take = left  # a prompt over the budget runs alone
                else:
                    break
                chunks.append((s, take))
                ctok += take
                cctx += s.ctx0 + s.done
                room -= take
            stepping = list(self.decoding) if bd else []
            t1, t_first = self.timeline.step(
                t, bd, self.ctx_total if bd else 0, ctok, cctx, len(chunks)
            )
            self.iterations += 1
            sim._drain_busy(self.gpus)
            if self.on_prefilled is not None:  # DPD: hand finishing prompts to decode now
                for s, take in chunks:
                    if s.done + take >= s.pre and s.req.max_tokens > 1:
                        self.on_prefilled(s, t_first)
            # prompt chunks: their first tokens come out when the forward finishing them ends
            if chunks:
                await sim._sleep_until(t_first)
                for s, take in chunks:
                    if s.state != _PREFILL:
                        continue  # cancelled meanwhile
                    s.done += take
                    if s.done >= s.pre:
                        self.prefilling.remove(s)
                        self._prefilled(s, t_first)
            await sim._sleep_until(t1)
            if stepping:
                self._advance(stepping, t1)
            self.t = t1
            self.try_admit()

    def _join(self, s: _Seq) -> None:
        s.state = _DECODE
        s.ctx = s.ctx0 + s.pre
        self.ctx_total += s.ctx
        if self.sampler is not None:
            start, steps = self.sampler.assign(np.array([s.dec], np.int64))
            s.draws = self.sampler.draws[start[0] : start[0] + steps[0]].tolist()
            s.step = 0
        self.decoding.append(s)

    def _prefilled(self, s: _Seq, t_first: float) -> None:
        sim = self.sim
        req = s.req
        last = s.dec == 0 and (self.on_prefilled is None or req.max_tokens == 1)
        sim._emit(req, t_first, 1, first=True, last=last)
        if self.on_prefilled is not None:  # DPD prefill: the decode instance has it already
            s.state = _GONE
            self.free += s.res
            if last:
                sim._finish(req)
        elif s.dec == 0:
            s.state = _GONE
            self.free += s.res
            sim._finish(req)
        else:
            s.state = _TO_DECODE
            self.to_decode.append(s)

    def _advance(self, stepping: list[_Seq], t1: float) -> None:
        """One decode step of every sequence that was in the batch and is still there."""
        sim = self.sim
        spec = self.sampler is not None
        for s in stepping:
            if s.state != _DECODE:
                continue  # cancelled during the step
            if spec:
                raw = s.draws[s.step] if s.step < len(s.draws) else 1
                s.step += 1
                sim._spec_steps += 1
                sim._spec_proposed += self.k
                sim._spec_accepted += raw - 1
                n = raw if raw < s.remaining else s.remaining
            else:
                n = 1
            s.ctx += n
            self.ctx_total += n
            s.remaining -= n
            done = s.remaining <= 0
            sim._emit(s.req, t1, n, first=False, last=done)
            if done:
                self.decoding.remove(s)
                self.ctx_total -= s.ctx
                self.free += s.res
                s.state = _GONE
                sim._finish(s.req)

    async def _idle(self) -> None:
        """Nothing to run: wait for a submission, or for the head reservation to be ready."""
        sim = self.sim
        if self.reserved:
            head = self.reserved[0].ready
            if head <= sim.now_s():
                self.t = max(self.t, head)
                return
            self.wake.clear()
            timeout = (head - sim.now_s()) / sim.time_scale
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self.wake.wait()
            return
        self.wake.clear()
        await self.wake.wait()


class LiveSim:
    """The simulator serving requests as they come (see the module docstring).

    ``LiveSim(configuration, time_scale=1.0, seed=0, acceptance_rate=None, options=None,
    max_model_len=None)``: ``time_scale`` virtual seconds pass per wall second; ``seed`` seeds
    the acceptance draws; ``acceptance_rate`` overrides the table (as ``SimBackend``'s does);
    ``options`` the other simulator settings (:class:`~.options.SimOptions`); ``max_model_len``
    caps prompt + output tokens below the target's context length (:data:`CONTEXT_TOKENS`).
    Unknown names, models that do not fit, bad numbers: :class:`ConfigError` /
    :class:`~greenllm.errors.InfeasibleError` here, before anything runs.

    Use inside a running event loop: ``await sim.start()``, then ``sim.submit(prompt_tokens,
    max_tokens)`` (a :class:`LiveRequest` to iterate) or ``async for ev in
    sim.stream(prompt_tokens, max_tokens)``, then ``await sim.stop()``.
    """

    def __init__(
        self,
        configuration: Configuration,
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        acceptance_rate: float | Mapping[tuple[str, str], float] | None = None,
        options: SimOptions | None = None,
        max_model_len: int | None = None,
        origin: tuple[float, float] | None = None,
    ) -> None:
        if not isinstance(configuration, Configuration):
            raise ConfigError(
                f"configuration = {configuration!r:.80}: must be a greenllm Configuration"
            )
        ts = time_scale
        if (
            isinstance(ts, bool)
            or not isinstance(ts, (int, float))
            or not math.isfinite(ts)
            or not 0 < ts <= _MAX_TIME_SCALE
        ):
            raise ConfigError(
                f"time_scale = {ts!r}: must be a number in (0, {_MAX_TIME_SCALE:g}] "
                "(virtual seconds per wall second)"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed = {seed!r}: must be an integer >= 0")
        if options is not None and not isinstance(options, SimOptions):
            raise ConfigError(f"options = {options!r:.80}: must be a SimOptions")
        opts = options or SimOptions()
        if acceptance_rate is not None:
            opts = dataclasses.replace(opts, acceptance_rate=acceptance_rate)
        self.configuration = configuration
        self.options = opts
        self.time_scale = float(ts)
        self.seed = seed
        self.plan: SimPlan = plan(configuration, opts)  # errors before anything runs
        self._bs = opts.engine.block_size_tokens
        ctx_limit = CONTEXT_TOKENS.get(self.plan.target.name)
        if max_model_len is not None:
            if (
                isinstance(max_model_len, bool)
                or not isinstance(max_model_len, int)
                or (max_model_len < 2)
            ):
                raise ConfigError(f"max_model_len = {max_model_len!r}: must be an integer >= 2")
            ctx_limit = max_model_len if ctx_limit is None else min(ctx_limit, max_model_len)
        self.max_model_len: int | None = ctx_limit
        # clocks
        if origin is None:
            self._mono0, self._epoch0 = time.monotonic(), time.time()
        else:
            ok = isinstance(origin, tuple) and len(origin) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in origin
            )
            if not ok or origin[0] > time.monotonic():
                raise ConfigError(f"origin = {origin!r:.80}: must be another LiveSim's origin "
                                  "(its (monotonic, epoch) seconds of virtual time 0)")  # fmt: skip
            self._mono0, self._epoch0 = float(origin[0]), float(origin[1])
        self._created_s = self.now_s()
        # per GPU: busy logs filled by the timelines, drained after every step
        gpus = configuration.gpus
        self._power = tuple(power_model(g) for g in gpus)
        self._busy = tuple(BusyLog() for _ in gpus)
        self._busy_s = [0.0] * len(gpus)
        self._dyn_j = [0.0] * len(gpus)
        self._recent: list[tuple[tuple[float, float, float], ...]] = [() for _ in gpus]
        # counters
        self._spec_proposed = self._spec_accepted = self._spec_steps = 0
        self._submitted = self._finished = self._cancelled = self._tokens = 0
        self._max_lag_s = 0.0
        self._ids = itertools.count()
        self._active: dict[int, LiveRequest] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._stopped = False
        self._instances: tuple[_Instance, ...] = ()
        self._links: tuple[Link, ...] = ()

    # ---- construction of the instances (needs a running loop for the events) ---------------
    def _build(self) -> None:
        p, opts = self.plan, self.options
        kind, caps = p.configuration.kind, p.kv_capacity_tokens
        busy = self._busy
        if kind is ConfigKind.STANDALONE:
            tl = PlainTimeline(step_model(p.target, p.gpus[0]).time_util, busy[0])
            self._instances = (_Instance(self, "target", tl, caps[0], (0,)),)
            return
        if kind is ConfigKind.DPD:
            gbps = p.configuration.link_gbps
            assert gbps is not None
            link = Link(gbps, opts.link_latency_s)
            self._links = (link,)
            kv_per_token = p.target.kv_cache_bytes(1)

            def admit(s: _Seq, t: float) -> float:  # pull the KV once memory is reserved
                return link.send(s.ready if s.ready > t else t, kv_per_token * s.ctx0)

            decode = _Instance(
                self,
                "decode",
                PlainTimeline(step_model(p.target, p.gpus[1]).time_util, busy[1]),
                caps[1],
                (1,),
                admit_hook=admit,
            )

            def handoff(s: _Seq, t_first: float) -> None:
                req = s.req
                out = req.max_tokens
                decode.add(_Seq(req, decode, 0, out - 1, s.pre,
                                self._reserve(s.pre + out), t_first))  # fmt: skip

            prefill = _Instance(
                self,
                "prefill",
                PlainTimeline(step_model(p.target, p.gpus[0]).time_util, busy[0]),
                caps[0],
                (0,),
                on_prefilled=handoff,
            )
            self._instances = (prefill, decode)
            return
        assert p.draft is not None and p.acceptance_rate is not None
        tgt = step_model(p.target, p.gpus[0])
        drf = step_model(p.draft, p.gpus[-1])
        sampler = AcceptanceSampler(p.acceptance_rate, p.k, self.seed)
        if kind is ConfigKind.SPEC_DECODE:
            tl1: Timeline = SpecOneGPUTimeline(tgt, drf, p.k, busy[0])
            self._instances = (
                _Instance(self, "target+draft", tl1, min(caps), (0,), sampler=sampler),
            )
            return
        gbps = p.configuration.link_gbps
        assert gbps is not None
        self._links = (Link(gbps, opts.link_latency_s), Link(gbps, opts.link_latency_s))
        tl2 = SpecTwoGPUTimeline(
            tgt,
            drf,
            p.k,
            p.target.vocab_size,
            *self._links,
            overlap=opts.dsd_overlap,
            busy_new=busy[0],
            busy_old=busy[1],
            ahead_hit_rate=ahead_rate(p.acceptance_rate, p.k, opts.dsd_draft_ahead),
            seed=self.seed,
        )
        self._instances = (_Instance(self, "dsd", tl2, min(caps), (0, 1), sampler=sampler),)

    def _reserve(self, tokens: int) -> int:
        bs = self._bs
        return -(-tokens // bs) * bs

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running

    async def start(self) -> None:
        """Start one task per instance (no-op when running; a stopped sim cannot restart)."""
        if self._running:
            return
        if self._stopped:
            raise BackendClosedError("LiveSim was stopped; create a new one")
        self._build()
        now = self.now_s()
        for inst in self._instances:
            inst.t = now  # before the first submit, even one before the tasks first run
        self._running = True
        self._tasks = [
            asyncio.create_task(self._guard(inst), name=f"livesim-{inst.name}")
            for inst in self._instances
        ]

    async def stop(self) -> None:
        """Stop the tasks; requests still running end with :class:`BackendClosedError`.
        Idempotent."""
        if not self._running:
            return
        self._running = False
        self._stopped = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_all(BackendClosedError("the simulator was stopped"))

    async def _guard(self, inst: _Instance) -> None:
        try:
            await inst.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: fail the requests rather than hang them
            logger.exception("LiveSim instance %s failed", inst.name)
            self._running = False
            self._stopped = True
            self._fail_all(BackendClosedError(f"the simulator failed: {err!r}"))

    def _fail_all(self, err: BaseException) -> None:
        for req in list(self._active.values()):
            req.finished = True
            req._queue.put_nowait(err)
        self._active.clear()

    # ---- clocks --------------------------------------------------------------------------------
    def now_s(self) -> float:
        """Virtual seconds since the origin (wall seconds x ``time_scale``; the origin is the
        sim's creation unless another sim's :attr:`origin` was given)."""
        return (time.monotonic() - self._mono0) * self.time_scale

    def clock_s(self) -> float:
        """Virtual epoch seconds: the epoch at creation + :meth:`now_s`. Token times, arrivals
        and the power sampler use this clock."""
        return self._epoch0 + self.now_s()

    @property
    def epoch_s(self) -> float:
        """:meth:`clock_s` at virtual time 0 (the origin)."""
        return self._epoch0

    @property
    def origin(self) -> tuple[float, float]:
        """(monotonic, epoch) seconds of virtual time 0: give it to another LiveSim (with the
        same ``time_scale``) to share this one's virtual clock, as a switch's old and new
        configurations do."""
        return self._mono0, self._epoch0

    async def _sleep_until(self, t: float) -> None:
        """Sleep until virtual time ``t`` in wall time; only yield when already past it."""
        while True:
            delay = t / self.time_scale - (time.monotonic() - self._mono0)
            if delay <= 0:
                await asyncio.sleep(0)
                return
            await asyncio.sleep(delay)

    # ---- requests ------------------------------------------------------------------------------
    @property
    def max_request_tokens(self) -> int:
        """The most prompt + output tokens one request may ask for (KV capacity of every
        instance it passes, less K speculative slots, and the context length)."""
        p, bs = self.plan, self._bs
        caps = p.kv_capacity_tokens
        kind = p.configuration.kind
        if kind is ConfigKind.STANDALONE:
            m = caps[0] // bs * bs
        elif kind is ConfigKind.DPD:
            m = caps[1] // bs * bs  # prompt alone on the prefill GPU is checked at submit
        else:
            m = min(caps) // bs * bs - p.k
        return m if self.max_model_len is None else min(m, self.max_model_len)

    def _check(self, prompt_tokens: int, max_tokens: int) -> None:
        for name, v, lo in (("prompt_tokens", prompt_tokens, 1), ("max_tokens", max_tokens, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"{name} = {v!r}: must be an integer >= {lo}")
        total = int(prompt_tokens) + int(max_tokens)
        p = self.plan
        if self.max_model_len is not None and total > self.max_model_len:
            raise ConfigError(
                f"prompt ({prompt_tokens}) + max_tokens ({max_tokens}) = {total} tokens exceeds "
                f"{p.target.name}'s context length of {self.max_model_len} tokens; lower max_tokens"
            )
        kind, caps = p.configuration.kind, p.kv_capacity_tokens
        needs: list[tuple[int, int, str]] = []  # (reserved, capacity, where)
        if kind is ConfigKind.STANDALONE:
            needs.append((self._reserve(total), caps[0], p.gpus[0].name))
        elif kind is ConfigKind.DPD:
            needs.append((self._reserve(int(prompt_tokens)), caps[0], p.gpus[0].name))
            if max_tokens > 1:
                needs.append((self._reserve(total), caps[1], p.gpus[1].name))
        else:
            needs.append((self._reserve(total + p.k), min(caps), "/".join(g.name for g in p.gpus)))
        for need, cap, where in needs:
            if need > cap:
                raise ConfigError(
                    f"prompt ({prompt_tokens}) + max_tokens ({max_tokens}) needs {need} KV tokens "
                    f"but {self.configuration.label} holds {cap} on {where}; the most one request "
                    f"may ask for is about {self.max_request_tokens} tokens in all"
                )

    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int,
        *,
        request_id: str | None = None,
        arrival_s: float | None = None,
    ) -> LiveRequest:
        """Queue a request of ``prompt_tokens`` prompt tokens generating exactly ``max_tokens``
        tokens. It arrives now (:meth:`clock_s`), or at ``arrival_s`` on that clock (not in the
        future; e.g. several requests at one instant, or a replayed trace's exact times; an
        instance already past it takes the request at its next iteration). Iterate the returned
        :class:`LiveRequest` for its tokens; cancel it to withdraw. ``ConfigError`` for bad
        sizes or one that can never fit; :class:`BackendClosedError` unless started."""
        self._check(prompt_tokens, max_tokens)
        if not self._running:
            raise BackendClosedError(
                "LiveSim is not running: await start() first"
                if not self._stopped
                else "LiveSim was stopped"
            )
        t = self.now_s()
        if arrival_s is not None:
            a = arrival_s - self._epoch0
            if (
                isinstance(arrival_s, bool)
                or not isinstance(arrival_s, (int, float))
                or not (math.isfinite(a) and a <= t)
            ):
                raise ConfigError(
                    f"arrival_s = {arrival_s!r}: must be a time on clock_s()'s clock, not after now"
                )
            t = a
        n = next(self._ids)
        req = LiveRequest(self, request_id or f"req-{n}", int(prompt_tokens), int(max_tokens),
                          self._epoch0 + t)  # fmt: skip
        self._active[n] = req
        req._key = n
        self._submitted += 1
        first = self._instances[0]
        pre, dec = int(prompt_tokens), int(max_tokens) - 1
        if self.plan.configuration.kind is ConfigKind.DPD:
            res = self._reserve(pre)
            dec = 0
        else:
            res = self._reserve(pre + int(max_tokens) + self.plan.k * (first.sampler is not None))
        first.add(_Seq(req, first, pre, dec, 0, res, t))
        return req

    async def stream(
        self,
        prompt_tokens: int,
        max_tokens: int,
        *,
        request_id: str | None = None,
        arrival_s: float | None = None,
    ) -> AsyncGenerator[TokenEvent, None]:
        """:meth:`submit` as an async generator; closing it early cancels the request."""
        req = self.submit(prompt_tokens, max_tokens, request_id=request_id, arrival_s=arrival_s)
        try:
            async for ev in req:
                yield ev
        finally:
            req.cancel()

    def _cancel(self, req: LiveRequest) -> None:
        if req.finished or req.cancelled:
            return
        req.cancelled = True
        self._cancelled += 1
        self._active.pop(req._key, None)
        for s in req._seqs:
            if s.state != _GONE:
                s.inst.remove(s)
        req._seqs.clear()
        req._queue.put_nowait(None)

    def _emit(self, req: LiveRequest, t: float, n: int, *, first: bool, last: bool) -> None:
        req.emitted += n
        self._tokens += n
        ev = TokenEvent(self._epoch0 + t, n, first, last)
        if first:
            req._got_first = True
            req._queue.put_nowait(ev)
            for held in req._held:
                req._queue.put_nowait(held)
            req._held.clear()
        elif req._got_first:
            req._queue.put_nowait(ev)
        else:  # DPD: a decode step delivered before the prefill task emitted the first token
            req._held.append(ev)

    def _finish(self, req: LiveRequest) -> None:
        req.finished = True
        self._finished += 1
        self._active.pop(req._key, None)
        req._seqs.clear()
        if req._got_first:
            req._queue.put_nowait(None)
        else:
            req._held.append(None)

    # ---- GPUs --------------------------------------------------------------------------------
    def _drain_busy(self, gpus: tuple[int, ...]) -> None:
        for g in gpus:
            log = self._busy[g]
            if not log.starts:
                continue
            dyn = self._power[g].dynamic_w
            new = tuple(zip(log.starts, log.ends, log.utils, strict=True))
            for s, e, u in new:
                self._busy_s[g] += e - s
                self._dyn_j[g] += (e - s) * dyn * min(max(u, 0.0), 1.0)
            del log.starts[:], log.ends[:], log.utils[:]
            self._recent[g] = (self._recent[g] + new)[-_RECENT:]  # one atomic swap: thread-safe

    def _virtual(self, at_s: float | None) -> float:
        return self.now_s() if at_s is None else at_s - self._epoch0

    def utilisation(self, at_s: float | None = None) -> tuple[float, ...]:
        """Each GPU's utilisation at ``at_s`` (on :meth:`clock_s`'s clock; default now): that of
        the step it runs then, 0 when idle. When the simulation runs behind the clock (past its
        last step while still having work), a GPU reads its last step's. Safe to call from
        another thread."""
        tau = self._virtual(at_s)
        out = []
        for g, recent in enumerate(self._recent):
            u = 0.0
            for s, e, ui in reversed(recent):
                if s <= tau < e:
                    u = ui
                    break
            else:
                if (
                    recent
                    and tau >= recent[-1][1]
                    and any(
                        g in inst.gpus and (inst.decoding or inst.prefilling)
                        for inst in self._instances
                    )
                ):
                    u = recent[-1][2]  # behind the clock, still busy
            out.append(u)
        return tuple(out)

    def power_w(self, at_s: float | None = None) -> tuple[float, ...]:
        """Each GPU's modelled power at ``at_s`` (default now): idle + dynamic x utilisation."""
        return tuple(
            pm.power_w(u) for pm, u in zip(self._power, self.utilisation(at_s), strict=True)
        )

    def energy_j(self, at_s: float | None = None) -> tuple[float, ...]:
        """Modelled joules of each GPU from creation until ``at_s`` (:meth:`clock_s` time,
        default now; not before the last step began): idle power throughout plus each step's
        dynamic power (the part of a running step still ahead excluded)."""
        now = self._virtual(at_s)
        out = []
        for g, pm in enumerate(self._power):
            ahead = sum(
                (e - max(s, now)) * pm.dynamic_w * min(max(u, 0.0), 1.0)
                for s, e, u in self._recent[g]
                if e > now
            )
            out.append(pm.idle_w * (now - self._created_s) + self._dyn_j[g] - ahead)
        return tuple(out)

    def kv_free_tokens(self) -> tuple[int, ...]:
        """KV tokens not reserved, per instance (prefill then decode for DPD)."""
        return tuple(inst.free for inst in self._instances)

    def stats(self) -> LiveStats:
        return LiveStats(
            iterations=sum(i.iterations for i in self._instances),
            iterations_per_instance=tuple(i.iterations for i in self._instances),
            busy_s=tuple(self._busy_s),
            spec_proposed_tokens=self._spec_proposed,
            spec_accepted_tokens=self._spec_accepted,
            spec_steps=self._spec_steps,
            link_bytes=sum(ln.sent_bytes for ln in self._links),
            link_messages=sum(ln.messages for ln in self._links),
            requests_submitted=self._submitted,
            requests_finished=self._finished,
            requests_cancelled=self._cancelled,
            requests_active=len(self._active),
            tokens_emitted=self._tokens,
            max_lag_s=self._max_lag_s,
        )

    def __repr__(self) -> str:
        return (
            f"LiveSim({self.configuration.label}, time_scale={self.time_scale:g}, "
            f"running={self._running})"
        )
