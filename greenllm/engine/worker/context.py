"""What every worker role shares: the :class:`WorkerContext` (its ``init`` message, the request
queue, counters, models, the data-plane transport, messages to the driver), model loading, and
per-request output bookkeeping (:class:`SeqOutput`, :func:`make_generators`).

The role modules (:mod:`~greenllm.engine.worker.single`, :mod:`~greenllm.engine.worker.dsd`,
:mod:`~greenllm.engine.worker.dpd`) import this module and
:mod:`~greenllm.engine.worker.main` imports them; this module imports neither.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.messages import (
    AbortMsg,
    ErrorMsg,
    EventMsg,
    FinishMsg,
    GenerateMsg,
    HandoffMsg,
    InitMsg,
    PeerDeadMsg,
    StatsReplyMsg,
    StatsRequestMsg,
    TokensMsg,
)
from greenllm.engine.model.sampling import SamplingParams
from greenllm.engine.stats import WorkerCounters
from greenllm.errors import ConfigError, GreenLLMError, WorkerError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.comm.transport import Transport

__all__ = ["SeqOutput", "TokenSink", "WorkerContext", "load_causal_lm", "make_generators"]

logger = logging.getLogger(__name__)

_DRAFT_STREAM = 1_000_003  # offset of the draft's RNG seed from the request seed
ABORT_MEMORY = 4096  # aborted request ids a worker remembers (bounded: a long-running server)


def load_causal_lm(path: str, device: str, dtype: str = "float32") -> Any:
    """A causal LM from a local folder or a model alias
    (:func:`~greenllm.engine.model.resolve.resolve_model_dir`), in eval mode."""
    from transformers import AutoModelForCausalLM

    from greenllm.engine.model.resolve import resolve_model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = resolve_model_dir(path)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    return model.to(device).eval()


def make_generators(params: SamplingParams) -> tuple[torch.Generator, torch.Generator]:
    """(target, draft) generators: seeded from the request seed, else from fresh entropy."""
    target, draft = torch.Generator(), torch.Generator()
    if params.seed is None:
        target.seed()
        draft.seed()
    else:
        target.manual_seed(params.seed)
        draft.manual_seed(params.seed + _DRAFT_STREAM)
    return target, draft


class TokenSink(Protocol):
    """Where emitted tokens go (a :class:`WorkerContext`, or a stand-in in tests)."""

    def emit(self, rid: int, tokens: list[int], times_s: list[float]) -> None: ...


@dataclass
class SeqOutput:
    """The tokens emitted for one request, cut at ``max_tokens`` or a stop token."""

    rid: int
    params: SamplingParams
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    reason: str = "length"

    @property
    def remaining(self) -> int:
        return self.params.max_tokens - len(self.tokens)

    def add(self, new: list[int]) -> list[int]:
        """Append ``new`` up to the end of the request; the tokens actually added."""
        added: list[int] = []
        for t in new:
            if self.done:
                break
            self.tokens.append(t)
            added.append(t)
            if t in self.params.stop_token_ids:
                self.done, self.reason = True, "stop"
            elif len(self.tokens) >= self.params.max_tokens:
                self.done = True
        return added

    def emit(self, sink: TokenSink, new: list[int]) -> list[int]:
        """Add ``new`` and send the accepted part to ``sink`` with one timestamp."""
        added = self.add(new)
        if added:
            now = time.time()
            sink.emit(self.rid, added, [now] * len(added))
        return added


class WorkerContext:
    """What a role loop needs: its init message, the request queue, counters, its model(s),
    the transport to its peer (pairs only), and the messages it sends to the driver."""

    def __init__(self, channel: ControlChannel, init: InitMsg) -> None:
        self.channel = channel
        self.init = init
        self.role: str = init["role"]
        self.requests: queue.Queue[GenerateMsg | None] = queue.Queue()
        self.counters = WorkerCounters(self.role)
        self.transport: Transport | None = None
        self.model: Any = None
        self.draft: Any = None
        self.stopping = threading.Event()
        self.timeout_s = float(init.get("timeout_s", 60.0))
        self.max_batch = int(init.get("max_batch", 8))
        self._aborted: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._abort_lock = threading.Lock()

    @property
    def peer(self) -> Transport:
        """The data-plane transport to the peer worker (WorkerError for a role without one)."""
        if self.transport is None:
            raise WorkerError(f"the {self.role} worker has no peer: its init had no 'dist'")
        return self.transport

    def load_models(self) -> None:
        """Load the model (:attr:`model`) and, for spec_decode, the draft (:attr:`draft`)."""
        init = self.init
        dtype = init.get("dtype", "float32")
        start_s = time.perf_counter()
        self.model = load_causal_lm(init["model"], init["device"], dtype)
        self.draft = None
        if self.role == "spec_decode":
            if not init.get("draft_model"):
                raise ConfigError("spec_decode needs a draft model: pass draft=...")
            self.draft = load_causal_lm(str(init["draft_model"]), init["device"], dtype)
        logger.info("%s: models loaded in %.2f s", self.role, time.perf_counter() - start_s)

    # -- to the driver -------------------------------------------------------------------
    def emit(self, rid: int, tokens: list[int], times_s: list[float]) -> None:
        msg: TokensMsg = {"type": "tokens", "rid": rid, "tokens": tokens, "times": times_s}
        self.channel.send(msg)

    def finish(self, rid: int, reason: str, proposed: int = 0, accepted: int = 0) -> None:
        msg: FinishMsg = {"type": "finish", "rid": rid, "reason": reason,
                          "proposed": proposed, "accepted": accepted}  # fmt: skip
        self.channel.send(msg)

    def fail_request(self, rid: int, message: str) -> None:
        msg: ErrorMsg = {"type": "error", "rid": rid, "message": message}
        self.channel.send(msg)

    def handoff(self, rid: int) -> None:
        """Tell the driver that request ``rid`` went to the peer (DPD decode worker)."""
        msg: HandoffMsg = {"type": "handoff", "rid": rid}
        self.channel.send(msg)

    def event(self, text: str) -> None:
        """Log ``text``, count it, and report it to the driver."""
        logger.warning("%s: %s", self.role, text)
        self.counters.event(text)
        msg: EventMsg = {"type": "event", "text": text}
        self.channel.send(msg)

    # -- from the driver -----------------------------------------------------------------
    def next_request(self, block: bool) -> GenerateMsg | None:
        """The next ``generate`` message; None if none is waiting (or when stopping).

        A request aborted before it was taken is answered ``finish`` (reason ``"abort"``) and
        skipped."""
        while True:
            try:
                msg = self.requests.get(block=block, timeout=None)
            except queue.Empty:
                return None
            if msg is None:
                self.stopping.set()
                return None
            if self.is_aborted(int(msg["rid"])):
                self.finish(int(msg["rid"]), "abort")
                continue
            return msg

    def abort(self, rid: int) -> None:
        """Remember that request ``rid`` is aborted (the control thread, on ``abort``)."""
        with self._abort_lock:
            self._aborted[rid] = None
            self._aborted.move_to_end(rid)
            while len(self._aborted) > ABORT_MEMORY:
                self._aborted.popitem(last=False)

    def is_aborted(self, rid: int) -> bool:
        """True once the driver aborted request ``rid``."""
        with self._abort_lock:
            return rid in self._aborted

    def drop_aborted(self, outputs: Iterable[SeqOutput]) -> None:
        """Mark the aborted requests among ``outputs`` done with reason ``"abort"``: they emit
        nothing more, and a :class:`~greenllm.engine.model.batching.BatchDecoder` drops their
        rows (and their KV cache) at its next step and answers ``finish``."""
        for out in outputs:
            if not out.done and self.is_aborted(out.rid):
                out.done, out.reason = True, "abort"

    def control_loop(self) -> None:
        """Read the driver until ``shutdown``; exit the process if the driver goes away."""
        while True:
            try:
                msg = self.channel.recv()
            except (EOFError, GreenLLMError):
                logger.info("%s: driver gone; exiting", self.role)
                os._exit(0)
            kind = msg["type"]
            if kind == "generate":
                self.requests.put(cast(GenerateMsg, msg))
            elif kind == "abort":
                self.abort(int(cast(AbortMsg, msg)["rid"]))
            elif kind == "peer_dead":
                if self.transport is not None:
                    reason = cast(PeerDeadMsg, msg).get("reason", "")
                    self.transport.mailbox.fail(f"the driver reports: {reason}")
            elif kind == "stats":
                seq = cast(StatsRequestMsg, msg).get("seq", 0)
                reply: StatsReplyMsg = {"type": "stats", "seq": seq,
                                        "stats": self.counters.snapshot(self.transport)}
                self.channel.send(reply)
            elif kind == "shutdown":
                self.stopping.set()
                self.requests.put(None)
                if self.transport is not None:
                    self.transport.mailbox.fail("shutting down")
                return
