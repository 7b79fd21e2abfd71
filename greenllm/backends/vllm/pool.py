"""Started vLLM workers, kept across runs, and the DSD draft server processes.

An engine takes ~20 s to start here (minutes on a loaded machine), so :class:`EnginePool` keeps
workers keyed by their engine arguments and environment and reuses them across runs (the least
recently used beyond ``max_engines`` are closed). Engines needed by one run start concurrently.
:class:`DraftServer` runs :mod:`.draft_server` and restarts it on the same port when it died
(the DSD proposer inside the target engine reconnects by itself). The pool owns the scratch
folder every process uses. :func:`shared_pool` gives one pool per vLLM Python for the whole
process (backends created with ``share_engines=True``), closed at exit or by
:func:`close_shared_pools`.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from greenllm.backends.vllm.process import WorkerProcess
from greenllm.backends.vllm.protocol import DraftReadyEvent, ReadyEvent, StartCommand
from greenllm.backends.vllm.scratch import Scratch
from greenllm.errors import ConfigError, WorkerError

__all__ = ["DraftServer", "Engine", "EnginePool", "EngineSpec", "close_shared_pools", "shared_pool"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EngineSpec:
    """One engine of a configuration: its role, vLLM arguments and environment."""

    role: str
    kind: str
    device: str
    engine: Mapping[str, Any]
    env: Mapping[str, str]

    @property
    def key(self) -> str:
        payload = json.dumps([self.kind, self.device, self.engine, self.env], sort_keys=True,
                             default=str)  # fmt: skip
        return hashlib.sha1(payload.encode()).hexdigest()[:16]


@dataclass
class Engine:
    """A started engine: its spec, its worker process and the worker's ``ready`` event."""

    spec: EngineSpec
    worker: WorkerProcess
    ready: ReadyEvent


class EnginePool:
    """Workers by :attr:`EngineSpec.key`; at most ``max_engines`` kept between runs."""

    def __init__(self, python: Path, scratch: Scratch, max_engines: int, start_timeout_s: float):
        if max_engines < 1:
            raise ConfigError(f"max_engines = {max_engines}: must be >= 1")
        self.python = python
        self.scratch = scratch
        self.max_engines = max_engines
        self.start_timeout_s = start_timeout_s
        self.engines: OrderedDict[str, Engine] = OrderedDict()
        self.drafts: dict[tuple[str, ...], DraftServer] = {}

    def draft_server(self, model_dir: Path, device: str, dtype: str, cpus: str) -> DraftServer:
        """The draft server of ``model_dir`` (created once; call :meth:`DraftServer.ensure`)."""
        key = (str(model_dir), device, dtype, cpus)
        if key not in self.drafts:
            self.drafts[key] = DraftServer(self.python, self.scratch, model_dir, device, dtype,
                                           self.start_timeout_s, cpus)  # fmt: skip
        return self.drafts[key]

    def get(self, specs: Sequence[EngineSpec]) -> list[Engine]:
        """Running engines for ``specs`` (started concurrently where needed), in order."""
        wanted = {s.key for s in specs}
        for key in [k for k, e in self.engines.items() if not e.worker.alive()]:
            logger.warning(
                "vLLM worker %s died; it will be restarted", self.engines[key].worker.name
            )
            self.engines.pop(key).worker.close()
        unique = {s.key: s for s in specs}
        starting = [s for k, s in unique.items() if k not in self.engines]
        excess = len(self.engines) + len(starting) - self.max_engines
        for key in [k for k in self.engines if k not in wanted][: max(0, excess)]:
            logger.info("closing idle vLLM engine %s", self.engines[key].worker.name)
            self.engines.pop(key).worker.close()
        started: list[tuple[EngineSpec, WorkerProcess]] = []
        try:
            for spec in starting:
                name = f"{spec.role}-{spec.key[:6]}"
                env = {**self.scratch.env(), **spec.env}
                worker = WorkerProcess(name, self.python, "greenllm.backends.vllm.worker", env=env,
                                       log_path=self.scratch.root / f"{name}.log")  # fmt: skip
                started.append((spec, worker))
                start: StartCommand = {"type": "start", "kind": spec.kind, "device": spec.device,
                                       "engine": dict(spec.engine)}  # fmt: skip
                worker.send(start)
            for spec, worker in started:
                ready = cast(ReadyEvent, worker.wait_for("ready", self.start_timeout_s))
                logger.info("vLLM engine %s ready in %.1f s", worker.name, ready["start_s"])
                self.engines[spec.key] = Engine(spec, worker, ready)
        except BaseException:
            for spec, worker in started:
                self.engines.pop(spec.key, None)
                worker.close()
            raise
        for s in specs:
            self.engines.move_to_end(s.key)
        return [self.engines[s.key] for s in specs]

    def close(self) -> None:
        """Stop every engine and draft server; remove the scratch folder (idempotent)."""
        while self.engines:
            _, eng = self.engines.popitem()
            eng.worker.close()
        for server in self.drafts.values():
            server.close()
        self.drafts.clear()
        self.scratch.close()


class DraftServer:
    """The draft model server process; :meth:`ensure` (re)starts it on a fixed port."""

    def __init__(self, python: Path, scratch: Scratch, model_dir: Path, device: str,
                 dtype: str, start_timeout_s: float, cpus: str = "") -> None:  # fmt: skip
        self.cpus = cpus
        self.python = python
        self.scratch = scratch
        self.model_dir = model_dir
        self.device = device
        self.dtype = dtype
        self.start_timeout_s = start_timeout_s
        self.port = _free_port()
        self.worker: WorkerProcess | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.worker.pid if self.worker is not None and self.worker.alive() else None

    def ensure(self) -> None:
        """Start the server if it is not running (after a crash or a kill: on the same port)."""
        if self.worker is not None and self.worker.alive():
            return
        if self.worker is not None:
            self.worker.close()
        args = ["--model", str(self.model_dir), "--port", str(self.port), "--device", self.device,
                "--dtype", self.dtype, "--cpus", self.cpus]  # fmt: skip
        t0 = time.monotonic()
        self.starts += 1
        self.worker = WorkerProcess(
            f"draft-server-{self.starts}", self.python, "greenllm.backends.vllm.draft_server",
            args=args, env={"TMPDIR": str(self.scratch.subdir("tmp"))},
            log_path=self.scratch.root / "draft-server.log",
        )  # fmt: skip
        ready = cast(DraftReadyEvent, self.worker.wait_for("ready", self.start_timeout_s))
        logger.info("draft server on port %d ready in %.1f s", ready["port"], time.monotonic() - t0)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close(graceful=False)  # it has no shutdown command: SIGTERM the group
            self.worker = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if not port:
        raise WorkerError("no free TCP port on 127.0.0.1 for the draft server")
    return int(port)


_SHARED: dict[str, EnginePool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(python: Path, max_engines: int, start_timeout_s: float) -> EnginePool:
    """The process-wide pool of ``python`` (its capacity grows to the largest ``max_engines``)."""
    with _SHARED_LOCK:
        pool = _SHARED.get(str(python))
        if pool is None:
            pool = _SHARED[str(python)] = EnginePool(
                python, Scratch(), max_engines, start_timeout_s
            )
        pool.max_engines = max(pool.max_engines, max_engines)
        return pool


@atexit.register
def close_shared_pools() -> None:
    """Stop the engines of every shared pool (runs at interpreter exit)."""
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.close()
