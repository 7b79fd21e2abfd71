"""Control messages between the driver (the user's :class:`~greenllm.engine.driver.engine.Engine`)
and its workers: plain JSON objects, length-prefixed, over a TCP socket. Never pickle.

Frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON encoding one object with a
``"type"`` string. Frames larger than :data:`MAX_FRAME_BYTES` are refused, so a confused or
hostile peer cannot make the reader allocate without bound.

The message kinds and their fields are in :mod:`greenllm.engine.comm.messages`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
from collections.abc import Mapping
from typing import Any

from greenllm.errors import WorkerError

__all__ = ["MAX_FRAME_BYTES", "ControlChannel", "decode_json", "encode_json"]

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 << 20
_LEN = struct.Struct(">I")


def encode_json(obj: Mapping[str, Any]) -> bytes:
    """``obj`` as compact UTF-8 JSON (finite floats only)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def decode_json(data: bytes, source: str = "peer") -> dict[str, Any]:
    """One JSON object with a string ``type`` from ``data``; WorkerError if it is anything else."""
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WorkerError(f"malformed control message from {source}: {err}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise WorkerError(f"control message from {source} is not an object with a 'type': {obj!r}")
    return obj


class ControlChannel:
    """One end of a control connection: thread-safe ``send``; ``recv`` from one reader thread."""

    def __init__(self, sock: socket.socket, peer: str = "peer") -> None:
        self.sock = sock
        self.peer = peer
        self._send_lock = threading.Lock()
        self.closed = False
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, msg: Mapping[str, Any]) -> None:
        """Send one message (a dict with a ``"type"``); WorkerError if the connection is lost."""
        data = encode_json(msg)
        with self._send_lock:
            try:
                self.sock.sendall(_LEN.pack(len(data)) + data)
            except OSError as err:
                raise WorkerError(
                    f"cannot send {msg.get('type')!r} to {self.peer}: connection lost ({err})"
                ) from err

    def _read_exact(self, n: int, what: str) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            try:
                chunk = self.sock.recv(min(n - len(chunks), 1 << 20))
            except TimeoutError as err:
                raise WorkerError(
                    f"timed out after {self.sock.gettimeout()} s waiting for {what} from "
                    f"{self.peer}; raise timeout_s if the peer is just slow"
                ) from err
            except OSError as err:
                raise WorkerError(
                    f"connection to {self.peer} lost while reading {what}: {err}"
                ) from err
            if not chunk:
                raise EOFError(f"{self.peer} closed the control connection")
            chunks += chunk
        return bytes(chunks)

    def recv(
        self, timeout_s: float | None = None, what: str = "a control message"
    ) -> dict[str, Any]:
        """Next message. EOFError when the peer closed; WorkerError on timeout or bad data."""
        self.sock.settimeout(timeout_s)
        (n,) = _LEN.unpack(self._read_exact(_LEN.size, what))
        if n > MAX_FRAME_BYTES:
            raise WorkerError(
                f"control frame of {n} bytes from {self.peer} exceeds {MAX_FRAME_BYTES}"
            )
        return decode_json(self._read_exact(n, what), self.peer)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
