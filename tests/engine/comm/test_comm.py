"""The engine's communication pieces in process: mailbox, JSON in tensors, control messages
and framing, link emulation."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from tests.extras import require

torch = require("torch")

from greenllm.engine import (
    LinkEmulation,
    SamplingParams,
)
from greenllm.engine.comm import messages
from greenllm.engine.comm.control import ControlChannel
from greenllm.engine.comm.link import LinkShaper
from greenllm.engine.comm.transport import (
    Kind,
    Mailbox,
    Message,
    PeerLostError,
    decode_json_tensor,
    encode_json_tensor,
)
from greenllm.errors import ConfigError, WorkerError


def test_mailbox_matches_kind_and_request_out_of_order() -> None:
    box = Mailbox("draft worker (rank 1)")
    box.put(Message(Kind.IDS, 2))
    box.put(Message(Kind.ROW, 1, a=3))
    assert box.get(Kind.ROW, 1, 1.0).a == 3
    assert box.poll(Kind.IDS, 1) is None
    assert box.poll(Kind.IDS, 2).rid == 2  # type: ignore[union-attr]


def test_mailbox_timeout_names_peer_message_and_timeout() -> None:
    box = Mailbox("dsd_draft worker (rank 1)")
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"timed out after 0\.2 s waiting for draft token ids "
                       r"for request 7 from dsd_draft worker \(rank 1\)"):  # fmt: skip
        box.get(Kind.IDS, 7, 0.2, "draft token ids")
    assert 0.19 <= time.monotonic() - start < 2


def test_mailbox_fail_wakes_a_waiter() -> None:
    box = Mailbox("peer")
    threading.Timer(0.1, box.fail, args=("killed",)).start()
    with pytest.raises(PeerLostError, match="peer lost: killed"):
        box.get(Kind.PROBS, 1, 10.0)


def test_mailbox_check_raises_once_failed() -> None:
    box = Mailbox("peer")
    box.check()
    box.fail("gone")
    with pytest.raises(PeerLostError, match="peer lost: gone"):
        box.check()


def test_json_tensor_roundtrip() -> None:
    info = {"prompt": [1, 2, 3], "first": 7, "sampling": SamplingParams(seed=3).to_dict()}
    tensor = encode_json_tensor(info)
    assert tensor.dtype == torch.uint8 and tensor.ndim == 1
    assert decode_json_tensor(tensor) == info
    with pytest.raises(WorkerError, match="must be an object"):
        decode_json_tensor(encode_json_tensor([1, 2]))  # type: ignore[arg-type]
    for bad in (b"\xff\xfe", b"[" * 100_000, b'{"a":' + b"9" * 5000 + b"}", b"{"):
        with pytest.raises(WorkerError, match="malformed JSON payload"):
            decode_json_tensor(torch.frombuffer(bytearray(bad), dtype=torch.uint8))


def test_every_control_message_names_its_kind_with_type() -> None:
    kinds = {}
    for name in messages.__all__:
        cls = getattr(messages, name)
        if name.endswith("Msg"):
            annotation = str(getattr(cls.__annotations__["type"], "__forward_arg__", ""))
            assert annotation.startswith("Literal["), name
            kinds[name] = annotation[len("Literal['") : -2]
        else:  # shared parts and data-plane payloads (their kind is the header's)
            assert "type" not in cls.__annotations__, name
    assert sorted(set(kinds.values())) == sorted(
        ["init", "generate", "peer_dead", "stats", "shutdown", "hello", "ready", "tokens",
         "finish", "handoff", "error", "event", "fatal", "abort"]
    )  # fmt: skip


def test_link_emulation_validates() -> None:
    with pytest.raises(ConfigError, match="bandwidth_gbps=0"):
        LinkEmulation(0)
    with pytest.raises(ConfigError, match="latency_s=-1"):
        LinkEmulation(1.0, -1)
    assert LinkEmulation(1.0).wire_time_s(125_000_000) == pytest.approx(1.0)


def test_link_shaper_delays_by_wire_time_plus_latency_fifo() -> None:
    link = LinkEmulation(bandwidth_gbps=0.01, latency_s=0.05)  # 125 kB = 0.1 s on the wire
    shaper = LinkShaper(link)
    arrived: list[float] = []
    start = time.monotonic()
    first, _ = shaper.submit({"probs": 125_000}, lambda: arrived.append(time.monotonic()))
    second, _ = shaper.submit({"probs": 62_500}, lambda: arrived.append(time.monotonic()))
    assert first.wait(5) and second.wait(5)
    shaper.close()
    assert arrived[0] - start == pytest.approx(0.15, abs=0.05)  # 0.1 s wire + 0.05 s latency
    assert arrived[1] - start == pytest.approx(0.20, abs=0.05)  # queued behind the first
    assert shaper.wire_s["probs"] == pytest.approx(0.15)


def test_control_channel_roundtrip_and_refusals() -> None:
    a, b = socket.socketpair()
    left, right = ControlChannel(a, "right"), ControlChannel(b, "left")
    left.send({"type": "generate", "rid": 1, "prompt": [1, 2, 3], "x": 0.5})
    assert right.recv(1.0) == {"type": "generate", "rid": 1, "prompt": [1, 2, 3], "x": 0.5}
    with pytest.raises(WorkerError, match=r"timed out after 0\.1 s waiting for hello from left"):
        right.recv(0.1, what="hello")
    a.sendall(struct.pack(">I", 5) + b"[1,2]")
    with pytest.raises(WorkerError, match="not an object with a 'type'"):
        right.recv(1.0)
    assert right.closed  # a bad frame ends the connection (tests/engine/comm/test_control.py)
    c, d = socket.socketpair()
    c.sendall(struct.pack(">I", 1 << 30))
    with pytest.raises(WorkerError, match="exceeds"):
        ControlChannel(d, "left").recv(1.0)
    left.close()
    c.close()
    e, f = socket.socketpair()
    e.close()
    with pytest.raises(EOFError):
        ControlChannel(f, "left").recv(1.0)
    f.close()
