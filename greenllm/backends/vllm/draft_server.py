"""The remote draft server of Disg-Spec-Decode: the draft model on the old GPU, over TCP.

``python -m greenllm.backends.vllm.draft_server --model DIR [--host 127.0.0.1] [--port 0]``
loads the draft (transformers ``AutoModelForCausalLM``, one KV cache per sequence) and prints
a ``ready`` message (``host``, ``port``, ``device``, ``load_s``, ``pid``) on stdout. Protocol
(:mod:`.protocol`): one JSON object with a ``"type"`` per line each way, per TCP connection:

* ``{"type": "propose", "k": K, "rows": [[row, keep, [appended ids...]], ...]}`` ->
  ``{"type": "proposal", "ids": [[K ids], ...], "busy_s": compute seconds}``. Row ``row``'s
  context is the first ``keep`` tokens of the context last sent for that row plus the appended
  ids (so only new tokens cross the link); the answer is the draft's K greedy tokens after it.
* ``{"type": "ping"}`` -> ``{"type": "pong", "pid"}``; ``{"type": "stats"}`` -> counters.
* A request that fails gets ``{"type": "error", "message"}``; the connection stays open.
* A line that is not a protocol message (not UTF-8 JSON, not an object with a ``"type"``) or
  is longer than :data:`MAX_LINE_BYTES` gets ``{"type": "error", "message": "BadRequest: ..."}``
  and the connection is closed (the server keeps serving the others). A connection that sends
  nothing for ``--idle-timeout-s`` (:data:`IDLE_TIMEOUT_S`) seconds is closed.
* Limits (untrusted clients): a ``propose`` asking for more than ``--max-k``
  (:data:`~.protocol.MAX_DRAFT_TOKENS`) draft tokens or carrying more than ``--max-rows``
  (:data:`~.protocol.MAX_PROPOSE_ROWS`) rows, or one that would make its connection hold more
  than ``--max-sequences`` (:data:`MAX_SEQUENCES_PER_CONNECTION`) sequences, gets
  ``{"type": "error", "message": "BadRequest: ..."}`` and changes nothing; the connection stays
  open. A connection beyond ``--max-connections`` (:data:`MAX_CONNECTIONS`) open at once gets
  one ``{"type": "error", "message": "Busy: ..."}`` line and is closed.

Each connection has its own sequences; a dropped connection drops them. The KV cache of a row
is cropped to the longest prefix it shares with the new context, so accepted tokens are never
recomputed. The client is :class:`~greenllm.backends.vllm.proposer.DraftClient`.

``--ahead`` (draft-ahead, :mod:`greenllm.speculation.ahead`): after answering a ``propose``,
while its connection sends nothing, the server drafts each row's next proposal for the outcome
"all K accepted, bonus = the draft's own next token", one forward at a time. A ``propose``
whose context is exactly that (a hit) is answered from what was drafted (drafting only what
is missing); any other context is a miss and is drafted as without ``--ahead``. Greedy drafts
either way, so the ids are the same; ``stats`` counts ``ahead_hits``, ``ahead_misses`` and the
seconds spent drafting ahead (``ahead_busy_s``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

from greenllm.backends.vllm.protocol import (
    MAX_DRAFT_TOKENS,
    MAX_PROPOSE_ROWS,
    DraftReadyEvent,
    ErrorReply,
    PongReply,
    ProposalReply,
    ProposeRequest,
    StatsReply,
    decode,
    encode,
)
from greenllm.errors import ConfigError, missing_extra

__all__ = [
    "BAD_REQUEST",
    "BUSY",
    "IDLE_TIMEOUT_S",
    "MAX_CONNECTIONS",
    "MAX_LINE_BYTES",
    "MAX_SEQUENCES_PER_CONNECTION",
    "DraftModel",
    "main",
    "parse_cpus",
    "serve",
]

logger = logging.getLogger(__name__)

#: Longest request line (bytes, newline included) the server reads; a longer one is refused and
#: its connection closed instead of being buffered. A real request is a few KiB: K and, per
#: row, the tokens appended since the last call.
MAX_LINE_BYTES = 1 << 20
#: Seconds a connection may stay silent before the server closes it (the proposer reconnects).
IDLE_TIMEOUT_S = 600.0
#: Most sequences (rows, each with its own KV cache) one connection may hold; a ``propose``
#: naming more distinct rows is refused. A proposer's rows are its batch slots.
MAX_SEQUENCES_PER_CONNECTION = 1024
#: Most connections served at once (one per target engine is the normal case); one more gets a
#: :data:`BUSY` error line and is closed.
MAX_CONNECTIONS = 16
#: Prefix of the error message for a line that is not a protocol request or exceeds a limit.
BAD_REQUEST = "BadRequest"
#: Prefix of the error line sent to a connection refused beyond :data:`MAX_CONNECTIONS`.
BUSY = "Busy"


@dataclass(frozen=True)
class Limits:
    """What one client may ask for (see the module doc); defaults are the module constants."""

    max_line_bytes: int = MAX_LINE_BYTES
    idle_timeout_s: float | None = IDLE_TIMEOUT_S
    max_k: int = MAX_DRAFT_TOKENS
    max_rows: int = MAX_PROPOSE_ROWS
    max_sequences: int = MAX_SEQUENCES_PER_CONNECTION
    max_connections: int = MAX_CONNECTIONS

    def check(self) -> None:
        """ConfigError for a limit that is not positive."""
        for name in ("max_line_bytes", "max_k", "max_rows", "max_sequences", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: must be >= 1")
        t = self.idle_timeout_s
        if t is not None and not t > 0:
            raise ConfigError(f"idle_timeout_s = {t!r}: must be > 0 seconds (or None)")


class _BadRequestError(ConfigError):
    """A line that is not a protocol request: answered, then the connection is closed."""


def parse_cpus(text: str) -> set[int]:
    """``"0,2-3"`` -> ``{0, 2, 3}`` (Linux CPU list syntax)."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(f"CPU list {text!r}: expected numbers and ranges like '0,2-3'")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Sequence:
    __slots__ = ("ahead", "ahead_tokens", "cache", "cached", "proposal", "sent")

    def __init__(self) -> None:
        self.sent: list[int] = []  # the context as the client last sent it
        self.cached: list[int] = []  # tokens whose KV is in ``cache``
        self.cache: Any = None
        self.proposal: list[int] = []  # the last answer (cache: sent + proposal[:-1])
        # draft-ahead: the context the next propose is expected to send (None: the bonus is not
        # guessed yet) and the tokens drafted after it
        self.ahead: list[int] | None = None
        self.ahead_tokens: list[int] = []


class DraftModel:
    """A causal LM proposing greedy tokens for many sequences, each with its own KV cache;
    ``ahead``: draft each sequence's next proposal ahead (:meth:`ahead_step`)."""

    def __init__(
        self, model_dir: str, device: str = "cpu", dtype: str = "float32", ahead: bool = False
    ) -> None:
        try:
            import torch
            import transformers
        except ImportError as err:
            raise missing_extra("torch", "torch") from err
        self.torch = torch
        self.transformers = transformers
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ConfigError(f"dtype = {dtype!r}: not a torch dtype (use float32 or float16)")
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
        self.model = model.to(device).eval()
        self.device = device
        self.lock = threading.Lock()
        self.ahead = ahead
        self.ahead_hits = self.ahead_misses = 0
        self.ahead_busy_s = 0.0

    def warm_up(self, k: int = 4) -> None:
        """One proposal on a dummy context: the first forward of a model is slow."""
        self.propose(_Sequence(), [1] * 16, k)

    def _forward(self, seq: _Sequence, ids: list[int]) -> int:
        torch = self.torch
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.model(input_ids=x, past_key_values=seq.cache, use_cache=True)
        seq.cache = out.past_key_values
        seq.cached.extend(ids)
        return int(out.logits[0, -1].argmax())

    def _ahead_forward(self, seq: _Sequence) -> None:
        """One forward after :attr:`_Sequence.ahead`: the next token drafted ahead."""
        assert seq.ahead is not None
        last = seq.ahead_tokens[-1] if seq.ahead_tokens else seq.ahead[-1]
        seq.ahead_tokens.append(self._forward(seq, [last]))

    def ahead_step(self, seq: _Sequence) -> bool:
        """One forward drafting ahead for ``seq``: first its last proposal's last token (whose
        logits guess the bonus token), then the next proposal's tokens, as many as the last
        proposal had; False when there is nothing left to draft."""
        if not (self.ahead and seq.proposal and seq.cache is not None):
            return False
        if seq.ahead is not None and len(seq.ahead_tokens) >= len(seq.proposal):
            return False
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            if seq.ahead is None:
                guess = self._forward(seq, seq.proposal[-1:])
                seq.ahead = [*seq.sent, *seq.proposal, guess]
            else:
                self._ahead_forward(seq)
        self.ahead_busy_s += time.perf_counter() - t0
        return True

    def _take_ahead(self, seq: _Sequence, context: list[int], k: int) -> list[int] | None:
        """The proposal drafted ahead for ``context`` (drafting what is missing), or None when
        ``context`` is not the outcome it was drafted for."""
        if seq.ahead is None or context != seq.ahead:
            return None
        while len(seq.ahead_tokens) < k:
            self._ahead_forward(seq)
        extra = len(seq.cached) - (len(context) + k - 1)
        if extra > 0:  # drafted past this proposal: back to context + tokens[:-1]
            seq.cache.crop(-extra)
            del seq.cached[-extra:]
        return seq.ahead_tokens[:k]

    def propose(self, seq: _Sequence, context: list[int], k: int) -> list[int]:
        """K greedy draft tokens after ``context``, reusing ``seq``'s cache where it matches
        (and, with ``ahead``, what was drafted ahead for exactly this context)."""
        if not context:
            return []
        with self.torch.inference_mode():
            tokens = self._take_ahead(seq, context, k)
        if self.ahead and seq.proposal:
            if tokens is None:
                self.ahead_misses += 1
            else:
                self.ahead_hits += 1
        if tokens is None:
            tokens = self._propose(seq, context, k)
        seq.proposal, seq.ahead, seq.ahead_tokens = tokens, None, []
        return tokens

    def _propose(self, seq: _Sequence, context: list[int], k: int) -> list[int]:
        keep = min(_common_prefix(seq.cached, context), len(context) - 1)
        if seq.cache is None or keep == 0:
            seq.cache, seq.cached = self.transformers.DynamicCache(), []
            keep = 0
        elif keep < len(seq.cached):
            seq.cache.crop(keep - len(seq.cached))  # a negative count: tokens to remove
            del seq.cached[keep:]
        with self.torch.inference_mode():
            tokens = [self._forward(seq, context[keep:])]
            for _ in range(k - 1):
                tokens.append(self._forward(seq, [tokens[-1]]))
        return tokens


class _Connection:
    def __init__(
        self, model: DraftModel, conn: socket.socket, totals: dict[str, float], limits: Limits
    ) -> None:
        self.model = model
        self.conn = conn
        self.rows: dict[int, _Sequence] = {}
        self.totals = totals
        self.limits = limits

    def _check_propose(self, k: int, rows: Any) -> None:
        """A ``propose`` beyond the limits raises :class:`_BadRequestError` (an error reply)."""
        lim = self.limits
        why = ""
        if k > lim.max_k:
            why = f"k={k} exceeds max_k={lim.max_k}"
        elif k < 1:
            why = f"k={k} is below 1"
        elif not isinstance(rows, list):
            why = "rows must be a list of [row, keep, ids]"
        elif len(rows) > lim.max_rows:
            why = f"rows={len(rows)} exceeds max_rows={lim.max_rows}"
        elif (held := len(self.rows.keys() | {int(r[0]) for r in rows})) > lim.max_sequences:
            why = f"sequences={held} on this connection exceeds max_sequences={lim.max_sequences}"
        if why:
            raise _BadRequestError(f"{BAD_REQUEST}: {why}")

    def handle(self, msg: dict[str, Any]) -> ProposalReply | PongReply | StatsReply | ErrorReply:
        """The reply to one request."""
        kind = msg["type"]
        if kind == "propose":
            req = cast(ProposeRequest, msg)
            k = int(req["k"])
            self._check_propose(k, req["rows"])
            t0 = time.perf_counter()
            ids = []
            with self.model.lock:
                for row, keep, append in req["rows"]:
                    seq = self.rows.setdefault(int(row), _Sequence())
                    seq.sent = seq.sent[: int(keep)] + [int(t) for t in append]
                    ids.append(self.model.propose(seq, seq.sent, k))
            busy = time.perf_counter() - t0
            self.totals["calls"] += 1
            self.totals["busy_s"] += busy
            self.totals["tokens"] += sum(len(x) for x in ids)
            return {"type": "proposal", "ids": ids, "busy_s": busy}
        if kind == "ping":
            return {"type": "pong", "pid": os.getpid()}
        if kind == "stats":
            t, m = self.totals, self.model
            return {"type": "stats", "calls": t["calls"], "busy_s": t["busy_s"],
                    "tokens": t["tokens"], "bytes_in": t["bytes_in"],
                    "bytes_out": t["bytes_out"], "ahead_hits": getattr(m, "ahead_hits", 0),
                    "ahead_misses": getattr(m, "ahead_misses", 0),
                    "ahead_busy_s": getattr(m, "ahead_busy_s", 0.0)}  # fmt: skip
        return {"type": "error", "message": f"unknown type {kind!r}; use propose, ping or stats"}

    def draft_ahead(self) -> None:
        """With ``ahead``: draft this connection's sequences ahead, one forward at a time (the
        model lock taken per forward), until a request arrives or nothing is left to draft."""
        if not getattr(self.model, "ahead", False):
            return
        pending = list(self.rows.values())
        while pending and not select.select([self.conn], [], [], 0)[0]:
            seq = pending[0]
            with self.model.lock:
                more = self.model.ahead_step(seq)
            if not more:
                pending.pop(0)

    def serve(self) -> None:
        """Answer requests until the client closes the connection, stays silent for
        ``idle_timeout_s``, or sends a line that is not a request (answered, then closed)."""
        max_line_bytes, idle_timeout_s = self.limits.max_line_bytes, self.limits.idle_timeout_s
        peer = _peer(self.conn)
        self.conn.settimeout(idle_timeout_s)
        try:
            with contextlib.closing(self.conn), self.conn.makefile("rwb") as f:
                while True:
                    raw = f.readline(max_line_bytes + 1)
                    if not raw:
                        return
                    try:
                        msg = _parse(raw, max_line_bytes)
                    except _BadRequestError as err:
                        logger.warning("draft client %s: %s; closing the connection", peer, err)
                        self._reply(f, raw, ErrorReply(type="error", message=str(err)))
                        return
                    try:
                        reply = self.handle(msg)
                    except _BadRequestError as err:  # beyond a limit: refused, nothing changed
                        logger.warning("draft client %s: %s", peer, err)
                        reply = ErrorReply(type="error", message=str(err))
                    except Exception as err:  # a failed request gets an error reply
                        logger.exception("draft request failed")
                        reply = ErrorReply(type="error", message=f"{type(err).__name__}: {err}")
                    self._reply(f, raw, reply)
                    self.draft_ahead()
        except TimeoutError:
            logger.info("draft client %s idle for %s s: connection closed", peer, idle_timeout_s)
        except OSError as err:  # the client went away mid-line or mid-reply
            logger.info("draft client %s: %s", peer, err)

    def _reply(self, f: Any, raw: bytes, reply: Any) -> None:
        data = encode(reply)
        self.totals["bytes_in"] += len(raw)
        self.totals["bytes_out"] += len(data)
        f.write(data)
        f.flush()


def _parse(raw: bytes, max_line_bytes: int) -> dict[str, Any]:
    """One request line as a message, or :class:`_BadRequestError` saying what is wrong with it."""
    if len(raw) > max_line_bytes:
        raise _BadRequestError(
            f"{BAD_REQUEST}: request line longer than {max_line_bytes} bytes (MAX_LINE_BYTES)"
        )
    try:
        return decode(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _BadRequestError(f"{BAD_REQUEST}: not UTF-8 (byte {err.start})") from err
    except RecursionError as err:
        raise _BadRequestError(f"{BAD_REQUEST}: JSON nested too deeply") from err
    except ValueError as err:  # JSONDecodeError, or JSON that is not an object with a type
        raise _BadRequestError(f"{BAD_REQUEST}: {str(err)[:200]}") from err


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


def serve(
    srv: socket.socket,
    model: Any,
    *,
    stop: threading.Event | None = None,
    **limits: Any,
) -> None:
    """Accept connections on the listening socket ``srv`` and serve each in a thread, until
    ``stop`` is set (checked every 0.1 s) or forever; ``model`` answers proposals. ``limits``
    are :class:`Limits` fields (``max_k=8``...); ConfigError for one that is not positive."""
    lim = Limits(**limits)
    lim.check()
    open_slots = threading.BoundedSemaphore(lim.max_connections)
    totals = dict.fromkeys(("calls", "busy_s", "tokens", "bytes_in", "bytes_out"), 0.0)
    srv.settimeout(0.1 if stop is not None else None)
    while stop is None or not stop.is_set():
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            continue
        except OSError as err:  # e.g. out of file descriptors: wait, keep serving
            if stop is not None and stop.is_set():
                return
            logger.warning("draft server cannot accept a connection: %s", err)
            time.sleep(0.1)
            continue
        conn.settimeout(None)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not open_slots.acquire(blocking=False):
            _refuse(conn, f"{BUSY}: max_connections={lim.max_connections} connections are open")
            continue
        handler = _Connection(model, conn, totals, lim)
        threading.Thread(target=_serve_one, args=(handler, open_slots), daemon=True).start()


def _serve_one(handler: _Connection, open_slots: threading.BoundedSemaphore) -> None:
    try:
        handler.serve()
    finally:
        open_slots.release()


def _refuse(conn: socket.socket, message: str) -> None:
    """Send one error line and close (the accept loop must not wait on this client)."""
    logger.warning("draft client %s refused: %s", _peer(conn), message)
    with contextlib.closing(conn), contextlib.suppress(OSError):
        conn.settimeout(1.0)
        conn.sendall(encode(ErrorReply(type="error", message=message)))


def main(argv: list[str] | None = None) -> None:
    """Load the draft, print ``ready`` and serve proposals until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="draft model folder (Hugging Face format)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--cpus", default="", help="CPU cores to run on, e.g. 1 or 2-3 (Linux)")
    ap.add_argument("--ahead", action="store_true",
                    help="draft the next proposals while the target verifies")  # fmt: skip
    ap.add_argument("--idle-timeout-s", type=float, default=IDLE_TIMEOUT_S,
                    help="close a connection silent for this long (seconds)")  # fmt: skip
    ap.add_argument("--max-line-bytes", type=int, default=MAX_LINE_BYTES,
                    help="longest request line accepted (bytes)")  # fmt: skip
    ap.add_argument("--max-k", type=int, default=MAX_DRAFT_TOKENS,
                    help="most draft tokens per row and proposal")  # fmt: skip
    ap.add_argument("--max-rows", type=int, default=MAX_PROPOSE_ROWS,
                    help="most rows per proposal")  # fmt: skip
    ap.add_argument("--max-sequences", type=int, default=MAX_SEQUENCES_PER_CONNECTION,
                    help="most sequences (KV caches) one connection holds")  # fmt: skip
    ap.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                    help="most connections open at once")  # fmt: skip
    args = ap.parse_args(argv)
    limits = {name: getattr(args, name) for name in (
        "idle_timeout_s", "max_line_bytes", "max_k", "max_rows", "max_sequences",
        "max_connections")}  # fmt: skip
    try:
        Limits(**limits).check()
    except ConfigError as err:
        ap.error(str(err))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    model = DraftModel(args.model, args.device, args.dtype, ahead=args.ahead)
    model.torch.set_num_threads(max(1, args.threads))
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, parse_cpus(args.cpus))
    model.warm_up()
    srv = socket.create_server((args.host, args.port))  # SO_REUSEADDR: restarts reuse the port
    host, port = srv.getsockname()[:2]
    ready: DraftReadyEvent = {"type": "ready", "host": host, "port": port, "device": args.device,
                              "load_s": time.perf_counter() - t0, "pid": os.getpid()}  # fmt: skip
    sys.stdout.buffer.write(encode(ready))
    sys.stdout.buffer.flush()
    serve(srv, model, **limits)


if __name__ == "__main__":
    main()
