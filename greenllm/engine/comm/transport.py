"""The data plane between two workers: ``torch.distributed`` point-to-point (gloo on CPU, NCCL
when both workers are on CUDA), with tensor framing, per-receive timeouts and byte counters.

Every message is a fixed header (``int64[12]``: kind, request id, three small integers, dtype,
rank and up to five dims of the payload) followed by the payload tensor, if any. Sends are
``isend`` (non-blocking; through a :class:`~greenllm.engine.comm.link.LinkShaper` when a link is
emulated). A receiver thread posts ``irecv`` for header then payload and files each message in
a :class:`Mailbox`; workers take messages from it by (kind, request id) with a timeout.

A timed-out gloo ``Work.wait`` closes the connection for good, so timeouts are enforced on the
mailbox, not on gloo: the receiver thread blocks in gloo, and a worker waiting too long gets a
:class:`~greenllm.errors.WorkerError` naming the peer, the message and the timeout. A dead peer
makes gloo raise "Connection closed by peer" in the receiver thread, which fails the mailbox;
the driver, which watches process liveness, can also fail it over the control channel.
"""

from __future__ import annotations

import collections
import datetime
import enum
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from greenllm.engine.comm.link import LinkEmulation, LinkShaper
from greenllm.errors import WorkerError, missing_extra

try:
    import torch
    import torch.distributed as dist
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = [
    "CATEGORY",
    "HEADER_BYTES",
    "Kind",
    "Mailbox",
    "Message",
    "PeerLostError",
    "Transport",
    "decode_json_tensor",
    "encode_json_tensor",
]

logger = logging.getLogger(__name__)

_HEADER_LEN = 12
HEADER_BYTES = _HEADER_LEN * 8
_DTYPES = [torch.int64, torch.float32, torch.float16, torch.bfloat16, torch.uint8, torch.int32]
_MAX_DIMS = 5
# gloo applies the group's (rendezvous) timeout to every wait() without one and closes the pair
# when it expires; an idle link is normal here, so waits are unbounded and timeouts are
# enforced on the mailbox instead.
_NO_TIMEOUT = datetime.timedelta(days=3650)


class Kind(enum.IntEnum):
    """Data-plane message kinds (the header's first field)."""

    ADMIT = 1  # leader -> follower: JSON (uint8) describing a new request
    IDS = 2  # draft -> target: K draft token ids
    PROBS = 3  # draft -> target: K full draft probability rows (K, V)
    TOKEN_PROBS = 4  # draft -> target (lean): the K draft-token probabilities (K,)
    ROW_REQUEST = 5  # target -> draft (lean): send the full row at position a
    ROW = 6  # draft -> target (lean): one draft row (V,)
    FEEDBACK = 7  # target -> draft: a=accepted, b=next token, c=next K
    FINISH = 8  # leader -> follower: request done, free its state
    KV = 9  # prefill -> decode: a=layer, b=0 keys / 1 values
    SHUTDOWN = 10  # either way: stop the receiver


#: Byte-counter category of each kind (headers are counted apart, as "header").
CATEGORY = {
    Kind.ADMIT: "control", Kind.IDS: "ids", Kind.PROBS: "probs", Kind.TOKEN_PROBS: "probs",
    Kind.ROW_REQUEST: "control", Kind.ROW: "probs", Kind.FEEDBACK: "control",
    Kind.FINISH: "control", Kind.KV: "kv", Kind.SHUTDOWN: "control",
}  # fmt: skip


class PeerLostError(WorkerError):
    """The peer worker died, hung past the timeout, or was declared dead by the driver."""


def encode_json_tensor(obj: Mapping[str, Any]) -> torch.Tensor:
    """``obj`` as UTF-8 JSON in a uint8 tensor: a data-plane payload (e.g. ``ADMIT``)."""
    return torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)


def decode_json_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """The JSON object in a uint8 tensor made by :func:`encode_json_tensor`; WorkerError for
    anything else (invalid UTF-8, malformed or too deeply nested JSON, a non-object)."""
    try:
        obj = json.loads(bytes(tensor.cpu().numpy()).decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError, JSONDecodeError included
        raise WorkerError(f"malformed JSON payload from the peer: {str(err)[:200]}") from err
    if not isinstance(obj, dict):
        raise WorkerError(f"a JSON payload must be an object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class Message:
    """One received data-plane message: its header fields and payload (None if it has none)."""

    kind: Kind
    rid: int
    a: int = 0
    b: int = 0
    c: int = 0
    tensor: Any = None
    received_s: float = 0.0
    """``time.perf_counter()`` when the receiver thread had it (its arrival, not its taking)."""


class Mailbox:
    """Received messages, taken by (kind, rid) or in arrival order; fails all waiters at once."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self._items: collections.deque[Message] = collections.deque()
        self._cond = threading.Condition()
        self._failure: PeerLostError | None = None

    def put(self, msg: Message) -> None:
        with self._cond:
            self._items.append(msg)
            self._cond.notify_all()

    def fail(self, reason: str) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = PeerLostError(f"{self.peer} lost: {reason}")
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def waiting(self) -> bool:
        """A message is waiting to be taken."""
        return bool(self._items)

    def check(self) -> None:
        """Raise the :class:`PeerLostError` if the mailbox has failed."""
        if self._failure is not None:
            raise self._failure

    def poll(self, kind: Kind | None = None, rid: int | None = None) -> Message | None:
        """The first matching message if one is waiting, else None (raises if failed)."""
        with self._cond:
            for i, m in enumerate(self._items):
                if (kind is None or m.kind == kind) and (rid is None or m.rid == rid):
                    del self._items[i]
                    return m
            if self._failure is not None:
                raise self._failure
        return None

    def get(self, kind: Kind | None, rid: int | None, timeout_s: float, what: str = "") -> Message:
        """The first message matching ``kind``/``rid`` (None = any), waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for i, m in enumerate(self._items):
                    if (kind is None or m.kind == kind) and (rid is None or m.rid == rid):
                        del self._items[i]
                        return m
                if self._failure is not None:
                    raise self._failure
                left = deadline - time.monotonic()
                if left <= 0:
                    name = what or (kind.name if kind is not None else "any message")
                    req = "" if rid is None else f" for request {rid}"
                    raise PeerLostError(
                        f"timed out after {timeout_s:g} s waiting for {name}{req} from "
                        f"{self.peer}; the peer is hung or too slow (raise timeout_s)"
                    )
                self._cond.wait(left)


class Transport:
    """Point-to-point link to the one peer of a two-worker group (ranks 0 and 1)."""

    def __init__(
        self,
        rank: int,
        peer_name: str,
        *,
        device: str = "cpu",
        link: LinkEmulation | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.rank = rank
        self.peer = 1 - rank
        self.peer_name = peer_name
        self.device = torch.device(device)
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.timeout_s = timeout_s
        self.mailbox = Mailbox(peer_name)
        self.bytes_sent: dict[str, int] = collections.Counter()
        self.bytes_received: dict[str, int] = collections.Counter()
        self._shaper = LinkShaper(link, f"link-r{rank}") if link is not None else None
        self._inflight: list[Any] = []
        self._recv_thread: threading.Thread | None = None
        self.connected = False

    # -- setup ---------------------------------------------------------------------------
    def connect(self, addr: str, port: int, rendezvous_timeout_s: float = 30.0) -> None:
        """Join the two-rank process group; WorkerError if the peer does not join in time."""
        start_s = time.monotonic()
        try:
            dist.init_process_group(
                self.backend,
                init_method=f"tcp://{addr}:{port}",
                rank=self.rank,
                world_size=2,
                timeout=datetime.timedelta(seconds=rendezvous_timeout_s),
            )
        except (RuntimeError, dist.DistError) as err:
            raise WorkerError(
                f"rank {self.rank}: {self.peer_name} never connected to tcp://{addr}:{port} "
                f"within the rendezvous timeout of {rendezvous_timeout_s:g} s ({err}); check "
                "that the peer started and that the address is reachable"
            ) from err
        self.connected = True
        logger.info("rank %d: %s group up in %.2f s", self.rank, self.backend,
                    time.monotonic() - start_s)  # fmt: skip
        self._recv_thread = threading.Thread(
            target=self._receive_loop, name=f"greenllm-recv-r{self.rank}", daemon=True
        )
        self._recv_thread.start()

    # -- sending -------------------------------------------------------------------------
    def send(
        self,
        kind: Kind,
        rid: int,
        tensor: torch.Tensor | None = None,
        a: int = 0,
        b: int = 0,
        c: int = 0,
        *,
        blocking: bool = False,
    ) -> None:
        """Send a header and optional payload with ``isend``; ``blocking`` waits for delivery."""
        self.mailbox.check()
        header = torch.zeros(_HEADER_LEN, dtype=torch.int64)
        header[:5] = torch.tensor([int(kind), rid, a, b, c])
        payload = None
        if tensor is not None:
            payload = tensor.detach().contiguous()
            if payload.ndim > _MAX_DIMS or payload.dtype not in _DTYPES:
                raise WorkerError(f"cannot frame a {payload.dtype} tensor of rank {payload.ndim}")
            header[5] = _DTYPES.index(payload.dtype)
            header[6] = payload.ndim
            header[7 : 7 + payload.ndim] = torch.tensor(payload.shape, dtype=torch.int64)
            payload = payload.to(self.device)
        else:
            header[6] = -1
        header = header.to(self.device)
        nbytes = payload.numel() * payload.element_size() if payload is not None else 0
        self.bytes_sent["header"] += HEADER_BYTES
        self.bytes_sent[CATEGORY[kind]] += nbytes

        def do_send() -> None:
            # Runs in the caller's thread, or in the link shaper's thread once the message's
            # wire time is up. Only a blocking send waits for delivery: waiting in the shaper
            # would also hold every later message until the receiver has taken this one (on a
            # loaded machine, a few ms per message: the link could not reach its rate).
            works = [dist.isend(header, dst=self.peer)]
            if payload is not None:
                works.append(dist.isend(payload, dst=self.peer))
            if blocking:
                for w in works:
                    w.wait(_NO_TIMEOUT)
            else:
                self._inflight = [w for w in self._inflight if not w.is_completed()] + works

        try:
            if self._shaper is None:
                do_send()
                return
            sizes = {"header": HEADER_BYTES, CATEGORY[kind]: nbytes}
            done, error = self._shaper.submit(sizes, do_send)
            if blocking:
                done.wait()
                if error:
                    raise error[0]
        except RuntimeError as err:
            self.mailbox.fail(f"send of {kind.name} failed: {err}")
            raise PeerLostError(f"sending {kind.name} to {self.peer_name} failed: {err}") from err

    @property
    def wire_s(self) -> dict[str, float]:
        """Emulated wire seconds per category sent (empty without link emulation)."""
        return dict(self._shaper.wire_s) if self._shaper is not None else {}

    # -- receiving -----------------------------------------------------------------------
    def _receive_loop(self) -> None:
        try:
            while True:
                header = torch.empty(_HEADER_LEN, dtype=torch.int64, device=self.device)
                dist.irecv(header, src=self.peer).wait(_NO_TIMEOUT)
                h = [int(x) for x in header.cpu()]
                kind = Kind(h[0])
                tensor = None
                if h[6] >= 0:
                    shape = h[7 : 7 + h[6]]
                    tensor = torch.empty(shape, dtype=_DTYPES[h[5]], device=self.device)
                    dist.irecv(tensor, src=self.peer).wait(_NO_TIMEOUT)
                    self.bytes_received[CATEGORY[kind]] += tensor.numel() * tensor.element_size()
                self.bytes_received["header"] += HEADER_BYTES
                self.mailbox.put(Message(kind, h[1], h[2], h[3], h[4], tensor,
                                         time.perf_counter()))  # fmt: skip
                if kind == Kind.SHUTDOWN:
                    return
        except Exception as err:  # the peer died or the group broke
            logger.warning("rank %d: receive from %s failed: %s", self.rank, self.peer_name, err)
            self.mailbox.fail(f"connection closed ({str(err)[:200]})")

    def recv(self, kind: Kind, rid: int, what: str = "", timeout_s: float | None = None) -> Message:
        """The next ``kind`` message for request ``rid`` (PeerLostError on timeout or loss)."""
        return self.mailbox.get(kind, rid, self.timeout_s if timeout_s is None else timeout_s,
                                what)  # fmt: skip

    def recv_any(self, timeout_s: float | None = None) -> Message:
        return self.mailbox.get(None, None, self.timeout_s if timeout_s is None else timeout_s,
                                "the next message")  # fmt: skip

    def close(self) -> None:
        """Stop the link thread. The process group is left to process exit (gloo may hang in
        ``destroy_process_group`` when the peer is gone)."""
        if self._shaper is not None:
            self._shaper.close()
