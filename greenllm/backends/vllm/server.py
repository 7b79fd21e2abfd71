"""Supervised server processes: vLLM's OpenAI api_server for one role, and the DSD draft server.

:class:`VLLMServer` runs ``python -m vllm.entrypoints.openai.api_server --model DIR --host H
--port P --served-model-name NAME ...`` with the flags :func:`engine_cli_args` derives from the
engine keyword arguments of :mod:`.engine_args` (one role of one configuration), and is ready
when ``GET /health`` answers 200. :class:`DraftServerProcess` runs
``python -m greenllm.backends.vllm.draft_server`` on a fixed port and is ready when it answers
a ``ping``. Both are :class:`ServerProcess`:

* the server runs under a small watchdog (:data:`WATCHDOG`, stdlib only, started with the same
  Python) that leads a new process group (vLLM forks EngineCore processes into it). The watchdog
  reads its stdin, a pipe from this process: at EOF (this process died, even by SIGKILL) it
  ends the whole group (SIGTERM, then SIGKILL after the grace period); when the server exits by
  itself it ends the rest of the group too, so no EngineCore outlives its api_server;
* :meth:`ServerProcess.stop` sends SIGTERM to the group, then SIGKILL after ``grace_s``;
* the server's stdout and stderr go to a log file whose last lines are quoted when it fails to
  start; :meth:`ServerProcess.start` keeps the port, so a restarted server has the same URL.

Nothing here imports vLLM: the servers run in the vLLM venv's Python.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from greenllm.backends.vllm.protocol import decode, encode
from greenllm.errors import ConfigError, WorkerError

__all__ = [
    "API_SERVER_MODULE",
    "DRAFT_SERVER_MODULE",
    "WATCHDOG",
    "DraftServerProcess",
    "ServerProcess",
    "VLLMServer",
    "api_server_argv",
    "draft_server_argv",
    "engine_cli_args",
    "free_port",
    "group_members",
]

logger = logging.getLogger(__name__)

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DRAFT_SERVER_MODULE = "greenllm.backends.vllm.draft_server"

#: Engine arguments that vLLM's parser declares ``store_true`` (no ``--no-`` form): False is
#: their default and is left out. Every other boolean is a ``BooleanOptionalAction``.
STORE_TRUE_ARGS = frozenset({"disable_log_stats", "disable_log_requests", "enable_log_requests",
                             "aggregate_engine_logging"})  # fmt: skip

#: Environment of every server process: offline, no usage reports.
BASE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1"}  # fmt: skip

#: The watchdog, run as ``python -c WATCHDOG GRACE_S ARGV...`` in a new session. It starts ARGV
#: in its own process group, ends the group when its stdin reaches EOF (the parent is gone) or
#: when ARGV exits, and exits with ARGV's code. Standard library only (it must start fast).
WATCHDOG = r"""
import os, signal, subprocess, sys, threading, time
grace = float(sys.argv[1])
me, group = os.getpid(), os.getpgid(0)

def others_alive():
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        if pid == me:
            continue
        try:
            with open("/proc/%d/stat" % pid) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False

lock = threading.Lock()

def end_group(code):
    with lock:
        try:
            os.killpg(group, signal.SIGTERM)
        except OSError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and others_alive():
            time.sleep(0.1)
        if others_alive():
            sys.stderr.write("greenllm watchdog: SIGKILL to process group %d\n" % group)
            sys.stderr.flush()
            os.killpg(group, signal.SIGKILL)
        os._exit(code)

def watch_parent():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    sys.stderr.write("greenllm watchdog: parent gone (stdin EOF); ending the server\n")
    sys.stderr.flush()
    end_group(1)

signal.signal(signal.SIGTERM, lambda *a: None)  # the group's SIGTERM is for the server
signal.signal(signal.SIGINT, lambda *a: None)
child = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL)
threading.Thread(target=watch_parent, daemon=True).start()
rc = child.wait()
sys.stderr.write("greenllm watchdog: server exited with code %d\n" % rc)
sys.stderr.flush()
end_group(rc if rc >= 0 else 128 - rc)
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def engine_cli_args(kwargs: Mapping[str, Any]) -> list[str]:
    """vLLM engine keyword arguments (``EngineArgs`` fields, as :mod:`.engine_args` builds
    them) as the api_server's command-line flags.

    ``name=value`` -> ``--name value`` (underscores become dashes); a dict or list -> JSON
    (``--speculative-config '{...}'``, ``--kv-transfer-config '{...}'``); True -> ``--name``;
    False -> ``--no-name`` (left out for the ``store_true`` flags of :data:`STORE_TRUE_ARGS`);
    None -> left out.
    """
    out: list[str] = []
    for key, value in kwargs.items():
        if not key or not key.replace("_", "").isalnum():
            raise ConfigError(f"engine argument {key!r}: not an EngineArgs field name")
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                out.append(flag)
            elif key not in STORE_TRUE_ARGS:
                out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, (Mapping, list, tuple)):
            payload = dict(value) if isinstance(value, Mapping) else list(value)
            out += [flag, json.dumps(payload, sort_keys=True, default=str)]
        else:
            out += [flag, str(value)]
    return out


def api_server_argv(
    python: str | os.PathLike[str],
    engine_kwargs: Mapping[str, Any],
    *,
    host: str,
    port: int,
    served_model_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line of vLLM's OpenAI server for ``engine_kwargs`` (which must name
    ``model``) on ``host:port``."""
    if not engine_kwargs.get("model"):
        raise ConfigError("engine arguments without 'model': give the model folder")
    argv = [str(python), "-m", API_SERVER_MODULE, "--host", host, "--port", str(int(port))]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    return argv + engine_cli_args(engine_kwargs) + list(extra_args)


def draft_server_argv(
    python: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    *,
    host: str,
    port: int,
    device: str = "cpu",
    dtype: str = "float32",
    cpus: str = "",
    ahead: bool = False,
) -> list[str]:
    """The command line of the DSD draft server (:mod:`.draft_server`; ``ahead``: draft-ahead)."""
    argv = [str(python), "-m", DRAFT_SERVER_MODULE, "--model", str(model_dir), "--host", host,
            "--port", str(int(port)), "--device", device, "--dtype", dtype]  # fmt: skip
    return argv + (["--cpus", cpus] if cpus else []) + (["--ahead"] if ahead else [])


_EXCEPTION_LINE = re.compile(r"^(\(\w+ pid=\d+\)\s*)?([\w.]+(Error|Exception)|ERROR)\b")
"""A traceback's last line (``ValueError: ...``, maybe behind vLLM's ``(EngineCore pid=N)``
prefix) or a logged ``ERROR`` line."""


class ServerProcess:
    """A server process under the watchdog, in its own process group, logging to a file.

    Subclasses say when it is healthy (:meth:`healthy`). :meth:`start` launches it (again after
    a death, on the same port), :meth:`wait_ready` waits for health, :meth:`stop` ends the
    group. Not thread-safe: one owner calls start/stop.
    """

    kind = "server"

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        host: str,
        port: int,
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
        grace_s: float = 10.0,
        python: str | os.PathLike[str] | None = None,
    ) -> None:
        if not argv:
            raise ConfigError("empty server command line")
        if not grace_s > 0:
            raise ConfigError(f"grace_s = {grace_s!r}: must be > 0 seconds")
        self.name = name
        self.argv = [str(a) for a in argv]
        self.host = host
        self.port = int(port)
        self.log_path = Path(log_path)
        self.env = dict(env or {})
        self.grace_s = float(grace_s)
        self.python = str(python) if python is not None else self.argv[0]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_s: float | None = None
        """Seconds the last successful :meth:`wait_ready` took from :meth:`start`."""
        self._t_start = 0.0
        self._log: IO[bytes] | None = None

    # ---- state ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The watchdog's pid, which is also the process group id (None before start)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def healthy(self, timeout_s: float = 2.0) -> bool:  # pragma: no cover - overridden
        return self.alive

    # ---- life ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Launch the server (no-op while it runs; after a death, again on the same port)."""
        if self.alive:
            return
        self._reap()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start {self.name}: "
                        f"{' '.join(self.argv)}\n".encode())  # fmt: skip
        self._log.flush()
        env = {**os.environ, **BASE_ENV, **self.env}
        cmd = [self.python, "-c", WATCHDOG, repr(self.grace_s), *self.argv]
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,  # never written: EOF tells the watchdog we are gone
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: the watchdog, the server, its forks
            )
        except OSError as err:
            self._close_log()
            raise WorkerError(f"could not start {self.name} ({self.python}): {err}") from err
        self.starts += 1
        self._t_start = time.monotonic()
        logger.info("started %s (pid %d) on %s", self.name, self.proc.pid, self.address)

    def wait_ready(self, timeout_s: float = 600.0, poll_s: float = 0.5) -> float:
        """Block until :meth:`healthy`; returns seconds since :meth:`start`. WorkerError (with the
        log's last lines) if the process exits first or after ``timeout_s`` (it is then
        stopped)."""
        if self.proc is None:
            raise WorkerError(f"{self.name} was not started")
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive:
                raise self.error(f"exited with code {self.returncode} before it was ready")
            if self.healthy(timeout_s=min(2.0, max(0.1, deadline - time.monotonic()))):
                self.start_s = time.monotonic() - self._t_start
                logger.info("%s ready in %.1f s", self.name, self.start_s)
                return self.start_s
            if time.monotonic() > deadline:
                err = self.error(f"not ready within {timeout_s:.0f} s")
                self.stop()
                raise err
            time.sleep(poll_s)

    def start_and_wait(self, timeout_s: float = 600.0) -> float:
        self.start()
        return self.wait_ready(timeout_s)

    def stop(self, grace_s: float | None = None) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s`` (idempotent)."""
        grace = self.grace_s if grace_s is None else float(grace_s)
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace + 5.0)  # the watchdog waits up to grace for the group
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0f s; killing it", self.name, grace + 5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)  # whatever is left of the group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        deadline = time.monotonic() + 5.0
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILLed members take a moment to go
        self._reap()

    def kill(self) -> None:
        """SIGKILL the whole group now (fault injection; :attr:`alive` turns False)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None

    # ---- errors --------------------------------------------------------------------------------
    def log_tail(self, n_lines: int = 20) -> str:
        """The log's last lines, preceded by the exception lines above them (a child process's
        root cause, e.g. vLLM's EngineCore, is often far above its parent's traceback)."""
        try:
            if self._log is not None:
                self._log.flush()
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        tail = lines[-n_lines:]
        causes = [line for line in lines[:-n_lines] if _EXCEPTION_LINE.match(line)][-5:]
        text = ""
        if causes:
            text += "\n  errors above them:\n    " + "\n    ".join(dict.fromkeys(causes))
        if tail:
            text += "\n  last lines of " + str(self.log_path) + ":\n    " + "\n    ".join(tail)
        return text

    def error(self, what: str) -> WorkerError:
        return WorkerError(f"{self.kind} {self.name!r} on {self.address}: {what}{self.log_tail()}")

    def __repr__(self) -> str:
        state = "alive" if self.alive else "stopped"
        return f"{type(self).__name__}({self.name!r}, {self.address}, {state})"


class VLLMServer(ServerProcess):
    """vLLM's OpenAI api_server for one role (``target``, ``prefill``, ``decode``,
    ``target+draft``), healthy when ``GET /health`` answers 200.

    ``engine_kwargs``: from :mod:`.engine_args` (``model`` included). ``port=None`` picks a free
    port. ``env``: extra environment (scratch folders, core binding, the DSD proposer's
    ``GREENLLM_DRAFT_*``).
    """

    kind = "vLLM server"

    def __init__(
        self,
        role: str,
        engine_kwargs: Mapping[str, Any],
        *,
        python: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        served_model_name: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        grace_s: float = 10.0,
    ) -> None:
        port = free_port(host) if port is None else int(port)
        self.role = role
        self.engine_kwargs = dict(engine_kwargs)
        self.served_model_name = served_model_name
        argv = api_server_argv(python, engine_kwargs, host=host, port=port,
                               served_model_name=served_model_name,
                               extra_args=extra_args)  # fmt: skip
        super().__init__(f"vllm-{role}", argv, host=host, port=port, log_path=log_path, env=env,
                         grace_s=grace_s, python=python)  # fmt: skip

    def healthy(self, timeout_s: float = 2.0) -> bool:
        return http_health(self.host, self.port, timeout_s)


class DraftServerProcess(ServerProcess):
    """The DSD draft server (:mod:`.draft_server`) on a fixed port, healthy when it answers a
    ``ping`` with a ``pong``."""

    kind = "draft server"

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        python: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        port: int | None = None,
        host: str = "127.0.0.1",
        device: str = "cpu",
        dtype: str = "float32",
        cpus: str = "",
        ahead: bool = False,
        env: Mapping[str, str] | None = None,
        grace_s: float = 5.0,
    ) -> None:
        port = free_port(host) if port is None else int(port)
        self.role = "draft"
        self.model_dir = str(model_dir)
        argv = draft_server_argv(python, model_dir, host=host, port=port, device=device,
                                 dtype=dtype, cpus=cpus, ahead=ahead)  # fmt: skip
        super().__init__("draft-server", argv, host=host, port=port, log_path=log_path, env=env,
                         grace_s=grace_s, python=python)  # fmt: skip

    def healthy(self, timeout_s: float = 2.0) -> bool:
        return draft_ping(self.host, self.port, timeout_s)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid`` (Linux ``/proc``; [] elsewhere)."""
    out: list[int] = []
    try:
        pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    except OSError:
        return out
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(pid)
    return out


def http_health(host: str, port: int, timeout_s: float = 2.0, path: str = "/health") -> bool:
    """True if ``GET http://host:port/health`` answers 200 within ``timeout_s``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def draft_ping(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """True if the draft server at ``host:port`` answers a ``ping`` within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(encode({"type": "ping"}))
            buf = b""
            while b"\n" not in buf:
                data = s.recv(4096)
                if not data:
                    return False
                buf += data
        return decode(buf.split(b"\n", 1)[0].decode()).get("type") == "pong"
    except (OSError, ValueError):
        return False

