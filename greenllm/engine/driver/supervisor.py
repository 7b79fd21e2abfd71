"""Driver internals of :class:`~greenllm.engine.driver.engine.Engine`: launching workers, the
hello/init/ready handshake, one reader thread per worker, and what happens when one dies."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.placement import make_placement
from greenllm.engine.driver.outputs import Pending, RequestOutput
from greenllm.errors import GreenLLMError, WorkerError

__all__ = ["launch_workers", "load_tokenizer"]

logger = logging.getLogger(__name__)


def load_tokenizer(model: str) -> Any:
    """The tokenizer saved with ``model`` (folder or alias), or None if it has none."""
    from transformers import AutoTokenizer

    from greenllm.engine.model.pretrained import resolve_model_dir

    folder = resolve_model_dir(model)
    if not any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(folder)


def launch_workers(engine: Any) -> None:
    from greenllm.engine.driver.engine import MODES

    rt = engine._rt
    roles = MODES[engine.mode]
    placement = make_placement(engine.placement, engine.ray_resources)
    host = placement.driver_host()
    rt.server = socket.create_server((host, 0))
    rt.server.settimeout(engine.start_timeout_s)
    port = rt.server.getsockname()[1]
    for index, (side, role) in enumerate(roles):
        rt.handles.append(placement.launch(host, port, index, side, role))
    hellos: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + engine.start_timeout_s
    while len(hellos) < len(roles):
        _check_launched(rt.handles)
        rt.server.settimeout(max(0.1, min(1.0, deadline - time.monotonic())))
        try:
            conn, _ = rt.server.accept()
        except TimeoutError:
            if time.monotonic() > deadline:
                raise WorkerError(
                    f"workers did not connect within start_timeout_s={engine.start_timeout_s}"
                ) from None
            continue
        channel = ControlChannel(conn, "worker")
        hello = channel.recv(timeout_s=30, what="hello")
        index = int(hello["worker"])
        channel.peer = f"{roles[index][1]} worker (pid {hello['pid']})"
        rt.channels[index] = channel
        hellos[index] = hello
        handle = rt.handles[index]
        handle.pid, handle.resources = int(hello["pid"]), dict(hello.get("resources", {}))
    n_threads = engine.threads or max(1, (os.cpu_count() or 1) // len(roles))
    for index, (side, role) in enumerate(roles):
        engine._ready[index] = threading.Event()
        init: dict[str, Any] = {
            "type": "init", "role": role, "device": engine.devices[side],
            "model": engine.target if role not in ("dsd_draft",) else engine.draft,
            "draft_model": engine.draft, "dtype": engine.dtype, "k": engine.k,
            "overlap": engine.overlap, "lean": engine.lean, "timeout_s": engine.timeout_s,
            "rendezvous_timeout_s": engine.rendezvous_timeout_s, "threads": n_threads,
            "max_batch": engine.max_batch,
            "link": engine.link.to_dict() if engine.link is not None else None,
        }  # fmt: skip
        if len(roles) == 2:
            peer_role = roles[1 - index][1]
            init["dist"] = {"addr": hellos[0]["host"], "port": int(hellos[0]["port"]),
                            "rank": index,
                            "peer_name": f"{peer_role} worker (rank {1 - index})"}  # fmt: skip
        rt.channels[index].send(init)
        threading.Thread(target=_reader, args=(engine, index), daemon=True,
                         name=f"greenllm-driver-r{index}").start()  # fmt: skip
    for index in range(len(roles)):
        while not engine._ready[index].wait(0.2):
            if index in engine._fatal:
                raise WorkerError(f"{roles[index][1]} worker failed to start: "
                                  f"{engine._fatal[index]}")  # fmt: skip
            if not rt.handles[index].alive or time.monotonic() > deadline:
                raise WorkerError(f"{roles[index][1]} worker died or timed out while starting")
    logger.info("engine %s ready with %d worker(s)", engine.mode, len(roles))


def _check_launched(handles: list[Any]) -> None:
    for h in handles:
        if h.proc is not None and h.proc.poll() is not None:
            raise WorkerError(f"{h.role} worker exited with code {h.proc.returncode} at start")


def _reader(engine: Any, index: int) -> None:
    channel = engine._rt.channels[index]
    while True:
        try:
            msg = channel.recv()
        except (EOFError, GreenLLMError) as err:
            _on_exit(engine, index, str(err))
            return
        try:
            _dispatch(engine, index, msg)
        except Exception:
            logger.exception("driver: bad message from worker %d: %r", index, msg)


def _dispatch(engine: Any, index: int, msg: dict[str, Any]) -> None:
    kind = msg["type"]
    if kind == "ready":
        engine._ready[index].set()
    elif kind == "stats":
        engine._stats_replies.put((index, msg))
    elif kind == "event":
        engine.events.append(f"worker {index}: {msg['text']}")
    elif kind == "fatal":
        engine._fatal[index] = msg["message"]
        logger.error("worker %d fatal: %s", index, msg["message"])
    else:
        with engine._lock:
            p = engine._pending.get(int(msg["rid"]))
            if p is None or p.done:
                return
            if kind == "tokens":
                p.tokens += [int(t) for t in msg["tokens"]]
                p.times_s += [float(t) for t in msg["times"]]
            elif kind == "finish":
                p.resolve(_output(engine, p, msg))
            elif kind == "error":
                p.resolve(error=WorkerError(f"request {p.rid} failed: {msg['message']}"))
            elif kind == "handoff":
                p.handed_off = True
                if not engine._rt.handles[1].alive:
                    _rerun(engine, p)


def _output(engine: Any, p: Pending, msg: dict[str, Any]) -> RequestOutput:
    text = ""
    if engine.tokenizer is not None:
        text = engine.tokenizer.decode(p.tokens, skip_special_tokens=True)
    return RequestOutput(p.rid, tuple(p.prompt), tuple(p.tokens), text, tuple(p.times_s),
                         p.arrival_s, str(msg.get("reason", "length")),
                         int(msg.get("proposed", 0)), int(msg.get("accepted", 0)),
                         p.reruns)  # fmt: skip


def _rerun(engine: Any, p: Pending) -> None:
    """Send a request whose decode worker died back to the prefill worker (decode locally)."""
    p.tokens, p.times_s, p.handed_off = [], [], False
    p.reruns += 1
    engine._send_leader({"type": "generate", "rid": p.rid, "prompt": p.prompt,
                         "sampling": p.sampling, "local": True})  # fmt: skip


def _on_exit(engine: Any, index: int, reason: str) -> None:
    rt = engine._rt
    handle = rt.handles[index]
    handle.alive = False
    if rt.closed:
        return
    text = f"{handle.role} worker (pid {handle.pid}) exited: {reason}"
    logger.warning("%s", text)
    engine.events.append(text)
    with engine._lock:
        pending = [p for p in engine._pending.values() if not p.done]
        if handle.side == "new":
            for p in pending:
                p.resolve(error=WorkerError(f"request {p.rid} lost: the {text}"))
            return
        leader = rt.handles[0]
        if leader.alive:
            try:
                rt.channels[leader.index].send({"type": "peer_dead", "reason": text})
            except GreenLLMError:
                return
        if engine.mode == "dpd":
            for p in pending:
                if p.handed_off:
                    _rerun(engine, p)
