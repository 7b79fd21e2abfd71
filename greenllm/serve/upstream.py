"""What the gateway serves from: an :class:`Upstream` runs one configuration's engines.

An upstream starts and stops its engines (the simulator's virtual GPUs, greenllm's own engine,
or vLLM servers), says whether they are ready, names the GPUs it holds and their roles, gives a
:class:`~greenllm.energy.PowerSampler` over those GPUs (measured or modelled), and streams each
request's tokens as :class:`TokenChunk` items. The gateway (:mod:`greenllm.serve.gateway`) does
the rest: the OpenAI API, admission, carbon receipts and metrics. Nothing here imports FastAPI.

Hooks of an implementation:

* ``start()`` / ``stop()``: bring the engines up (``ready`` turns True) / stop every process
  the upstream started (idempotent). ``stop`` does not drain: the gateway drains first.
* ``devices``: one :class:`Device` per GPU, new GPU first (``configuration.gpus`` order).
* ``power_sampler()``: a sampler whose device names are :meth:`Device.key` values (the same
  object on every call; the gateway starts and stops it).
* ``stream(request)``: an async iterator of chunks; the last one has ``finish_reason``. Tokens
  already streamed are never repeated. Closing the iterator early (the client left) cancels
  the request's work in every engine it touched. Failures raise :class:`UpstreamError`;
  ``retryable`` is True only when no token was streamed yet.
* ``stats()``: counters (speculative tokens proposed/accepted).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from greenllm.config import Configuration
from greenllm.energy import PowerSampler
from greenllm.errors import GreenLLMError

__all__ = [
    "Device",
    "GenerationRequest",
    "TokenChunk",
    "Upstream",
    "UpstreamError",
    "UpstreamStats",
]

FinishReason = Literal["stop", "length", "error"]


class UpstreamError(GreenLLMError):
    """An engine or upstream server failed a request. ``retryable``: no token reached the
    client yet, so the gateway may send the request again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Device:
    """One GPU an upstream holds: its catalog name and its role (a value of
    :data:`greenllm.backends.ROLES`: ``target``, ``draft``, ``prefill``, ``decode``,
    ``target+draft``)."""

    gpu: str
    role: str

    @property
    def key(self) -> str:
        """The device's name in the power sampler and the receipts: ``"<role>:<gpu>"``."""
        return f"{self.role}:{self.gpu}"


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request, as the gateway hands it to an upstream.

    Exactly one of ``prompt`` (completions: text or token ids) and ``messages`` (chat: OpenAI
    message dicts with ``role`` and string ``content``) is set. ``temperature == 0`` is greedy.
    """

    request_id: str
    max_tokens: int
    prompt: str | tuple[int, ...] | None = None
    messages: tuple[dict[str, str], ...] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    model: str | None = None
    """The model name the client asked for (a deployment routes by it: one per workload)."""

    @property
    def chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class TokenChunk:
    """Tokens an upstream produced at one instant.

    ``text`` is their decoded text (may be empty for a partial character); ``time_s`` is when
    they were produced (epoch seconds, or the upstream's own clock for a time-scaled
    simulation); the last chunk of a request has ``finish_reason`` and the final token counts.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    time_s: float = 0.0
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass
class UpstreamStats:
    """Counters since start."""

    spec_proposed_tokens: int = 0
    spec_accepted_tokens: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float | None:
        if self.spec_proposed_tokens == 0:
            return None
        return self.spec_accepted_tokens / self.spec_proposed_tokens


class Upstream(ABC):
    """One configuration's engines (see the module docstring for the hooks)."""

    backend: str
    """The backend name: ``sim``, ``torch``, ``vllm``."""
    configuration: Configuration
    model: str
    """The model name clients use (``/v1/models``)."""
    energy_source: Literal["measured", "modelled"] = "modelled"

    @property
    def time_scale(self) -> float:
        """Seconds of :meth:`clock_s` per wall second (1: real engines; a scaled simulator)."""
        return 1.0

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def ready(self) -> bool: ...

    @property
    @abstractmethod
    def devices(self) -> tuple[Device, ...]: ...

    @abstractmethod
    def power_sampler(self) -> PowerSampler: ...

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]: ...

    async def recover(self) -> None:
        """Bring a not-:attr:`ready` upstream back; the gateway calls it, with exponential
        backoff, while :attr:`ready` is False. Default: nothing to do (the sim upstream does
        not fail; the vllm upstream restarts its own servers)."""
        return None

    @property
    def modelled_start_s(self) -> float | None:
        """The engine start a switch to this upstream is charged for, when it is modelled
        (the simulator); None: the gateway times :meth:`start` (real engines)."""
        return None

    def clock_s(self) -> float:
        """The time base of ``TokenChunk.time_s`` and of the power sampler (epoch seconds)."""
        return self.power_sampler().now_s()

    def stats(self) -> UpstreamStats:
        return UpstreamStats()
