"""Worker process entry point: ``python -m greenllm.engine.worker.main --driver HOST:PORT
--worker N`` (local placement), or :func:`run_worker` inside a Ray actor.

A worker connects to the driver's control socket, says ``hello`` (pid, host, a free port for
the data-plane rendezvous, the Ray resources it was given), receives ``init`` (its role, model
folders, device, DSD/DPD options, the rendezvous address), loads its model(s), joins the
two-rank ``torch.distributed`` group when it has a peer, replies ``ready`` and runs its role
loop (:mod:`greenllm.engine.worker.single`, :mod:`greenllm.engine.worker.dsd`, :mod:`greenllm.engine.worker.dpd`).

A control thread keeps reading the driver: ``generate`` requests go to a queue, ``peer_dead``
fails the data-plane mailbox (waking a worker blocked on its dead peer), ``stats`` is answered
at once, ``shutdown`` stops the loop. If the driver's connection closes, the worker exits: no
orphan processes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import socket
import sys
import threading
import time
from typing import Any

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.stats import WorkerCounters
from greenllm.errors import GreenLLMError, WorkerError

__all__ = ["WorkerContext", "free_port", "load_causal_lm", "main", "run_worker"]

logger = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def load_causal_lm(path: str, device: str, dtype: str = "float32") -> Any:
    """A causal LM from a local folder or a :mod:`~greenllm.engine.model.pretrained` alias, eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from greenllm.engine.model.pretrained import resolve_model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_model_dir(path)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    return model.to(device).eval()


class WorkerContext:
    """What a role loop needs: its init message, the request queue, counters, the transport."""

    def __init__(self, channel: ControlChannel, init: dict[str, Any]) -> None:
        self.channel = channel
        self.init = init
        self.role: str = init["role"]
        self.requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.counters = WorkerCounters(self.role)
        self.transport: Any = None
        self.stopping = threading.Event()
        self.timeout_s = float(init.get("timeout_s", 60.0))

    # -- to the driver -------------------------------------------------------------------
    def emit(self, rid: int, tokens: list[int], times_s: list[float]) -> None:
        self.channel.send({"type": "tokens", "rid": rid, "tokens": tokens, "times": times_s})

    def finish(self, rid: int, reason: str, proposed: int = 0, accepted: int = 0) -> None:
        self.channel.send({"type": "finish", "rid": rid, "reason": reason,
                           "proposed": proposed, "accepted": accepted})  # fmt: skip

    def fail_request(self, rid: int, message: str) -> None:
        self.channel.send({"type": "error", "rid": rid, "message": message})

    def event(self, text: str) -> None:
        logger.warning("%s: %s", self.role, text)
        self.counters.event(text)
        self.channel.send({"type": "event", "text": text})

    # -- from the driver -----------------------------------------------------------------
    def next_request(self, block: bool) -> dict[str, Any] | None:
        """The next ``generate`` message; None if none is waiting (or when stopping)."""
        try:
            msg = self.requests.get(block=block, timeout=None)
        except queue.Empty:
            return None
        if msg is None:
            self.stopping.set()
        return msg

    def control_loop(self) -> None:
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, GreenLLMError):
                logger.info("%s: driver gone; exiting", self.role)
                os._exit(0)
            kind = msg["type"]
            if kind == "generate":
                self.requests.put(msg)
            elif kind == "peer_dead":
                if self.transport is not None:
                    self.transport.mailbox.fail(f"the driver reports: {msg.get('reason', '')}")
            elif kind == "stats":
                snap = self.counters.snapshot(self.transport)
                self.channel.send({"type": "stats", "seq": msg.get("seq", 0), "stats": snap})
            elif kind == "shutdown":
                self.stopping.set()
                self.requests.put(None)
                if self.transport is not None:
                    self.transport.mailbox.fail("shutting down")
                return


def _run_role(ctx: WorkerContext) -> None:
    from greenllm.engine.worker import dpd, dsd
    from greenllm.engine.worker import single as workers

    runners = {
        "standalone": workers.run_standalone,
        "spec_decode": workers.run_spec_decode,
        "dsd_target": dsd.run_target,
        "dsd_draft": dsd.run_draft,
        "dpd_prefill": dpd.run_prefill,
        "dpd_decode": dpd.run_decode,
    }
    if ctx.role not in runners:
        raise WorkerError(f"unknown worker role {ctx.role!r}; known: {sorted(runners)}")
    runners[ctx.role](ctx)


def run_worker(host: str, port: int, worker_id: int, resources: dict[str, float] | None = None,
               node_ip: str = "127.0.0.1", exit_process: bool = True) -> None:  # fmt: skip
    """Connect to the driver at ``host:port`` and serve until shutdown, then exit the process
    (``exit_process=False`` returns instead: in a Ray actor, which the driver then kills)."""
    sock = socket.create_connection((host, port), timeout=30)
    channel = ControlChannel(sock, "driver")
    channel.send({"type": "hello", "worker": worker_id, "pid": os.getpid(), "host": node_ip,
                  "port": free_port(node_ip), "resources": resources or {}})  # fmt: skip
    init = channel.recv(timeout_s=600, what="init")
    ctx = WorkerContext(channel, init)
    try:
        import torch

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
        from greenllm.engine.worker import single as workers

        workers.load_models(ctx)
        if ctx.transport is not None:
            ctx.transport.connect(peer["addr"], int(peer["port"]),
                                  float(init.get("rendezvous_timeout_s", 30.0)))  # fmt: skip
        channel.send({"type": "ready", "worker": worker_id})
        _run_role(ctx)
    except Exception as err:
        logger.exception("worker %d (%s) failed", worker_id, ctx.role)
        with contextlib.suppress(GreenLLMError):
            channel.send({"type": "fatal", "worker": worker_id,
                          "message": f"{type(err).__name__}: {err}"})  # fmt: skip
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
