"""Streaming client for OpenAI-compatible servers (e.g. ``vllm serve``), stdlib only.

One request is one ``POST {base_url}/v1/completions`` (or ``/v1/chat/completions``) with
``"stream": true``; the reply is Server-Sent Events, ``data: {json}`` lines ending with
``data: [DONE]``. Every event that carries tokens (:func:`is_token_chunk`) is timestamped with
:func:`time.perf_counter` when its first ``data:`` line is read. Tokens are counted from
``usage.completion_tokens`` when the server sends it (``stream_options.include_usage``), else
as the number of token chunks.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from greenllm.errors import ConfigError
from greenllm.profiler.loadgen.sse import SSEDecoder, is_token_chunk

__all__ = ["Aborter", "OpenAIEndpoint", "StreamRecord", "stream_request"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIEndpoint:
    """An OpenAI-compatible server and how to load it (every field but two has a default)."""

    base_url: str
    """``http://host:port`` (a trailing ``/v1`` is accepted and dropped)."""
    model: str
    """Model name the server serves (``--served-model-name`` for vLLM)."""
    api: Literal["completions", "chat"] = "completions"
    """``/v1/completions`` (prompt text) or ``/v1/chat/completions`` (one user message)."""
    api_key: str | None = field(default=None, repr=False)
    """Sent as ``Authorization: Bearer ...`` when given."""
    ignore_eos: bool = True
    """Send vLLM's ``ignore_eos`` so every request generates exactly ``max_tokens`` tokens."""
    include_usage: bool = True
    """Ask for ``stream_options.include_usage`` (exact token counts from the server)."""
    temperature: float = 0.0
    timeout_s: float = 120.0
    """Per request, from send to the end of the stream; a late request is a failure."""
    max_in_flight: int = 1024
    """Threads streaming at once; more concurrent requests wait (their send lag is reported)."""
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    """Merged into every request body (e.g. ``{"top_p": 1.0}``)."""
    name: str = "openai"
    """Backend label in the profile store."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url if isinstance(self.base_url, str) else "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"base_url = {self.base_url!r}: must be http://host[:port] or https://host[:port]"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as err:
            raise ConfigError(f"base_url = {self.base_url!r}: bad port ({err})") from err
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model = {self.model!r}: must be the served model's name")
        if self.api not in ("completions", "chat"):
            raise ConfigError(f"api = {self.api!r}: must be 'completions' or 'chat'")
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < math.inf:
            raise ConfigError(f"timeout_s = {t!r}: must be a number of seconds > 0")
        m = self.max_in_flight
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ConfigError(f"max_in_flight = {m!r}: must be an integer >= 1")
        try:
            json.dumps(dict(self.extra_body), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"extra_body = {self.extra_body!r}: must be a JSON-serialisable dict ({err})"
            ) from err

    @property
    def path(self) -> str:
        """Request path, e.g. ``/v1/completions``."""
        prefix = urlsplit(self.base_url).path.rstrip("/").removesuffix("/v1")
        return f"{prefix}/v1/{'chat/completions' if self.api == 'chat' else 'completions'}"

    def body(self, prompt: str, max_tokens: int) -> dict[str, Any]:
        """The JSON body of one streaming request."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": int(max_tokens),
                                "stream": True, "temperature": self.temperature}  # fmt: skip
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        return {**body, **self.extra_body}

    def connect(self, timeout_s: float) -> http.client.HTTPConnection:
        """A new (unconnected) connection to the server."""
        parts = urlsplit(self.base_url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.hostname or "", parts.port, timeout=timeout_s)


@dataclass(frozen=True)
class StreamRecord:
    """One streamed request; times are seconds after the run's start (``perf_counter`` based)."""

    sent_s: float
    token_times_s: tuple[float, ...]
    output_tokens: int | None  # usage.completion_tokens, or chunks; None if unknown
    prompt_tokens: int | None  # usage.prompt_tokens when the server sent it
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Aborter:
    """Sockets of the requests in flight, so an interrupted run can cut them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.aborted = False

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)
        if self.aborted:  # aborted while this one was connecting
            self._cut(sock)

    def remove(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def abort_all(self) -> int:
        """Shut down every open connection; their requests end as failures. Returns how many."""
        with self._lock:
            self.aborted = True
            socks = list(self._socks)
        for sock in socks:
            self._cut(sock)
        return len(socks)

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def stream_request(
    endpoint: OpenAIEndpoint,
    prompt: str,
    max_tokens: int,
    *,
    t0: float,
    aborter: Aborter | None = None,
) -> StreamRecord:
    """Send one streaming request now and read it to the end; never raises for server faults.

    ``sent_s`` is taken just before connecting (the request body is encoded before).
    """
    payload = json.dumps(endpoint.body(prompt, max_tokens)).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    times: list[float] = []
    usage: dict[str, Any] = {}
    done = finished = False
    conn = endpoint.connect(endpoint.timeout_s)
    sock: socket.socket | None = None
    error: str | None = None
    sent = time.perf_counter()
    deadline = sent + endpoint.timeout_s
    try:
        if aborter is not None and aborter.aborted:
            raise _StreamError("not sent")
        conn.connect()
        sock = conn.sock  # kept: http.client drops conn.sock for "Connection: close" replies
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if aborter is not None:
            aborter.add(sock)
        conn.request("POST", endpoint.path, body=payload, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            detail = resp.read(300).decode("utf-8", "replace").strip()
            raise _StreamError(f"HTTP {resp.status} {resp.reason}: {detail}")
        for event in _events(resp, sock, deadline, endpoint.timeout_s):
            done, fin = _handle_event(event, endpoint.api, times, usage, t0)
            finished = finished or fin
            if done:
                break
        if not done and not finished:
            raise _StreamError("stream ended before data: [DONE]")
        if not times:
            raise _StreamError("stream carried no tokens")
    except _StreamError as err:
        error = str(err)
    except TimeoutError:
        error = f"timeout after {endpoint.timeout_s:g} s"
    except (OSError, http.client.HTTPException, ValueError) as err:  # ValueError: bad chunk size
        error = f"{type(err).__name__}: {err}"
    finally:
        conn.close()
        if aborter is not None and sock is not None:
            aborter.remove(sock)
    if error is not None and aborter is not None and aborter.aborted:
        error = f"aborted (run interrupted): {error}"
    n_out, n_in = usage.get("completion_tokens"), usage.get("prompt_tokens")
    return StreamRecord(
        sent_s=sent - t0,
        token_times_s=tuple(times),
        output_tokens=n_out if isinstance(n_out, int) and n_out > 0 else (len(times) or None),
        prompt_tokens=n_in if isinstance(n_in, int) and n_in > 0 else None,
        error=error,
    )


def _events(
    resp: http.client.HTTPResponse, sock: socket.socket, deadline: float, timeout_s: float
) -> Iterator[tuple[str, float]]:
    """SSE events of ``resp`` with arrival times, read a network chunk at a time (``read1``:
    one call per HTTP chunk, not per line). Raises :class:`_StreamError` past ``deadline``."""
    decoder = SSEDecoder()
    pending = b""
    while True:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise _StreamError(f"timeout after {timeout_s:g} s")
        sock.settimeout(remaining)
        data = resp.read1(65536)
        now = time.perf_counter()
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            event = decoder.feed(line.decode("utf-8", "replace"), now)
            if event is not None:
                yield event
    if pending:
        decoder.feed(pending.decode("utf-8", "replace"), time.perf_counter())
    event = decoder.flush()
    if event is not None:
        yield event


class _StreamError(Exception):
    """A request that failed (internal; becomes ``StreamRecord.error``)."""


def _handle_event(
    event: tuple[str, float], api: str, times: list[float], usage: dict[str, Any], t0: float
) -> tuple[bool, bool]:
    """Record one SSE event. Returns (``[DONE]`` seen, a finish_reason seen)."""
    data, t = event
    if data.strip() == "[DONE]":
        return True, False
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as err:
        raise _StreamError(f"bad JSON in stream: {data[:100]!r}") from err
    if not isinstance(obj, dict):
        raise _StreamError(f"unexpected event: {data[:100]!r}")
    if obj.get("error") is not None or obj.get("object") == "error":
        err = obj.get("error", obj)
        msg = err.get("message", err) if isinstance(err, dict) else err
        raise _StreamError(f"server error in stream: {msg}")
    if isinstance(obj.get("usage"), dict):
        usage.update(obj["usage"])
    finished = False
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        if is_token_chunk(choices[0], api):
            times.append(t - t0)
        finished = choices[0].get("finish_reason") is not None
    return False, finished
