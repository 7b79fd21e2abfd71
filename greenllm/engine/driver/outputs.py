"""What :meth:`Engine.generate <greenllm.engine.driver.engine.Engine.generate>` returns for
one request (:class:`RequestOutput`), what :meth:`Engine.stream
<greenllm.engine.driver.engine.Engine.stream>` yields (:class:`TokenEvent`), and the driver's
bookkeeping of a request in flight (:class:`Pending`)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.model.sampling import SamplingDict

__all__ = ["Pending", "RequestOutput", "TokenEvent"]


@dataclass(frozen=True)
class RequestOutput:
    """One finished request.

    tokens: generated token ids (prompt excluded); text: their decoding ("" without a tokenizer).
    token_times_s: epoch seconds at which each token reached the driver's worker side (emitted).
    arrival_s: epoch seconds when ``generate`` was called.
    proposed_tokens / accepted_tokens: draft tokens proposed and accepted (0 without a draft).
    reruns: times the request was re-run after a worker died (DPD decode-worker failure).
    """

    request_id: int
    prompt_tokens: tuple[int, ...]
    tokens: tuple[int, ...]
    text: str
    token_times_s: tuple[float, ...]
    arrival_s: float
    finish_reason: str
    proposed_tokens: int = 0
    accepted_tokens: int = 0
    reruns: int = 0

    @property
    def first_token_s(self) -> float:
        return self.token_times_s[0] if self.token_times_s else math.nan

    @property
    def finish_s(self) -> float:
        return self.token_times_s[-1] if self.token_times_s else math.nan

    @property
    def ttft_s(self) -> float:
        """Time to first token, seconds."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first (NaN for a single token)."""
        n = len(self.tokens)
        return (self.finish_s - self.first_token_s) / (n - 1) if n > 1 else math.nan

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.proposed_tokens if self.proposed_tokens else math.nan


@dataclass(frozen=True)
class TokenEvent:
    """Tokens of one streamed request that reached the driver together.

    tokens / times_s: the new token ids and the epoch second each was emitted (as in
    :attr:`RequestOutput.token_times_s`); never a token already yielded. The last event of a
    request has ``finish_reason`` ("length", "stop", ...) and ``output``, the request's
    :class:`RequestOutput` (all its tokens); its ``tokens`` may be empty.
    """

    request_id: int
    tokens: tuple[int, ...]
    times_s: tuple[float, ...]
    finish_reason: str | None = None
    output: RequestOutput | None = None

    @property
    def last(self) -> bool:
        """True for the request's final event."""
        return self.finish_reason is not None

    def merge(self, later: TokenEvent) -> TokenEvent:
        """This event followed by ``later`` (of the same request) as one event."""
        return TokenEvent(self.request_id, self.tokens + later.tokens,
                          self.times_s + later.times_s, later.finish_reason,
                          later.output)  # fmt: skip


@dataclass
class Pending:
    """Driver-side state of a request in flight (guarded by the supervisor's lock).

    ``future`` (:meth:`Engine.generate`) resolves once with the output or the error;
    ``events`` (:meth:`Engine.stream`, None otherwise) receives a :class:`TokenEvent` per
    ``tokens`` message and at the finish, or the error. ``streamed``: tokens put on ``events``;
    ``replay`` / ``replay_times_s``: after a DPD re-run, the tokens (and their first times) the
    re-run must reproduce before the stream goes on. ``aborting``: the caller abandoned it and
    the workers were told to drop it; it stays tracked until a worker answers.
    """

    rid: int
    prompt: list[int]
    sampling: SamplingDict
    arrival_s: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] | None
    tokens: list[int] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    handed_off: bool = False
    reruns: int = 0
    done: bool = False
    events: asyncio.Queue[TokenEvent | BaseException] | None = None
    streamed: int = 0
    replay: list[int] = field(default_factory=list)
    replay_times_s: list[float] = field(default_factory=list)
    aborting: bool = False

    def push(self, item: TokenEvent | BaseException) -> None:
        """Put ``item`` on the stream's queue from any thread (a no-op without a stream)."""
        if self.events is None:
            return
        if isinstance(item, TokenEvent):
            self.streamed += len(item.tokens)
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """Complete the future (and end the stream) from any thread (once)."""
        if self.done:
            return
        self.done = True
        if error is not None:
            self.push(error)
        elif isinstance(value, RequestOutput):
            self.push(TokenEvent(self.rid, (), (), value.finish_reason, value))
        future = self.future
        if future is None:
            return

        def settle() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(settle)
