"""One serving instance's parts: scheduler knobs, busy log, result and step timeline.

:func:`~greenllm.backends.sim.engine.serve` runs an instance with :class:`EngineParams`, asks a
:class:`Timeline` how long each iteration takes (:class:`PlainTimeline`: one forward pass on one
GPU; the speculative timelines are in :mod:`~greenllm.backends.sim.speculation`), logs the GPUs'
busy intervals in a :class:`BusyLog` per GPU and returns an :class:`InstanceResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from greenllm.errors import ConfigError

__all__ = ["BusyLog", "EngineParams", "InstanceResult", "PlainTimeline", "Timeline"]


@dataclass(frozen=True)
class EngineParams:
    """Scheduler knobs of every instance (defaults: vLLM V1 on GPUs under 70 GB)."""

    max_batched_tokens: int = 2048
    """Token budget of one iteration (vLLM ``max_num_batched_tokens``)."""
    max_num_seqs: int = 256
    """Sequences in one iteration (vLLM ``max_num_seqs``)."""
    chunked_prefill: bool = True
    """True: mix decodes with prompt chunks cut to fit the budget (Sarathi-Serve, vLLM V1).
    False: whole prompts in iterations of their own, before any decode (vLLM V0)."""
    block_size_tokens: int = 16
    """KV reservations are rounded up to blocks of this many tokens (vLLM ``block_size``)."""
    max_queue_delay_s: float = 300.0
    """Overloaded once the oldest waiting request has waited this long."""
    drain_timeout_s: float = 600.0
    """Overloaded if the run has not drained this long after the last arrival."""

    def __post_init__(self) -> None:
        for name in ("max_batched_tokens", "max_num_seqs", "block_size_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"EngineParams.{name} = {v!r}: must be an integer >= 1")
        for name in ("max_queue_delay_s", "drain_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"EngineParams.{name} = {v!r}: must be a number > 0 (or inf)")

    def reserve(self, tokens: np.ndarray) -> np.ndarray:
        """KV tokens reserved for final sizes ``tokens`` (rounded up to whole blocks)."""
        bs = self.block_size_tokens
        return -(-np.asarray(tokens, dtype=np.int64) // bs) * bs


@dataclass
class BusyLog:
    """Busy intervals ``[start, end)`` of one GPU with the utilisation of each."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    utils: list[float] = field(default_factory=list)

    @property
    def busy_s(self) -> float:
        return float(np.sum(np.asarray(self.ends) - np.asarray(self.starts))) if self.ends else 0.0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.asarray(self.starts), np.asarray(self.ends), np.asarray(self.utils)


@dataclass
class InstanceResult:
    """What one instance did to the requests given to it (indices are local)."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    end_s: float
    overloaded: bool = False
    rejected: int = 0
    iterations: int = 0
    reason: str = ""
    seq_steps: int = 0  # decode steps summed over sequences (speculation steps when speculating)
    accepted_tokens: int = 0  # draft tokens accepted (speculative decoding)
    # token events: request id, time, tokens emitted at that time (only if recorded)
    events: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


class Timeline(Protocol):
    """Times one iteration and logs the GPUs' busy intervals."""

    def step(
        self,
        t0: float,
        batch: int,
        context_total: int,
        chunk_tokens: int,
        chunk_context: int,
        n_chunks: int,
    ) -> tuple[float, float]:
        """``(end of the iteration, time its prompt chunks' first tokens come out)`` for an
        iteration starting at ``t0`` with ``batch`` decoding sequences whose contexts sum to
        ``context_total``, plus ``n_chunks`` prompt chunks of ``chunk_tokens`` tokens in all
        on top of ``chunk_context`` cached tokens."""
        ...


class PlainTimeline:
    """One forward pass per iteration on one GPU (Standalone, both DPD instances)."""

    def __init__(
        self, time_util: Callable[[float, float, float], tuple[float, float]], busy: BusyLog
    ) -> None:
        self.time_util, self.busy = time_util, busy

    def step(
        self, t0: float, b: int, ctx: int, ctok: int, cctx: int, nchunk: int
    ) -> tuple[float, float]:
        d, u = self.time_util(b + ctok, ctx + cctx, b + nchunk)
        t1 = t0 + d
        self.busy.starts.append(t0)
        self.busy.ends.append(t1)
        self.busy.utils.append(u)
        return t1, t1
