"""The driver: :class:`Engine` runs Standalone, SpecDecode, Disg-Spec-Decode or
Disg-Pref-Decode with workers in separate processes (or Ray actors) and serves requests
through an async API.

::

    with Engine("dsd", target="smollm2-135m", draft="smollm2-135m-draft", k=4) as engine:
        out = asyncio.run(engine.generate("def add(a, b):", SamplingParams(max_tokens=32)))
        print(out.text, out.ttft_s, engine.stats().bytes_old_to_new)

Workers: ``standalone`` and ``spec_decode`` use one worker on the new GPU (``device_new``);
``dsd`` adds a draft worker and ``dpd`` a decode worker on the old GPU (``device_old``). The
driver talks to workers with JSON over TCP (:mod:`~greenllm.engine.comm.control`); workers talk to
each other over ``torch.distributed`` (:mod:`~greenllm.engine.comm.transport`). The driver watches
its workers: when the old-GPU worker dies, DSD requests finish on the target alone and DPD
requests handed to the decode worker are re-run on the prefill worker; none is lost or
answered twice. :meth:`close` (also at exit and on garbage collection) stops every worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.link import LinkEmulation
from greenllm.engine.comm.placement import WorkerHandle
from greenllm.engine.driver.outputs import Pending, RequestOutput
from greenllm.engine.stats import EngineStats
from greenllm.errors import ConfigError, GreenLLMError, WorkerError

__all__ = ["MODES", "Engine"]

logger = logging.getLogger(__name__)

#: Engine modes and their workers, (side, role), the leader (new GPU) first.
MODES: dict[str, tuple[tuple[str, str], ...]] = {
    "standalone": (("new", "standalone"),),
    "spec_decode": (("new", "spec_decode"),),
    "dsd": (("new", "dsd_target"), ("old", "dsd_draft")),
    "dpd": (("new", "dpd_prefill"), ("old", "dpd_decode")),
}


class _Runtime:
    """Everything :meth:`Engine.close` must release; owned apart so a finaliser can reach it."""

    def __init__(self) -> None:
        self.server: socket.socket | None = None
        self.handles: list[WorkerHandle] = []
        self.channels: dict[int, ControlChannel] = {}
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for ch in self.channels.values():
            with contextlib.suppress(GreenLLMError):
                ch.send({"type": "shutdown"})
        deadline = time.monotonic() + 5.0
        for h in self.handles:
            if not h.wait(max(0.0, deadline - time.monotonic())):
                logger.warning("worker %d (%s) did not exit; killing it", h.index, h.role)
            h.kill()
            if h.proc is not None:
                h.proc.wait(timeout=10)
        for ch in self.channels.values():
            ch.close()
        if self.server is not None:
            self.server.close()


class Engine:
    """A disaggregated serving engine; see the module docstring.

    mode: "standalone", "spec_decode", "dsd" or "dpd". target / draft: local model folders or
    aliases of :func:`greenllm.engine.model.pretrained.resolve_model_dir` (draft for spec_decode/dsd).
    k: draft tokens per step. overlap: DSD sends probabilities behind the target forward.
    lean: DSD sends draft-token probabilities only (full row on rejection). link: emulated
    link between the two workers. placement: "local" processes, "ray" actors
    (``ray_resources={"new": {"gpu_type:A100": 1}, "old": {"gpu_type:T4": 1}}``) or a placement
    object, e.g. :class:`~greenllm.engine.comm.placement.NetnsPlacement` (a real shaped link).
    timeout_s: every worker-to-worker receive; rendezvous_timeout_s: workers joining.
    threads: torch threads per worker (default: CPU count / number of workers).
    """

    def __init__(
        self,
        mode: str = "standalone",
        target: str = "smollm2-135m",
        draft: str | None = None,
        *,
        k: int = 4,
        device_new: str = "cpu",
        device_old: str = "cpu",
        overlap: bool = True,
        lean: bool = False,
        link: LinkEmulation | None = None,
        placement: Any = "local",
        ray_resources: dict[str, dict[str, float]] | None = None,
        timeout_s: float = 60.0,
        rendezvous_timeout_s: float = 30.0,
        start_timeout_s: float = 300.0,
        dtype: str = "float32",
        threads: int | None = None,
        max_batch: int = 8,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: use one of {sorted(MODES)}")
        if mode in ("spec_decode", "dsd") and draft is None:
            raise ConfigError(f"mode={mode!r} needs a draft model: pass draft=<folder or alias>")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r}: the number of speculative tokens must be an integer >= 1")
        if isinstance(placement, str) and placement not in ("local", "ray"):
            raise ConfigError(f"placement={placement!r}: use 'local', 'ray' or a placement object")
        self.mode, self.target, self.draft, self.k = mode, str(target), draft, k
        self.devices = {"new": device_new, "old": device_old}
        self.overlap, self.lean, self.link = overlap, lean, link
        self.placement, self.ray_resources = placement, ray_resources
        self.timeout_s, self.rendezvous_timeout_s = timeout_s, rendezvous_timeout_s
        self.start_timeout_s, self.dtype, self.max_batch = start_timeout_s, dtype, max_batch
        self.threads = threads
        self.tokenizer: Any = None
        self._rt = _Runtime()
        self._finalizer = weakref.finalize(self, self._rt.close)
        self._lock = threading.RLock()
        self._pending: dict[int, Pending] = {}
        self._rids = itertools.count(1)
        self._stats_replies: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self._last_stats: dict[int, dict[str, Any]] = {}
        self._ready: dict[int, threading.Event] = {}
        self._fatal: dict[int, str] = {}
        self.events: list[str] = []
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Engine:
        """Launch the workers and wait until they are ready (WorkerError if one fails)."""
        if self._started:
            return self
        self._started = True
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        from greenllm.engine.driver.supervisor import launch_workers, load_tokenizer

        self.tokenizer = load_tokenizer(self.target)
        launch_workers(self)

    def close(self) -> None:
        """Stop every worker (shutdown, then kill after 5 s). Idempotent."""
        self._rt.close()
        with self._lock:
            pending = [p for p in self._pending.values() if not p.done]
        for p in pending:
            p.resolve(error=WorkerError(f"engine closed before request {p.rid} finished"))

    @property
    def workers(self) -> list[dict[str, Any]]:
        """Per worker: index, side, role, pid, resources granted (Ray), alive."""
        return [{"index": h.index, "side": h.side, "role": h.role, "pid": h.pid,
                 "resources": dict(h.resources), "alive": h.alive}
                for h in self._rt.handles]  # fmt: skip

    def in_flight(self) -> dict[int, int]:
        """Requests not finished yet: request id -> tokens received so far."""
        with self._lock:
            return {p.rid: len(p.tokens) for p in self._pending.values() if not p.done}

    def worker_pid(self, side: str) -> int | None:
        """OS pid of the worker on ``side`` ("new" or "old"), None if absent."""
        return next((h.pid for h in self._rt.handles if h.side == side), None)

    # -- requests ------------------------------------------------------------------------
    def _encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError(
                    f"prompt is text but model {self.target!r} has no tokenizer; pass token ids"
                )
            return list(self.tokenizer(prompt)["input_ids"])
        ids = [int(t) for t in prompt]
        if not ids:
            raise ConfigError("prompt is empty: pass a non-empty string or list of token ids")
        return ids

    async def generate(
        self,
        prompt: str | Sequence[int],
        sampling: Any = None,
        *,
        timeout_s: float | None = None,
        k: int | None = None,
        overlap: bool | None = None,
        lean: bool | None = None,
    ) -> RequestOutput:
        """Serve one request; concurrent calls are batched / pipelined by the workers.

        ``k``, ``overlap`` and ``lean`` override the engine's DSD settings for this request.
        """
        from greenllm.engine.model.sampling import SamplingParams

        if not self._started or self._rt.closed:
            raise WorkerError("the engine is not running: use `with Engine(...)` or start()")
        sampling = sampling or SamplingParams()
        ids = self._encode(prompt)
        loop = asyncio.get_running_loop()
        rid = next(self._rids)
        params = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens, "seed": sampling.seed,
                  "stop_token_ids": list(sampling.stop_token_ids)}  # fmt: skip
        pending = Pending(rid, ids, params, time.time(), loop, loop.create_future())
        with self._lock:
            self._pending[rid] = pending
            self._send_leader(
                {
                    "type": "generate",
                    "rid": rid,
                    "prompt": ids,
                    "sampling": params,
                    "spec": {"k": k, "overlap": overlap, "lean": lean},
                }
            )
        try:
            return await asyncio.wait_for(pending.future, timeout_s)
        except TimeoutError as err:
            raise WorkerError(f"request {rid} not finished within timeout_s={timeout_s}") from err
        finally:
            with self._lock:
                self._pending.pop(rid, None)

    def generate_batch(
        self, prompts: Sequence[str | Sequence[int]], sampling: Any = None, **options: Any
    ) -> list[RequestOutput]:
        """Serve ``prompts`` concurrently and return their outputs in order (sync); ``options``
        as for :meth:`generate`."""

        async def run_all() -> list[RequestOutput]:
            jobs = (self.generate(p, sampling, **options) for p in prompts)
            return list(await asyncio.gather(*jobs))

        return asyncio.run(run_all())

    def _send_leader(self, msg: dict[str, Any]) -> None:
        leader = self._rt.handles[0]
        if not leader.alive:
            raise WorkerError(f"the {leader.role} worker (new GPU) is dead: restart the Engine")
        self._rt.channels[leader.index].send(msg)

    # -- stats ---------------------------------------------------------------------------
    def stats(self, timeout_s: float = 10.0) -> EngineStats:
        """Counters since start: bytes per direction and kind, busy time, draft acceptance."""
        seq = next(self._rids)
        asked = []
        for h in self._rt.handles:
            if h.alive and h.index in self._rt.channels:
                try:
                    self._rt.channels[h.index].send({"type": "stats", "seq": seq})
                    asked.append(h.index)
                except GreenLLMError:
                    pass
        deadline = time.monotonic() + timeout_s
        got: set[int] = set()
        while got != set(asked) and time.monotonic() < deadline:
            try:
                index, snap = self._stats_replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if snap.get("seq") == seq:
                self._last_stats[index] = snap["stats"]
                got.add(index)
        snaps = [(h.side, self._last_stats.get(h.index, {"role": h.role}), h.alive)
                 for h in self._rt.handles]  # fmt: skip
        return EngineStats.combine(self.mode, snaps)
