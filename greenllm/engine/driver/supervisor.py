"""The driver's workers: :class:`WorkerSupervisor` launches them, runs the hello/init/ready
handshake, reads each worker's control channel in a thread, tracks the requests in flight and
handles a worker's death. It owns all of the driver's worker state; the
:class:`~greenllm.engine.driver.engine.Engine` talks to it only through its public methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, cast

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.link import LinkEmulation
from greenllm.engine.comm.messages import (
    AbortMsg,
    DistInfo,
    EventMsg,
    FatalMsg,
    FinishMsg,
    GenerateMsg,
    HelloMsg,
    InitMsg,
    PeerDeadMsg,
    ShutdownMsg,
    SpecDict,
    StatsReplyMsg,
    StatsRequestMsg,
    TokensMsg,
)
from greenllm.engine.comm.placement import WorkerHandle, make_placement
from greenllm.engine.driver.modes import MODES
from greenllm.engine.driver.outputs import Pending, RequestOutput, TokenEvent
from greenllm.errors import GreenLLMError, WorkerError

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.model.sampling import SamplingDict

__all__ = ["WorkerInfo", "WorkerSettings", "WorkerSupervisor"]

logger = logging.getLogger(__name__)


class WorkerInfo(TypedDict):
    """One worker as :meth:`WorkerSupervisor.workers` describes it."""

    index: int
    side: str
    role: str
    pid: int | None
    resources: dict[str, float]
    alive: bool


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of an engine is told in its ``init`` message.

    target / draft: model folders or aliases (the draft only for spec_decode / dsd);
    devices: ``{"new": ..., "old": ...}``; threads: torch threads per worker (None: CPU count
    divided by the number of workers).
    """

    target: str
    draft: str | None
    devices: dict[str, str]
    dtype: str = "float32"
    k: int = 4
    overlap: bool = True
    lean: bool = False
    ahead: bool = False
    adaptive_k: bool = False
    link: LinkEmulation | None = None
    timeout_s: float = 60.0
    rendezvous_timeout_s: float = 30.0
    threads: int | None = None
    max_batch: int = 8


class WorkerSupervisor:
    """The workers of one engine and the requests in flight on them.

    Thread-safe: the reader threads and the caller's threads share one lock. It holds no
    reference to its engine, so the engine's finaliser can close it.
    """

    def __init__(
        self,
        mode: str,
        placement: Any = "local",
        ray_resources: dict[str, dict[str, float]] | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.mode = mode
        self.roles = MODES[mode]
        self.placement, self.ray_resources = placement, ray_resources
        self.start_timeout_s = start_timeout_s
        self.decode: Callable[[list[int]], str] | None = None
        self.events: list[str] = []  # driver-side events: worker exits
        self._server: socket.socket | None = None
        self._handles: list[WorkerHandle] = []
        self._channels: dict[int, ControlChannel] = {}
        self._closed = False
        self._lock = threading.RLock()
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)  # request ids and stats sequence numbers
        self._ready: dict[int, threading.Event] = {}
        self._fatal: dict[int, str] = {}
        self._stats_replies: queue.Queue[tuple[int, StatsReplyMsg]] = queue.Queue()
        self._last_stats: dict[int, dict[str, Any]] = {}

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def start(
        self, settings: WorkerSettings, decode: Callable[[list[int]], str] | None = None
    ) -> None:
        """Launch the workers and wait until each is ready (WorkerError if one fails).

        ``decode`` turns a request's tokens into its text (None: outputs have no text).
        """
        self.decode = decode
        placement = make_placement(self.placement, self.ray_resources)
        host = placement.driver_host()
        self._server = socket.create_server((host, 0))
        port = self._server.getsockname()[1]
        for index, (side, role) in enumerate(self.roles):
            self._handles.append(placement.launch(host, port, index, side, role))
        deadline = time.monotonic() + self.start_timeout_s
        hellos = self._accept_hellos(deadline)
        n_threads = settings.threads or max(1, (os.cpu_count() or 1) // len(self.roles))
        for index, (side, role) in enumerate(self.roles):
            self._ready[index] = threading.Event()
            dist: DistInfo | None = None
            if len(self.roles) == 2:
                peer = f"{self.roles[1 - index][1]} worker (rank {1 - index})"
                dist = {"addr": hellos[0]["host"], "port": int(hellos[0]["port"]),
                        "rank": index, "peer_name": peer}  # fmt: skip
            model = str(settings.draft) if role == "dsd_draft" else settings.target
            init: InitMsg = {
                "type": "init", "role": role, "device": settings.devices[side], "model": model,
                "draft_model": settings.draft, "dtype": settings.dtype, "k": settings.k,
                "overlap": settings.overlap, "lean": settings.lean, "ahead": settings.ahead,
                "adaptive_k": settings.adaptive_k, "timeout_s": settings.timeout_s,
                "rendezvous_timeout_s": settings.rendezvous_timeout_s, "threads": n_threads,
                "max_batch": settings.max_batch,
                "link": settings.link.to_dict() if settings.link is not None else None,
                "dist": dist,
            }  # fmt: skip
            self._channels[index].send(init)
            threading.Thread(target=self._read, args=(index,), daemon=True,
                             name=f"greenllm-driver-r{index}").start()  # fmt: skip
        for index, (_, role) in enumerate(self.roles):
            while not self._ready[index].wait(0.2):
                if index in self._fatal:
                    raise WorkerError(f"{role} worker failed to start: {self._fatal[index]}")
                if not self._handles[index].alive or time.monotonic() > deadline:
                    raise WorkerError(f"{role} worker died or timed out while starting")
        logger.info("engine %s ready with %d worker(s)", self.mode, len(self.roles))

    def _accept_hellos(self, deadline: float) -> dict[int, HelloMsg]:
        assert self._server is not None
        hellos: dict[int, HelloMsg] = {}
        while len(hellos) < len(self.roles):
            for h in self._handles:
                if h.proc is not None and h.proc.poll() is not None:
                    raise WorkerError(
                        f"{h.role} worker exited with code {h.proc.returncode} at start"
                    )
            self._server.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise WorkerError(
                        f"workers did not connect within start_timeout_s={self.start_timeout_s}"
                    ) from None
                continue
            channel = ControlChannel(conn, "worker")
            hello = cast(HelloMsg, channel.recv(timeout_s=30, what="hello"))
            try:
                index = int(hello["worker"])
                int(hello["pid"])
                if not 0 <= index < len(self.roles) or index in hellos:
                    raise ValueError(f"worker index {index} is unknown or taken")
            except (KeyError, TypeError, ValueError) as err:
                channel.close()
                raise WorkerError(f"bad hello from a worker: {str(err)[:200]}") from err
            channel.peer = f"{self.roles[index][1]} worker (pid {hello['pid']})"
            self._channels[index] = channel
            hellos[index] = hello
            handle = self._handles[index]
            handle.pid, handle.resources = int(hello["pid"]), dict(hello.get("resources", {}))
        return hellos

    def close(self) -> None:
        """Stop every worker (shutdown, then kill after 5 s) and fail the requests still in
        flight. Idempotent."""
        if not self._closed:
            self._closed = True
            shutdown: ShutdownMsg = {"type": "shutdown"}
            for ch in self._channels.values():
                with contextlib.suppress(GreenLLMError):
                    ch.send(shutdown)
            deadline = time.monotonic() + 5.0
            for h in self._handles:
                if not h.wait(max(0.0, deadline - time.monotonic())):
                    logger.warning("worker %d (%s) did not exit; killing it", h.index, h.role)
                h.kill()
                if h.proc is not None:
                    h.proc.wait(timeout=10)
            for ch in self._channels.values():
                ch.close()
            if self._server is not None:
                self._server.close()
        with self._lock:
            pending = [p for p in self._pending.values() if not p.done]
        for p in pending:
            p.resolve(error=WorkerError(f"engine closed before request {p.rid} finished"))

    # -- workers -------------------------------------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        """Per worker: index, side, role, pid, resources granted (Ray), alive."""
        return [{"index": h.index, "side": h.side, "role": h.role, "pid": h.pid,
                 "resources": dict(h.resources), "alive": h.alive}
                for h in self._handles]  # fmt: skip

    def worker_pid(self, side: str) -> int | None:
        """OS pid of the worker on ``side`` ("new" or "old"), None if absent."""
        return next((h.pid for h in self._handles if h.side == side), None)

    # -- requests ------------------------------------------------------------------------
    def submit(
        self,
        prompt: Sequence[int],
        sampling: SamplingDict,
        spec: SpecDict,
        loop: asyncio.AbstractEventLoop,
        stream: bool = False,
    ) -> Pending:
        """Send a request to the leader; its :class:`Pending` resolves on ``loop`` (its future,
        or with ``stream`` its ``events`` queue, which gets every token as it arrives)."""
        rid = next(self._ids)
        pending = Pending(rid, list(prompt), sampling, time.time(), loop,
                          None if stream else loop.create_future(),
                          events=asyncio.Queue() if stream else None)  # fmt: skip
        msg: GenerateMsg = {"type": "generate", "rid": rid, "prompt": pending.prompt,
                            "sampling": sampling, "spec": spec, "local": False}  # fmt: skip
        with self._lock:
            self._pending[rid] = pending
            try:
                self._send_leader(msg)
            except BaseException:
                del self._pending[rid]
                raise
        return pending

    def forget(self, rid: int) -> None:
        """Stop tracking request ``rid`` (finished, failed or abandoned by its caller); a
        request being aborted stays tracked until a worker confirms it dropped it."""
        with self._lock:
            p = self._pending.get(rid)
            if p is not None and not p.aborting:
                del self._pending[rid]

    def release(self, rid: int) -> None:
        """The caller is done with request ``rid``: abort it if it has not finished (see
        :meth:`abort`), else stop tracking it."""
        with self._lock:
            p = self._pending.get(rid)
            if p is not None and not p.done:
                self.abort(rid)
            else:
                self.forget(rid)

    def abort(self, rid: int) -> None:
        """Stop request ``rid``: nothing more reaches its caller, and every live worker is told
        to drop it (``abort``); it stays in :meth:`in_flight` until the worker holding it
        answers (``finish`` with reason "abort", or its normal finish if it got there first)."""
        with self._lock:
            p = self._pending.get(rid)
            if p is None or p.aborting:
                return
            if not p.done:
                p.resolve(error=WorkerError(f"request {rid} aborted"))
            p.aborting = True
            self._send_abort(rid)

    def _send_abort(self, rid: int) -> None:
        msg: AbortMsg = {"type": "abort", "rid": rid}
        for h in self._handles:
            if h.alive and h.index in self._channels:
                with contextlib.suppress(GreenLLMError):
                    self._channels[h.index].send(msg)

    def in_flight(self) -> dict[int, int]:
        """Requests not finished yet (aborted ones until a worker confirms): request id ->
        tokens received so far."""
        with self._lock:
            return {p.rid: len(p.tokens) for p in self._pending.values()
                    if not p.done or p.aborting}  # fmt: skip

    def _send_leader(self, msg: GenerateMsg) -> None:
        leader = self._handles[0]
        if not leader.alive:
            raise WorkerError(f"the {leader.role} worker (new GPU) is dead: restart the Engine")
        self._channels[leader.index].send(msg)

    def _rerun(self, p: Pending) -> None:
        """Send a request whose decode worker died back to the prefill worker (decode locally).

        A stream that already yielded tokens resumes only if the re-run reproduces them
        (greedy, or seeded sampling): the re-run's first tokens are checked against them and
        not yielded again. A sampled stream without a seed fails with WorkerError instead (its
        re-run would sample other tokens than the ones the caller already has)."""
        if p.aborting:
            self._pending.pop(p.rid, None)  # nobody waits for it: nothing to re-run
            return
        if p.events is not None and p.streamed:
            greedy = float(p.sampling.get("temperature", 0.0)) == 0
            if not greedy and p.sampling.get("seed") is None:
                p.resolve(error=WorkerError(
                    f"request {p.rid}: its decode worker died after {p.streamed} token(s) were "
                    "streamed; a sampled request without a seed cannot be re-run without "
                    "changing them (set a seed, or temperature 0)"))  # fmt: skip
                return
            replaying = len(p.replay) > len(p.tokens)
            seen, seen_s = (p.replay, p.replay_times_s) if replaying else (p.tokens, p.times_s)
            p.replay, p.replay_times_s = seen[: p.streamed], seen_s[: p.streamed]
        p.tokens, p.times_s, p.handed_off = [], [], False
        p.reruns += 1
        msg: GenerateMsg = {"type": "generate", "rid": p.rid, "prompt": p.prompt,
                            "sampling": p.sampling, "local": True,
                            "spec": {"k": None, "overlap": None, "lean": None}}  # fmt: skip
        self._send_leader(msg)

    def _on_tokens(self, p: Pending, msg: TokensMsg) -> None:
        """Add a ``tokens`` message to ``p`` and stream the tokens not streamed before."""
        new: list[int] = []
        new_s: list[float] = []
        for token, t_s in zip(msg["tokens"], msg["times"], strict=True):
            i = len(p.tokens)
            if i < len(p.replay):  # a re-run reproducing a token already streamed
                if int(token) != p.replay[i]:
                    p.resolve(error=WorkerError(
                        f"request {p.rid}: its re-run diverged from the {len(p.replay)} "
                        f"token(s) already streamed at token {i}"))  # fmt: skip
                    p.aborting = True  # stop the re-run
                    self._send_abort(p.rid)
                    return
                p.tokens.append(p.replay[i])
                p.times_s.append(p.replay_times_s[i])
            else:
                p.tokens.append(int(token))
                p.times_s.append(float(t_s))
                new.append(int(token))
                new_s.append(float(t_s))
        if new:
            p.push(TokenEvent(p.rid, tuple(new), tuple(new_s)))

    # -- stats ---------------------------------------------------------------------------
    def collect_stats(self, timeout_s: float) -> list[tuple[str, dict[str, Any], bool]]:
        """``(side, latest counters snapshot, alive)`` per worker, asking every live worker
        and waiting up to ``timeout_s`` for the answers (a silent worker's last snapshot)."""
        seq = next(self._ids)
        asked = []
        request: StatsRequestMsg = {"type": "stats", "seq": seq}
        for h in self._handles:
            if h.alive and h.index in self._channels:
                try:
                    self._channels[h.index].send(request)
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
        return [(h.side, self._last_stats.get(h.index, {"role": h.role}), h.alive)
                for h in self._handles]  # fmt: skip

    # -- reader threads ------------------------------------------------------------------
    def _read(self, index: int) -> None:
        """Reader thread of worker ``index``: dispatch its messages until the channel ends.

        Whatever ends it (EOF, a malformed frame, which ControlChannel turns into WorkerError,
        or any unexpected error) goes to :meth:`_on_exit`, so the engine fails the worker's
        requests instead of waiting on a reader thread that died silently."""
        channel = self._channels[index]
        while True:
            try:
                msg = channel.recv()
            except EOFError as err:
                self._on_exit(index, str(err))
                return
            except Exception as err:  # a malformed frame (WorkerError), a bug, an OS oddity
                if not isinstance(err, GreenLLMError):
                    logger.exception("driver: reader of worker %d failed", index)
                reason = str(err) if isinstance(err, GreenLLMError) else (
                    f"control channel failed: {type(err).__name__}: {err}")  # fmt: skip
                channel.close()
                self._fatal.setdefault(index, reason)  # start() raises it if still starting
                self._on_exit(index, reason)
                return
            try:
                self._dispatch(index, msg)
            except Exception:
                logger.exception("driver: bad message from worker %d: %r", index, msg)

    def _dispatch(self, index: int, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ready":
            self._ready[index].set()
        elif kind == "stats":
            self._stats_replies.put((index, cast(StatsReplyMsg, msg)))
        elif kind == "event":
            self.events.append(f"worker {index}: {cast(EventMsg, msg)['text']}")
        elif kind == "fatal":
            message = cast(FatalMsg, msg)["message"]
            self._fatal[index] = message
            logger.error("worker %d fatal: %s", index, message)
        else:
            with self._lock:
                p = self._pending.get(int(msg["rid"]))
                if p is None:
                    return
                if p.aborting:  # a worker's answer to the abort (or its last words)
                    if kind in ("finish", "error"):
                        del self._pending[p.rid]
                    elif kind == "handoff":
                        p.handed_off = True
                        if not self._handles[1].alive:
                            del self._pending[p.rid]
                    return
                if p.done:
                    return
                if kind == "tokens":
                    self._on_tokens(p, cast(TokensMsg, msg))
                elif kind == "finish":
                    p.resolve(self._output(p, cast(FinishMsg, msg)))
                elif kind == "error":
                    p.resolve(error=WorkerError(f"request {p.rid} failed: {msg['message']}"))
                elif kind == "handoff":
                    p.handed_off = True
                    if not self._handles[1].alive:
                        self._rerun(p)

    def _output(self, p: Pending, msg: FinishMsg) -> RequestOutput:
        text = self.decode(p.tokens) if self.decode is not None else ""
        return RequestOutput(p.rid, tuple(p.prompt), tuple(p.tokens), text, tuple(p.times_s),
                             p.arrival_s, str(msg.get("reason", "length")),
                             int(msg.get("proposed", 0)), int(msg.get("accepted", 0)),
                             p.reruns)  # fmt: skip

    def _on_exit(self, index: int, reason: str) -> None:
        handle = self._handles[index]
        handle.alive = False
        if self._closed:
            return
        text = f"{handle.role} worker (pid {handle.pid}) exited: {reason}"
        logger.warning("%s", text)
        self.events.append(text)
        with self._lock:
            for p in [p for p in self._pending.values() if p.aborting]:
                if handle.side == "new" or (self.mode == "dpd" and p.handed_off):
                    del self._pending[p.rid]  # the worker that held it is gone
            pending = [p for p in self._pending.values() if not p.done]
            if handle.side == "new":
                for p in pending:
                    p.resolve(error=WorkerError(f"request {p.rid} lost: the {text}"))
                return
            leader = self._handles[0]
            if leader.alive:
                peer_dead: PeerDeadMsg = {"type": "peer_dead", "reason": text}
                try:
                    self._channels[leader.index].send(peer_dead)
                except GreenLLMError:
                    return
            if self.mode == "dpd":
                for p in pending:
                    if p.handed_off:
                        self._rerun(p)
