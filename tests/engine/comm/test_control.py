"""The control channel refuses every malformed frame with a WorkerError and ends the connection;
the driver's reader thread turns that into failed requests and a fatal reason (never a reader
thread that dies silently). Real TCP sockets on 127.0.0.1, no torch needed."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenllm.engine.comm.control import (
    MAX_FRAME_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_INT_DIGITS,
    ControlChannel,
    decode_json,
    encode_json,
)
from greenllm.engine.comm.placement import WorkerHandle
from greenllm.engine.driver.outputs import Pending
from greenllm.engine.driver.supervisor import WorkerSupervisor
from greenllm.errors import WorkerError


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): a connected TCP pair on 127.0.0.1."""
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    server.close()
    yield sender, receiver
    sender.close()
    receiver.close()


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


BAD_PAYLOADS = {
    "deep nesting": b'{"type":"x","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nesting just past the limit": b'{"type":"x","a":'
    + b"[" * MAX_JSON_DEPTH
    + b"]" * MAX_JSON_DEPTH
    + b"}",
    "5000-digit integer": b'{"type":"x","n":' + b"7" * 5000 + b"}",
    "invalid utf-8": b'{"type":"\xff\xfe"}',
    "not an object": b"[1,2,3]",
    "no type": b'{"rid":1}',
    "type not a string": b'{"type":5}',
    "NaN": b'{"type":"x","v":NaN}',
    "Infinity": b'{"type":"x","v":-Infinity}',
    "overflowing float": b'{"type":"x","v":1e999}',
    "truncated json": b'{"type":"x"',
    "empty": b"",
    "a bare string": b'"type"',
}


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_decode_json_refuses_with_worker_error(payload: bytes) -> None:
    with pytest.raises(WorkerError, match="control message from w"):
        decode_json(payload, "w")


def test_decode_json_accepts_the_limits() -> None:
    nested = '{"type":"x","a":' + "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1) + "}"
    assert decode_json(nested.encode())["type"] == "x"
    big = int("9" * MAX_JSON_INT_DIGITS)
    assert decode_json(encode_json({"type": "x", "n": big, "m": -big}))["n"] == big


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_json_never_raises_anything_but_worker_error(data: bytes) -> None:
    try:
        obj = decode_json(data)
    except WorkerError:
        return
    assert isinstance(obj, dict) and isinstance(obj["type"], str)


@pytest.mark.parametrize("payload", BAD_PAYLOADS.values(), ids=BAD_PAYLOADS.keys())
def test_a_bad_frame_ends_the_connection(
    tcp_pair: tuple[socket.socket, socket.socket], payload: bytes
) -> None:
    sender, receiver = tcp_pair
    channel = ControlChannel(receiver, "worker 0")
    sender.sendall(frame(b'{"type":"ok"}') + frame(payload) + frame(b'{"type":"after"}'))
    assert channel.recv(5.0) == {"type": "ok"}
    with pytest.raises(WorkerError, match="worker 0"):
        channel.recv(5.0)
    assert channel.closed
    with pytest.raises(WorkerError):  # nothing more is read from a closed channel
        channel.recv(1.0)


def test_an_oversize_frame_ends_the_connection_before_reading_it(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = tcp_pair
    channel = ControlChannel(receiver, "worker 0")
    sender.sendall(struct.pack(">I", MAX_FRAME_BYTES + 1))
    with pytest.raises(WorkerError, match=f"exceeds {MAX_FRAME_BYTES}"):
        channel.recv(5.0)
    assert channel.closed


def _supervisor_reading(receiver: socket.socket) -> tuple[
    WorkerSupervisor, Pending, asyncio.AbstractEventLoop, threading.Thread
]:  # fmt: skip
    """A standalone supervisor whose worker 0 talks over ``receiver``, one request in flight,
    and its reader thread running."""
    sup = WorkerSupervisor("standalone")
    sup._handles = [WorkerHandle(0, "new", "standalone", pid=4242)]
    sup._channels[0] = ControlChannel(receiver, "standalone worker (pid 4242)")
    loop = asyncio.new_event_loop()
    pending = Pending(1, [1, 2], {}, 0.0, loop, loop.create_future())  # type: ignore[typeddict-item]
    sup._pending[1] = pending
    reader = threading.Thread(target=sup._read, args=(0,), daemon=True)
    reader.start()
    return sup, pending, loop, reader


@pytest.mark.parametrize(
    "payload",
    [BAD_PAYLOADS["deep nesting"], BAD_PAYLOADS["5000-digit integer"],
     BAD_PAYLOADS["invalid utf-8"], BAD_PAYLOADS["not an object"]],
    ids=["deep nesting", "5000-digit integer", "invalid utf-8", "not an object"],
)  # fmt: skip
def test_the_driver_reader_fails_requests_on_a_bad_frame(
    tcp_pair: tuple[socket.socket, socket.socket], payload: bytes
) -> None:
    sender, receiver = tcp_pair
    sup, pending, loop, reader = _supervisor_reading(receiver)
    try:
        sender.sendall(frame(b'{"type":"tokens","rid":1,"tokens":[5],"times":[0.1]}'))
        sender.sendall(frame(payload))
        reader.join(10)
        assert not reader.is_alive()
        assert pending.tokens == [5]
        with pytest.raises(WorkerError, match="request 1 lost"):
            loop.run_until_complete(asyncio.wait_for(pending.future, 5))
        assert 0 in sup._fatal and "control message" in sup._fatal[0]
        assert not sup._handles[0].alive
        assert any("malformed" in e or "not an object" in e for e in sup.events)
    finally:
        loop.close()


def test_the_driver_reader_reports_an_unexpected_error(
    tcp_pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, receiver = tcp_pair

    def broken(self: ControlChannel, *args: object, **kwargs: object) -> dict[str, object]:
        raise MemoryError("simulated")

    monkeypatch.setattr(ControlChannel, "recv", broken)
    sup, pending, loop, reader = _supervisor_reading(receiver)
    try:
        reader.join(10)
        assert not reader.is_alive()
        with pytest.raises(WorkerError, match="MemoryError: simulated"):
            loop.run_until_complete(asyncio.wait_for(pending.future, 5))
        assert "MemoryError" in sup._fatal[0]
    finally:
        loop.close()
