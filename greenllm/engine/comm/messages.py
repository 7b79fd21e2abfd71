"""The engine's JSON messages, one ``TypedDict`` per kind.

Control messages (driver <-> worker, over :class:`~greenllm.engine.comm.control.ControlChannel`)
name their kind with the key ``"type"``, the same key as every other greenllm control protocol.
Driver -> worker: ``init``, ``generate``, ``abort``, ``peer_dead``, ``stats`` (a request),
``shutdown``.
Worker -> driver: ``hello``, ``ready``, ``tokens``, ``finish``, ``handoff``, ``error``,
``event``, ``fatal``, ``stats`` (the reply).

Data-plane payloads (JSON in a uint8 tensor, see
:func:`~greenllm.engine.comm.transport.encode_json_tensor`) carry no ``"type"``: the message
header's :class:`~greenllm.engine.comm.transport.Kind` names them (``ADMIT``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.comm.link import LinkDict
    from greenllm.engine.model.sampling import SamplingDict

__all__ = [
    "AbortMsg",
    "DistInfo",
    "DpdAdmit",
    "DsdAdmit",
    "ErrorMsg",
    "EventMsg",
    "FatalMsg",
    "FinishMsg",
    "GenerateMsg",
    "HandoffMsg",
    "HelloMsg",
    "InitMsg",
    "PeerDeadMsg",
    "ReadyMsg",
    "ShutdownMsg",
    "SpecDict",
    "StatsReplyMsg",
    "StatsRequestMsg",
    "TokensMsg",
]


# -- shared parts ------------------------------------------------------------------------------
class SpecDict(TypedDict):
    """Per-request DSD overrides of the engine's ``k``, ``overlap``, ``lean``, ``ahead`` and
    ``adaptive_k`` (None: keep)."""

    k: int | None
    overlap: bool | None
    lean: bool | None
    ahead: NotRequired[bool | None]
    adaptive_k: NotRequired[bool | None]


class DistInfo(TypedDict):
    """Where a two-worker group meets (the leader's rendezvous address) and this worker's rank."""

    addr: str
    port: int
    rank: int
    peer_name: str


# -- driver -> worker --------------------------------------------------------------------------
class InitMsg(TypedDict):
    """The worker's role, model folders or aliases, device and options; ``dist`` for a pair."""

    type: Literal["init"]
    role: str
    device: str
    model: str
    draft_model: str | None
    dtype: str
    k: int
    overlap: bool
    lean: bool
    ahead: NotRequired[bool]
    adaptive_k: NotRequired[bool]
    timeout_s: float
    rendezvous_timeout_s: float
    threads: int
    max_batch: int
    link: LinkDict | None
    dist: DistInfo | None


class GenerateMsg(TypedDict):
    """A request for the leader; ``local``: decode on the leader (a DPD re-run)."""

    type: Literal["generate"]
    rid: int
    prompt: list[int]
    sampling: SamplingDict
    spec: SpecDict
    local: bool


class AbortMsg(TypedDict):
    """Stop request ``rid`` (its caller went away). Sent to every worker of the engine: the
    worker that holds the request drops it at its next step boundary and answers ``finish``
    with reason ``"abort"``; a worker that does not (yet) hold it remembers the id and drops
    the request if it arrives later (a DPD hand-off in flight)."""

    type: Literal["abort"]
    rid: int


class PeerDeadMsg(TypedDict):
    type: Literal["peer_dead"]
    reason: str


class StatsRequestMsg(TypedDict):
    type: Literal["stats"]
    seq: int


class ShutdownMsg(TypedDict):
    type: Literal["shutdown"]


# -- worker -> driver --------------------------------------------------------------------------
class HelloMsg(TypedDict):
    """First message of a worker: its index, pid, data-plane address and Ray resources."""

    type: Literal["hello"]
    worker: int
    pid: int
    host: str
    port: int
    resources: dict[str, float]


class ReadyMsg(TypedDict):
    type: Literal["ready"]
    worker: int


class TokensMsg(TypedDict):
    """Tokens emitted for request ``rid`` and the epoch second of each."""

    type: Literal["tokens"]
    rid: int
    tokens: list[int]
    times: list[float]


class FinishMsg(TypedDict):
    type: Literal["finish"]
    rid: int
    reason: str
    proposed: int
    accepted: int


class HandoffMsg(TypedDict):
    """DPD: request ``rid`` went to the decode worker."""

    type: Literal["handoff"]
    rid: int


class ErrorMsg(TypedDict):
    type: Literal["error"]
    rid: int
    message: str


class EventMsg(TypedDict):
    type: Literal["event"]
    text: str


class FatalMsg(TypedDict):
    type: Literal["fatal"]
    worker: int
    message: str


class StatsReplyMsg(TypedDict):
    """The answer to ``stats`` number ``seq``: a :class:`~greenllm.engine.stats.WorkerCounters`
    snapshot."""

    type: Literal["stats"]
    seq: int
    stats: dict[str, Any]


# -- data-plane payloads (kind in the header) --------------------------------------------------
class DsdAdmit(TypedDict):
    """DSD target -> draft: a new request to draft for."""

    prompt: list[int]
    first: int
    k: int
    lean: bool
    overlap: bool
    ahead: bool
    sampling: SamplingDict


class DpdAdmit(TypedDict):
    """DPD prefill -> decode: a request whose KV cache follows (``n_layers`` x keys, values)."""

    first: int
    sampling: SamplingDict
    generator_state: str | None  # base64 of the torch generator state; None when greedy
    n_layers: int
