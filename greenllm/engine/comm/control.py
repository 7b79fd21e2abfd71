"""Control messages between the driver (the user's :class:`~greenllm.engine.driver.engine.Engine`)
and its workers: plain JSON objects, length-prefixed, over a TCP socket. Never pickle.

Frame: 4-byte big-endian length, then that many bytes of UTF-8 JSON encoding one object with a
``"type"`` string. Frames larger than :data:`MAX_FRAME_BYTES` are refused, so a confused or
hostile peer cannot make the reader allocate without bound; JSON nested deeper than
:data:`MAX_JSON_DEPTH` or with an integer longer than :data:`MAX_JSON_INT_DIGITS` digits is
refused too. A malformed frame raises :class:`~greenllm.errors.WorkerError` and closes the
channel: the stream cannot be trusted after it.

The message kinds and their fields are in :mod:`greenllm.engine.comm.messages`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import struct
import threading
from collections.abc import Mapping
from typing import Any

from greenllm.errors import WorkerError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT_DIGITS",
    "ControlChannel",
    "decode_json",
    "encode_json",
]

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 << 20
#: Deepest nesting of arrays/objects a control message may have (real ones nest 3 deep).
MAX_JSON_DEPTH = 32
#: Longest integer literal (digits) a control message may hold (token ids, counts, ns times).
MAX_JSON_INT_DIGITS = 40
_LEN = struct.Struct(">I")


def encode_json(obj: Mapping[str, Any]) -> bytes:
    """``obj`` as compact UTF-8 JSON (finite floats only)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def _too_deep(obj: object) -> bool:
    """True if ``obj`` nests lists/dicts deeper than :data:`MAX_JSON_DEPTH` (iterative walk)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return True
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits (at most {MAX_JSON_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is not a finite number")
    return value


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def decode_json(data: bytes, source: str = "peer") -> dict[str, Any]:
    """One JSON object with a string ``type`` from ``data``; WorkerError if it is anything else
    (not UTF-8, not JSON, NaN/Infinity or a float that overflows, nested deeper than
    :data:`MAX_JSON_DEPTH`, an integer longer than :data:`MAX_JSON_INT_DIGITS` digits, larger
    than :data:`MAX_FRAME_BYTES`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WorkerError(f"control message from {source} is {type(data).__name__}, not bytes")
    if len(data) > MAX_FRAME_BYTES:
        raise WorkerError(
            f"control message of {len(data)} bytes from {source} exceeds {MAX_FRAME_BYTES}"
        )
    try:
        obj = json.loads(
            bytes(data).decode("utf-8"),
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_no_constant,
        )
        if _too_deep(obj):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError, JSONDecodeError included
        raise WorkerError(f"malformed control message from {source}: {str(err)[:200]}") from err
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise WorkerError(
            f"control message from {source} is not an object with a 'type': {obj!r:.200}"
        )
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
        """Next message. EOFError when the peer closed; WorkerError on timeout or bad data.

        A bad frame (oversize, malformed JSON, not an object with a ``type``) also closes the
        channel, since the stream cannot be resynchronised after it."""
        if self.closed:
            raise WorkerError(f"the control channel to {self.peer} is closed")
        try:
            self.sock.settimeout(timeout_s)
        except OSError as err:
            raise WorkerError(f"control channel to {self.peer} is unusable: {err}") from err
        (n,) = _LEN.unpack(self._read_exact(_LEN.size, what))
        try:
            if n > MAX_FRAME_BYTES:
                raise WorkerError(
                    f"control frame of {n} bytes from {self.peer} exceeds {MAX_FRAME_BYTES}"
                )
            return decode_json(self._read_exact(n, what), self.peer)
        except WorkerError:
            self.close()
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
