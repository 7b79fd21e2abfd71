"""The JSON-lines messages between the vLLM backend, its workers and the DSD draft server.

One JSON object per line (no pickle), each naming its kind under the key ``"type"``:

* backend -> worker (:mod:`.worker`, on its stdin): :class:`StartCommand` (first line),
  :class:`AddCommand`, :class:`TokenizeCommand`, :class:`MetricsCommand`,
  :class:`ShutdownCommand`;
* worker -> backend (on its stdout): :class:`ReadyEvent`, :class:`TokensEvent`,
  :class:`MetricsEvent`, :class:`OutEvent` (tokens of one engine step), :class:`DoneEvent`,
  :class:`ErrorEvent`; :class:`~.process.WorkerProcess` adds :class:`ExitEvent` when the child
  exits;
* draft server (:mod:`.draft_server`) -> backend at start-up (stdout): :class:`DraftReadyEvent`;
* proposer (:mod:`.proposer`) -> draft server over TCP: :class:`ProposeRequest`,
  :class:`PingRequest`, :class:`StatsRequest`; replies :class:`ProposalReply`,
  :class:`PongReply`, :class:`StatsReply` or :class:`ErrorReply`;
* proposer -> backend through the call log (``GREENLLM_DRAFT_LOG``): :class:`DraftCall`.

Imported by the worker processes too: nothing here imports vLLM, torch or numpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "MAX_DRAFT_TOKENS",
    "MAX_PROPOSE_ROWS",
    "AddCommand",
    "DoneEvent",
    "DraftCall",
    "DraftReadyEvent",
    "ErrorEvent",
    "ErrorReply",
    "ExitEvent",
    "MetricsCommand",
    "MetricsEvent",
    "OutEvent",
    "PingRequest",
    "PongReply",
    "ProposalReply",
    "ProposeRequest",
    "ReadyEvent",
    "ShutdownCommand",
    "StartCommand",
    "StatsReply",
    "StatsRequest",
    "TokenizeCommand",
    "TokensEvent",
    "decode",
    "encode",
]

#: Most draft tokens (``k``) one :class:`ProposeRequest` may ask for per row; the draft server's
#: default limit (``--max-k``), and the most :class:`~.proposer.RemoteDraftProposer` accepts for
#: ``num_speculative_tokens``. Speculative decoding uses 1-10 in practice.
MAX_DRAFT_TOKENS = 32
#: Most rows one :class:`ProposeRequest` may carry (the draft server's default ``--max-rows``):
#: one per sequence of the target's batch (vLLM's ``max_num_seqs``, 256 by default on GPUs).
MAX_PROPOSE_ROWS = 1024


# ---- backend -> worker --------------------------------------------------------------------------
class StartCommand(TypedDict):
    """Check the vLLM version and the features ``kind`` needs, then build ``vllm.LLM(**engine)``."""

    type: Literal["start"]
    kind: str  # ConfigKind value: "standalone", "spec_decode", "dpd", "dsd"
    device: str  # "cpu" or "cuda"
    engine: dict[str, Any]  # vLLM EngineArgs


class AddCommand(TypedDict):
    """Generate exactly ``max_tokens`` greedy tokens for ``token_ids``, submitted to the engine
    when ``time.monotonic()`` reaches ``at_s`` (0: now)."""

    type: Literal["add"]
    rid: str
    token_ids: list[int]
    max_tokens: int
    at_s: float  # monotonic seconds of this host
    kv_transfer_params: dict[str, Any] | None  # DPD over NixlConnector; None otherwise


class TokenizeCommand(TypedDict):
    """Tokenise ``texts`` with the engine's tokenizer (answered by :class:`TokensEvent`)."""

    type: Literal["tokenize"]
    texts: list[str]


class MetricsCommand(TypedDict):
    """Report ``LLM.get_metrics()`` (answered by :class:`MetricsEvent`)."""

    type: Literal["metrics"]


class ShutdownCommand(TypedDict):
    """Stop the engine and exit."""

    type: Literal["shutdown"]


# ---- worker -> backend --------------------------------------------------------------------------
class ReadyEvent(TypedDict):
    """The engine started."""

    type: Literal["ready"]
    version: str  # vLLM version
    device: str
    start_s: float  # seconds to build the engine
    kv_bytes_per_token: int  # K and V of one token over all layers
    features: dict[str, bool]  # probed vLLM features
    pid: int


class TokensEvent(TypedDict):
    """Token ids of each text of a :class:`TokenizeCommand`, in order."""

    type: Literal["tokens"]
    token_ids: list[list[int]]


class MetricsEvent(TypedDict):
    """``LLM.get_metrics()`` as plain data (:func:`~.metrics.serialize_metrics`)."""

    type: Literal["metrics"]
    metrics: list[dict[str, Any]]


class OutEvent(TypedDict):
    """New tokens of request ``rid`` from one engine step at ``t`` (monotonic seconds)."""

    type: Literal["out"]
    rid: str
    ids: list[int]
    t: float


class DoneEvent(TypedDict):
    """Request ``rid`` finished."""

    type: Literal["done"]
    rid: str
    stats: dict[str, Any]  # :func:`~.metrics.request_stats`
    submit_s: float  # monotonic time it was added to the engine
    kv_transfer_params: dict[str, Any] | None


class ErrorEvent(TypedDict):
    """The worker failed; ``kind`` is ``"unavailable"`` for a missing version or feature, else
    ``"protocol"``, ``"start"`` or ``"serve"``."""

    type: Literal["error"]
    kind: str
    message: str


class ExitEvent(TypedDict):
    """The child process exited (made by the parent's reader, never sent by the child)."""

    type: Literal["exit"]
    returncode: int


# ---- DSD draft server ---------------------------------------------------------------------------
class DraftReadyEvent(TypedDict):
    """The draft server listens on ``host:port`` (first line of its stdout)."""

    type: Literal["ready"]
    host: str
    port: int
    device: str
    load_s: float  # seconds to load and warm up the draft
    pid: int


class ProposeRequest(TypedDict):
    """K greedy draft tokens per row. ``rows`` are ``[row, keep, appended ids]``: the row's
    context is the first ``keep`` tokens last sent for it plus the appended ids."""

    type: Literal["propose"]
    k: int
    rows: list[list[Any]]


class ProposalReply(TypedDict):
    """K draft ids per row of a :class:`ProposeRequest`, in order, and the compute seconds."""

    type: Literal["proposal"]
    ids: list[list[int]]
    busy_s: float


class PingRequest(TypedDict):
    """Is the server alive? (answered by :class:`PongReply`)."""

    type: Literal["ping"]


class PongReply(TypedDict):
    type: Literal["pong"]
    pid: int


class StatsRequest(TypedDict):
    """Counters since the server started (answered by :class:`StatsReply`)."""

    type: Literal["stats"]


class StatsReply(TypedDict):
    type: Literal["stats"]
    calls: float
    busy_s: float
    tokens: float
    bytes_in: float
    bytes_out: float
    ahead_hits: NotRequired[int]
    ahead_misses: NotRequired[int]
    ahead_busy_s: NotRequired[float]


class ErrorReply(TypedDict):
    """A request the server could not answer (the connection stays open)."""

    type: Literal["error"]
    message: str


class DraftCall(TypedDict):
    """One proposer call, appended to the call log the backend sums after a run."""

    type: Literal["draft_call"]
    t0: float  # monotonic seconds when the call started
    t: float  # ... and when it ended
    outcome: str  # "ok", "timeout", "error" or "down" (no call: waiting to reconnect)
    sent: int  # bytes sent to the draft server
    received: int  # bytes received from it
    rows: int
    busy_s: float  # the draft server's compute seconds
    tokens: int  # draft tokens proposed


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as a compact JSON line (with its newline)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes | str) -> dict[str, Any]:
    """One JSON line as a message; ValueError if it is not an object with a string ``type``."""
    message = json.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError(f"not a protocol message (an object with a 'type'): {str(line)[:200]}")
    return message
