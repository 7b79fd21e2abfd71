"""The DSD proposer: vLLM's ``custom_class`` speculator that asks a remote draft server.

vLLM cannot place a draft model on another device or machine, so Disg-Spec-Decode plugs
:class:`RemoteDraftProposer` into ``speculative_config={"method": "custom_class", "model":
"greenllm.backends.vllm.proposer.RemoteDraftProposer", ...}``. At every decode step vLLM calls
``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)``; the proposer sends each
row's new context tokens to the draft server (:mod:`.draft_server`) and returns its K token ids
per row. Only token ids cross the link; vLLM verifies them as a one-hot draft, which keeps the
target distribution exact (the paper's overlapped probability transfer is the PyTorch
engine's design, :mod:`greenllm.engine`).

Serving never stalls on the draft: every call has a timeout (``GREENLLM_DRAFT_TIMEOUT_S``), and
a slow, refused or broken call makes the proposer propose nothing (plain decoding) and wait
``GREENLLM_DRAFT_RETRY_S`` before reconnecting. Configuration comes from the environment of
the vLLM process (``GREENLLM_DRAFT_ADDR`` = ``host:port``); each call is appended to the JSON
lines file ``GREENLLM_DRAFT_LOG`` (time, bytes both ways, draft busy time, outcome), which the
backend reads for link bytes and the old GPU's busy time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from greenllm.backends.vllm.protocol import (
    MAX_DRAFT_TOKENS,
    DraftCall,
    ProposeRequest,
    decode,
    encode,
)
from greenllm.errors import ConfigError

__all__ = ["ADDR_ENV", "LOG_ENV", "RETRY_ENV", "TIMEOUT_ENV", "DraftClient", "RemoteDraftProposer"]

logger = logging.getLogger(__name__)

ADDR_ENV = "GREENLLM_DRAFT_ADDR"
TIMEOUT_ENV = "GREENLLM_DRAFT_TIMEOUT_S"
RETRY_ENV = "GREENLLM_DRAFT_RETRY_S"
LOG_ENV = "GREENLLM_DRAFT_LOG"


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; ConfigError otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"draft server address {text!r}: expected 'host:port' (e.g. 10.0.0.2:7001)"
        )
    return host.strip("[]"), int(port)


class DraftClient:
    """A connection to the draft server with a per-call timeout and a fallback to no proposal.

    ``propose(contexts, k)`` takes one context (token ids) per batch row, or None for rows that
    need no proposal, and returns one list per row: K ids, or ``[]`` when the server is slow,
    down or broken. Only the tokens that changed since the last call for a row are sent.
    """

    def __init__(
        self,
        address: tuple[str, int],
        *,
        timeout_s: float = 1.0,
        retry_s: float = 1.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not timeout_s > 0 or not retry_s >= 0:
            raise ConfigError(f"timeout_s = {timeout_s}, retry_s = {retry_s}: need > 0 and >= 0")
        self.address = address
        self.timeout_s = float(timeout_s)
        self.retry_s = float(retry_s)
        self.log_path = Path(log_path) if log_path else None
        self._sock: socket.socket | None = None
        self._buf = b""
        self._sent: dict[int, list[int]] = {}
        self._down_until = 0.0
        self.stats = dict.fromkeys(
            ("calls", "ok", "fallbacks", "timeouts", "errors", "bytes_sent", "bytes_received"), 0
        )

    # ---- connection -----------------------------------------------------------------------------
    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf, self._sent = b"", {}
        return sock

    def _drop(self, why: str) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock, self._buf, self._sent = None, b"", {}
        self._down_until = time.monotonic() + self.retry_s
        logger.info("draft server %s:%d unavailable (%s); proposing nothing for %.1f s",
                    *self.address, why, self.retry_s)  # fmt: skip

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def _readline(self, deadline: float) -> bytes:
        assert self._sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("draft server reply timed out")
            self._sock.settimeout(left)
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("draft server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _exchange(
        self, rows: list[list[Any]], todo: list[tuple[int, list[int]]], k: int, deadline: float
    ) -> tuple[bytes, int]:
        """Send one propose request (connecting first if needed); its reply line, bytes sent."""
        if self._sock is None:
            self._sock = self._connect()
            rows = [[i, 0, ctx] for i, ctx in todo]  # a new connection starts empty
        request: ProposeRequest = {"type": "propose", "k": int(k), "rows": rows}
        data = encode(request)
        self._sock.settimeout(max(1e-3, deadline - time.monotonic()))
        self._sock.sendall(data)
        return self._readline(deadline), len(data)

    # ---- proposals ------------------------------------------------------------------------------
    def propose(self, contexts: Sequence[Sequence[int] | None], k: int) -> list[list[int]]:
        """K draft ids per row (``[]`` for rows given None, and for every row on a fallback)."""
        empty: list[list[int]] = [[] for _ in contexts]
        todo = [(i, list(map(int, c))) for i, c in enumerate(contexts) if c is not None and len(c)]
        if not todo or k < 1:
            return empty
        t0 = time.monotonic()
        self.stats["calls"] += 1
        if self._sock is None and t0 < self._down_until:
            return self._fallback(empty, "down", t0, 0, 0, len(todo))
        rows, new_sent = [], {}
        for i, ctx in todo:
            prev = self._sent.get(i, [])
            keep = 0
            n = min(len(prev), len(ctx))
            while keep < n and prev[keep] == ctx[keep]:
                keep += 1
            rows.append([i, keep, ctx[keep:]])
            new_sent[i] = ctx
        sent = received = 0
        try:
            deadline = t0 + self.timeout_s
            try:
                reused = self._sock is not None
                line, sent = self._exchange(rows, todo, k, deadline)
            except ConnectionError:
                # the server closes a connection left idle too long (draft_server
                # IDLE_TIMEOUT_S): a reused one that fails before any reply gets one retry
                if not reused or time.monotonic() >= deadline:
                    raise
                self.close()
                line, more = self._exchange(rows, todo, k, deadline)
                sent += more
            received = len(line) + 1
            reply = decode(line)
            if reply["type"] != "proposal":
                raise ValueError(f"draft server answered {reply!r}")
            ids = reply["ids"]
            if len(ids) != len(todo):
                raise ValueError(f"{len(ids)} answers for {len(todo)} rows")
        except TimeoutError as err:
            self.stats["timeouts"] += 1
            self._drop(str(err) or "timeout")
            return self._fallback(empty, "timeout", t0, sent, received, len(todo))
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.stats["errors"] += 1
            self._drop(f"{type(err).__name__}: {err}")
            return self._fallback(empty, "error", t0, sent, received, len(todo))
        self._sent.update(new_sent)
        out = empty
        for (i, _), draft in zip(todo, ids, strict=True):
            out[i] = [int(t) for t in draft][:k]
        self.stats["ok"] += 1
        self._account(sent, received)
        self._log(t0, "ok", sent, received, len(todo), float(reply.get("busy_s", 0.0)),
                  sum(len(x) for x in out))  # fmt: skip
        return out

    def _fallback(self, empty: list[list[int]], why: str, t0: float, sent: int, received: int,
                  rows: int) -> list[list[int]]:  # fmt: skip
        self.stats["fallbacks"] += 1
        self._account(sent, received)
        self._log(t0, why, sent, received, rows, 0.0, 0)
        return empty

    def _account(self, sent: int, received: int) -> None:
        self.stats["bytes_sent"] += sent
        self.stats["bytes_received"] += received

    def _log(self, t0: float, outcome: str, sent: int, received: int, rows: int, busy_s: float,
             tokens: int) -> None:  # fmt: skip
        if self.log_path is None:
            return
        rec: DraftCall = {"type": "draft_call", "t0": t0, "t": time.monotonic(),
                          "outcome": outcome, "sent": sent, "received": received, "rows": rows,
                          "busy_s": busy_s, "tokens": tokens}  # fmt: skip
        try:
            with self.log_path.open("ab") as f:
                f.write(encode(rec))
        except OSError as err:  # accounting must never break serving
            logger.debug("cannot append to %s: %s", self.log_path, err)


class RemoteDraftProposer:
    """vLLM ``custom_class`` proposer backed by a :class:`DraftClient` (see the module doc)."""

    def __init__(self, vllm_config: Any) -> None:
        spec = vllm_config.speculative_config
        self.k = int(spec.num_speculative_tokens)
        if not 1 <= self.k <= MAX_DRAFT_TOKENS:  # the draft server refuses more by default
            raise ConfigError(
                f"num_speculative_tokens = {self.k}: the remote draft proposes 1 to "
                f"{MAX_DRAFT_TOKENS} tokens (protocol.MAX_DRAFT_TOKENS, draft server --max-k)"
            )
        self.max_model_len = int(vllm_config.model_config.max_model_len)
        addr = os.environ.get(ADDR_ENV)
        if not addr:
            raise ConfigError(
                f"{ADDR_ENV} is not set: the DSD proposer needs the draft server's 'host:port'"
            )
        self.client = DraftClient(
            parse_address(addr),
            timeout_s=float(os.environ.get(TIMEOUT_ENV, "1.0")),
            retry_s=float(os.environ.get(RETRY_ENV, "1.0")),
            log_path=os.environ.get(LOG_ENV) or None,
        )

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to load here: the draft lives in the draft server (vLLM calls this on CPU)."""

    def propose(
        self,
        sampled_token_ids: Sequence[Sequence[int]],
        num_tokens_no_spec: Any,
        token_ids_cpu: Any,
        slot_mappings: Any = None,
    ) -> list[list[int]]:
        """One list of draft ids per batch row (``[]``: no speculation for that row)."""
        contexts: list[list[int] | None] = []
        for i, sampled in enumerate(sampled_token_ids):
            n = int(num_tokens_no_spec[i])
            if not len(sampled) or n + self.k >= self.max_model_len:
                contexts.append(None)
            else:
                contexts.append([int(t) for t in token_ids_cpu[i, :n]])
        return self.client.propose(contexts, self.k)
