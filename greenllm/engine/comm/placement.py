"""Where workers run: local OS processes (default; a fresh interpreter each, i.e. spawn, never
fork) or Ray actors placed by custom resources, e.g. ``{"gpu_type:T4": 1}`` for the old-GPU
(draft/decode) worker and ``{"gpu_type:A100": 1}`` for the new-GPU (target/prefill) worker.

Either way the worker runs :func:`greenllm.engine.worker.main.run_worker`, connects back to the
driver's control socket, and talks to its peer over ``torch.distributed``; placement only
decides the process and the node.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenllm.errors import ConfigError, missing_extra

__all__ = ["LocalPlacement", "NetnsPlacement", "RayPlacement", "WorkerHandle", "make_placement"]

logger = logging.getLogger(__name__)


@dataclass
class WorkerHandle:
    """One launched worker: its index, side ("new"/"old") and role, and how to stop it."""

    index: int
    side: str
    role: str
    proc: subprocess.Popen[bytes] | None = None
    actor: Any = None
    run_ref: Any = None
    pid: int | None = None
    resources: dict[str, float] = field(default_factory=dict)
    alive: bool = True

    def kill(self) -> None:
        """Stop the worker at once (SIGKILL, or ``ray.kill``). Safe to call twice."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.actor is not None:
            import ray

            try:
                ray.kill(self.actor, no_restart=True)
            except Exception as err:  # the actor is already gone
                logger.debug("ray.kill: %s", err)
            self.actor = None
        elif self.proc is None and self.pid is not None and self.alive:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout_s: float) -> bool:
        """True if the worker has exited within ``timeout_s`` (always True for actors)."""
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True


class LocalPlacement:
    """Each worker is a new Python process running ``greenllm.engine.worker.main``."""

    name = "local"

    def driver_host(self) -> str:
        return "127.0.0.1"

    def launch(self, host: str, port: int, index: int, side: str, role: str) -> WorkerHandle:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("HF_HUB_OFFLINE", "1")
        cmd = [sys.executable, "-m", "greenllm.engine.worker.main",
               "--driver", f"{host}:{port}", "--worker", str(index)]  # fmt: skip
        cmd = self._wrap(side, cmd, env)
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        logger.info("launched %s worker %d (%s) as pid %d", side, index, role, proc.pid)
        return WorkerHandle(index, side, role, proc=proc, pid=proc.pid)

    def _wrap(self, side: str, cmd: list[str], env: dict[str, str]) -> list[str]:
        """Hook for subclasses: the command (and env) that starts ``side``'s worker."""
        return cmd


class NetnsPlacement(LocalPlacement):
    """Local processes on the two ends of a :class:`~greenllm.engine.comm.netns.ShapedLink`.

    The driver (the process creating the Engine) must already run in the link's new
    namespace (``link.command("new", argv)``); the new-side worker starts beside it and the
    old-side worker in the old namespace, so the data plane (gloo) and the driver's control
    messages to the old worker cross the shaped veth pair.
    """

    name = "netns"

    def __init__(self, link: Any) -> None:
        self.link = link
        try:
            with socket.create_server((link.ip("new"), 0)):
                pass
        except OSError as err:
            raise ConfigError(
                f"NetnsPlacement: this process is not in namespace {link.namespace('new')} "
                f"({link.ip('new')} is not local: {err}); start the driver with "
                f"link.command('new', argv)"
            ) from None

    def driver_host(self) -> str:
        return str(self.link.ip("new"))

    def _wrap(self, side: str, cmd: list[str], env: dict[str, str]) -> list[str]:
        env["GLOO_SOCKET_IFNAME"] = self.link.ifname(side)
        cmd = [*cmd, "--node-ip", self.link.ip(side)]
        return cmd if side == "new" else self.link.command(side, cmd)


class RayPlacement:
    """Each worker is a Ray actor holding ``resources[side]`` (custom resources such as
    ``{"gpu_type:T4": 1}``), so Ray puts it on a node that has them. Needs ``ray.init()``."""

    name = "ray"

    def __init__(self, resources: dict[str, dict[str, float]] | None = None,
                 num_gpus: dict[str, float] | None = None) -> None:  # fmt: skip
        try:
            import ray
        except ImportError as err:
            raise missing_extra("ray", "ray") from err
        if not ray.is_initialized():
            raise ConfigError(
                "placement='ray' needs a running Ray: call ray.init(...) (or ray.init("
                "address='auto') to join a cluster) before starting the Engine"
            )
        self.resources = resources or {}
        self.num_gpus = num_gpus or {}

    def driver_host(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    def launch(self, host: str, port: int, index: int, side: str, role: str) -> WorkerHandle:
        import ray

        actor_cls = ray.remote(_RayWorker).options(
            num_cpus=0, num_gpus=self.num_gpus.get(side, 0), resources=self.resources.get(side, {}),
            name=None, max_restarts=0,
        )  # fmt: skip
        actor = actor_cls.remote()
        ref = actor.run.remote(host, port, index)
        logger.info("launched %s worker %d (%s) as a Ray actor with %s", side, index, role,
                    self.resources.get(side, {}))  # fmt: skip
        return WorkerHandle(index, side, role, actor=actor, run_ref=ref)


class _RayWorker:
    """Ray actor body: run the worker loop in the actor's process."""

    def run(self, host: str, port: int, index: int) -> None:
        import ray

        from greenllm.engine.worker.main import run_worker

        ctx = ray.get_runtime_context()
        resources = {k: float(v) for k, v in ctx.get_assigned_resources().items()}
        run_worker(
            host, port, index, resources, str(ray.util.get_node_ip_address()), exit_process=False
        )


def make_placement(
    placement: Any,
    resources: dict[str, dict[str, float]] | None = None,
    num_gpus: dict[str, float] | None = None,
) -> Any:
    """``"local"``, ``"ray"``, or a placement object (with ``driver_host`` and ``launch``)."""
    if not isinstance(placement, str):
        if callable(getattr(placement, "launch", None)) and callable(
            getattr(placement, "driver_host", None)
        ):
            return placement
        raise ConfigError(
            f"placement={placement!r}: use 'local', 'ray' or a placement object such as "
            "NetnsPlacement(link)"
        )
    if placement == "local":
        return LocalPlacement()
    if placement == "ray":
        return RayPlacement(resources, num_gpus)
    raise ConfigError(f"placement={placement!r}: use 'local' (processes) or 'ray' (actors)")
