"""What :meth:`Engine.generate <greenllm.engine.driver.engine.Engine.generate>` returns for
one request, and the driver's bookkeeping of a request in flight."""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.engine.model.sampling import SamplingDict

__all__ = ["Pending", "RequestOutput"]


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


@dataclass
class Pending:
    """Driver-side state of a request in flight (guarded by the supervisor's lock)."""

    rid: int
    prompt: list[int]
    sampling: SamplingDict
    arrival_s: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    tokens: list[int] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)
    handed_off: bool = False
    reruns: int = 0
    done: bool = False

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        """Complete the future from any thread (once)."""
        if self.done:
            return
        self.done = True

        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(value)

        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(settle)
