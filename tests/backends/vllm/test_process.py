"""Worker processes die with their parent, even a SIGKILLed one, grandchildren included."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from greenllm.backends.vllm.process import WorkerProcess

# The engine stand-in: like vLLM's worker it starts a process (EngineCore, forked) which starts
# another (VLLM::Worker), plus a plain subprocess; it reports their pids and sleeps.
ENGINE = """
import json, multiprocessing, os, subprocess, sys, time

SLEEP = [sys.executable, "-c", "import time; time.sleep(300)"]

def core(conn):
    worker = subprocess.Popen(SLEEP)
    conn.send(worker.pid)
    time.sleep(300)

if __name__ == "__main__":
    sleeper = subprocess.Popen(SLEEP)
    ctx = multiprocessing.get_context("fork")
    here, there = ctx.Pipe()
    forked = ctx.Process(target=core, args=(there,))
    forked.start()
    pids = [os.getpid(), sleeper.pid, forked.pid, here.recv()]
    print(json.dumps({"type": "ready", "pids": pids}), flush=True)
    time.sleep(300)
"""

# The parent (a backend in pytest, say): starts the engine, prints its pids, waits to be killed.
PARENT = """
import json, sys, time
from pathlib import Path
from greenllm.backends.vllm.process import WorkerProcess

w = WorkerProcess("engine", Path(sys.executable), "fake_engine", log_path=Path(sys.argv[1]))
print(json.dumps(w.wait_for("ready", 60)["pids"]), flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _readline(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    assert ready, f"no line within {timeout_s} s"
    return proc.stdout.readline()


@pytest.fixture
def engine_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "fake_engine.py").write_text(textwrap.dedent(ENGINE))
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sigkilled_parent_takes_its_workers_and_their_children_along(
    tmp_path: Path, engine_env: dict[str, str]
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "engine.log")],
        stdout=subprocess.PIPE,
        env=engine_env,
    )
    pids: list[int] = []
    try:
        pids = json.loads(_readline(parent, 60))
        assert len(pids) == 4 and all(_alive(p) for p in pids)
        parent.kill()  # SIGKILL: no atexit, no close()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "processes outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        for pid in pids:  # only what this test started
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_close_still_ends_the_group_and_the_module_gets_its_args(
    tmp_path: Path, engine_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", engine_env["PYTHONPATH"])
    (tmp_path / "echo_args.py").write_text(
        "import json, sys\n"
        "if __name__ == '__main__':\n"
        "    print(json.dumps({'type': 'ready', 'argv': sys.argv}), flush=True)\n"
        "    sys.stdin.read()\n"
    )
    w = WorkerProcess("echo", Path(sys.executable), "echo_args", args=["--x", "1"],
                      log_path=tmp_path / "echo.log")  # fmt: skip
    assert w.wait_for("ready", 30)["argv"][1:] == ["--x", "1"]  # argv[0]: the file, as -m
    w.close(timeout_s=5)
    assert not w.alive()
    w = WorkerProcess("engine", Path(sys.executable), "fake_engine", log_path=tmp_path / "e.log")
    pids = w.wait_for("ready", 60)["pids"]
    w.close(timeout_s=1)  # no shutdown command: the group is ended
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)]


# A real vLLM engine (EngineCore and its workers are forked by vLLM inside the worker).
VLLM_PARENT = """
import json, sys, time
from pathlib import Path
from greenllm.backends.vllm.engine_args import EngineSettings, standalone_kwargs
from greenllm.backends.vllm.pool import EnginePool, EngineSpec
from greenllm.backends.vllm.scratch import Scratch
from greenllm.engine import resolve_model_dir

pool = EnginePool(Path(sys.argv[1]), Scratch(), 1, 240)  # short /tmp path: vLLM IPC sockets
kwargs = standalone_kwargs(str(resolve_model_dir("smollm2-135m")), EngineSettings())
(engine,) = pool.get([EngineSpec("target", "standalone", "cpu", kwargs, {})])
print(json.dumps(engine.worker.pid), flush=True)
time.sleep(600)
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_a_sigkilled_parent_takes_its_vllm_engine_along(vllm_python: str, tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    parent = subprocess.Popen(
        [sys.executable, "-c", VLLM_PARENT, vllm_python], stdout=subprocess.PIPE
    )
    pids: list[int] = []
    try:
        worker = psutil.Process(json.loads(_readline(parent, 240)))
        pids = [worker.pid, *(p.pid for p in worker.children(recursive=True))]
        assert len(pids) >= 2, "vLLM started no engine-core process"
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 60  # SIGKILL waits for a process stuck in the kernel
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if _alive(p)], "vLLM processes outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
