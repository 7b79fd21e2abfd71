"""Worker process entry point: ``python -m greenllm.engine.worker.main --driver HOST:PORT
--worker N`` (local placement), or :func:`run_worker` inside a Ray actor.

A worker connects to the driver's control socket, says ``hello`` (pid, host, a free port for
the data-plane rendezvous, the Ray resources it was given), receives ``init`` (its role, model
folders, device, DSD/DPD options, the rendezvous address), loads its model(s), joins the
two-rank ``torch.distributed`` group when it has a peer, replies ``ready`` and runs its role
loop (:mod:`~greenllm.engine.worker.single`, :mod:`~greenllm.engine.worker.dsd`,
:mod:`~greenllm.engine.worker.dpd`) with a :class:`~greenllm.engine.worker.context.WorkerContext`.

The context's control thread keeps reading the driver: ``generate`` requests go to a queue,
``abort`` marks a request id aborted (the role loop drops it at its next step boundary),
``peer_dead`` fails the data-plane mailbox (waking a worker blocked on its dead peer),
``stats`` is answered at once, ``shutdown`` stops the loop. If the driver's connection closes,
the worker exits: no orphan processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.messages import FatalMsg, HelloMsg, InitMsg, ReadyMsg
from greenllm.errors import GreenLLMError, WorkerError

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.worker.context import WorkerContext

__all__ = ["free_port", "main", "role_runners", "run_worker"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def role_runners() -> dict[str, Callable[[WorkerContext], None]]:
    """Worker role -> its loop (imports torch)."""
    from greenllm.engine.worker import dpd, dsd, single

    return {
        "standalone": single.run_standalone,
        "spec_decode": single.run_spec_decode,
        "dsd_target": dsd.run_target,
        "dsd_draft": dsd.run_draft,
        "dpd_prefill": dpd.run_prefill,
        "dpd_decode": dpd.run_decode,
    }


def run_worker(host: str, port: int, worker_id: int, resources: dict[str, float] | None = None,
               node_ip: str = "127.0.0.1", exit_process: bool = True) -> None:  # fmt: skip
    """Connect to the driver at ``host:port`` and serve until shutdown, then exit the process
    (``exit_process=False`` returns instead: in a Ray actor, which the driver then kills)."""
    sock = socket.create_connection((host, port), timeout=30)
    channel = ControlChannel(sock, "driver")
    hello: HelloMsg = {"type": "hello", "worker": worker_id, "pid": os.getpid(), "host": node_ip,
                       "port": free_port(node_ip), "resources": resources or {}}  # fmt: skip
    channel.send(hello)
    init = cast(InitMsg, channel.recv(timeout_s=600, what="init"))
    role = init["role"]
    try:
        import torch

        from greenllm.engine.worker.context import WorkerContext

        ctx = WorkerContext(channel, init)
        runners = role_runners()
        if role not in runners:
            raise WorkerError(f"unknown worker role {role!r}; known: {sorted(runners)}")
        if init.get("threads"):
            torch.set_num_threads(int(init["threads"]))
        torch.manual_seed(0)
        peer = init.get("dist")
        if peer is not None:
            from greenllm.engine.comm.link import LinkEmulation
            from greenllm.engine.comm.transport import Transport

            ctx.transport = Transport(
                int(peer["rank"]), peer["peer_name"], device=init["device"],
                link=LinkEmulation.from_dict(init.get("link")), timeout_s=ctx.timeout_s,
            )  # fmt: skip
        threading.Thread(target=ctx.control_loop, name="greenllm-control", daemon=True).start()
        ctx.load_models()
        if peer is not None:
            ctx.peer.connect(peer["addr"], int(peer["port"]),
                             float(init.get("rendezvous_timeout_s", 30.0)))  # fmt: skip
        ready: ReadyMsg = {"type": "ready", "worker": worker_id}
        channel.send(ready)
        runners[role](ctx)
    except Exception as err:
        logger.exception("worker %d (%s) failed", worker_id, role)
        fatal: FatalMsg = {"type": "fatal", "worker": worker_id,
                           "message": f"{type(err).__name__}: {err}"}  # fmt: skip
        with contextlib.suppress(GreenLLMError):
            channel.send(fatal)
        time.sleep(0.2)
        if not exit_process:
            raise
        os._exit(1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    if exit_process:
        os._exit(0)  # gloo's teardown can hang when the peer is already gone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="greenllm engine worker (started by Engine)")
    parser.add_argument("--driver", required=True, help="HOST:PORT of the driver's socket")
    parser.add_argument("--worker", type=int, required=True, help="worker index")
    parser.add_argument("--node-ip", default="127.0.0.1", help="this worker's address for peers")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("GREENLLM_LOG", "WARNING"),
                        format="%(asctime)s worker%(process)d %(name)s: %(message)s")  # fmt: skip
    host, _, port = args.driver.rpartition(":")
    run_worker(host, int(port), args.worker, node_ip=args.node_ip)


if __name__ == "__main__":
    main()
