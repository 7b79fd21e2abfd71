"""The ``sim`` upstream: a virtual GPU pair streaming tokens when the simulator says they come.

:class:`SimUpstream` wraps :class:`~greenllm.backends.sim.LiveSim`: requests are served with
the offline simulator's continuous batching, step-time models, link and acceptance model, in
real time or ``time_scale`` times faster, and the GPUs' power is the simulator's power model at
the utilisation of the step each GPU runs (idle power between steps). It starts instantly and
needs no GPU: for laptops, demos and large load tests.

What it makes up, deterministically:

* **Prompt length**: token ids count as themselves; text is estimated with
  :func:`greenllm.workloads.approx_token_count` (Llama-tokenizer-like word pieces, at least 1);
  a chat's prompt is its messages' contents joined by newlines (no chat-template tokens).
* **Output length**: always ``max_tokens``, ``finish_reason`` ``"length"`` (no EOS draw; stop
  strings are not matched: the filler text never stops early).
* **Text**: filler words drawn from a generator seeded by the prompt for greedy requests
  (``temperature == 0``: equal prompts give equal text), else by ``(seed, prompt)`` when the
  request has a ``seed``, else by the request id. One word per token, each with its own id.

Times: :meth:`SimUpstream.clock_s` and every ``TokenChunk.time_s`` are on the simulation's
virtual clock (:meth:`LiveSim.clock_s`, epoch seconds at creation + scaled elapsed time), so
TTFT/TPOT measured by the gateway on that clock are the simulator's prediction at any time
scale, and the power sampler integrates virtual seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Literal

from greenllm.backends import ROLES
from greenllm.backends.sim import LiveSim, SimOptions, get_model
from greenllm.config import Configuration
from greenllm.energy import NVML_PERIOD_S, ModelledSampler, PowerSampler
from greenllm.errors import BackendClosedError, ConfigError
from greenllm.serve.upstream import (
    Device,
    GenerationRequest,
    TokenChunk,
    Upstream,
    UpstreamError,
    UpstreamStats,
)
from greenllm.workloads import approx_token_count

__all__ = ["FILLER_WORDS", "SimUpstream", "prompt_token_count"]

#: The words the simulated model "generates" (token ids ``FILLER_ID0 + index``).
FILLER_WORDS: tuple[str, ...] = (
    "the", "green", "model", "serves", "tokens", "on", "old", "and", "new", "GPUs", "with",
    "less", "carbon", "per", "request", "while", "the", "draft", "proposes", "and", "the",
    "target", "verifies", "a", "batch", "of", "prompts", "in", "time", "for", "every", "user",
    "energy", "flows", "through", "the", "link", "to", "decode", "faster", "than", "before",
)  # fmt: skip
_FILLER_ID0 = 1000
_MIN_WALL_PERIOD_S = 0.01  # the power sampler polls at most 100 times per wall second


def prompt_token_count(request: GenerationRequest) -> int:
    """The prompt's token count as the simulator sees it (see the module docstring)."""
    if request.messages is not None:
        text = "\n".join(str(m.get("content", "")) for m in request.messages)
        return approx_token_count(text)
    if isinstance(request.prompt, str):
        return approx_token_count(request.prompt)
    if request.prompt is None:
        raise ConfigError(f"request {request.request_id!r}: no prompt and no messages")
    return len(request.prompt)


def _text_seed(request: GenerationRequest) -> int:
    prompt = repr(request.messages if request.messages is not None else request.prompt)
    if request.temperature == 0:
        key = f"greedy|{prompt}"
    elif request.seed is not None:
        key = f"seed:{request.seed}|{prompt}"
    else:
        key = f"id:{request.request_id}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8", "replace")).digest()[:8], "big")


class SimUpstream(Upstream):
    """Serve ``configuration`` on the simulator's virtual GPUs.

    ``model``: the model name clients use; default the configuration's ``target_model``, and if
    given it must be a name of the same model (:func:`~greenllm.backends.sim.get_model`; the
    draft of SpecDecode/DSD comes from the configuration). ``time_scale``: virtual seconds per
    wall second. ``seed``: the acceptance draws. ``acceptance_rate``: override the simulator's
    table. ``options``: other simulator settings. ``power_period_s``: the power sampler's period
    in virtual seconds (NVML's 0.2 s; at most 100 polls per wall second). ``start_s``: the
    virtual seconds :meth:`start` takes, a modelled engine start (loading weights, warming up;
    default 0: the simulator starts at once) that a switch to this upstream then costs.
    ``start_clock_s``: the virtual seconds the start takes on the clock (default ``start_s``;
    less in a replay whose clock runs faster than the day it stands for, where a switch must
    still be charged a whole ``start_s``).
    ``origin``: another upstream's ``live.origin``, to run on its virtual clock (a switch's
    new configuration must: the gateway's clock goes on across the switch).
    """

    backend = "sim"
    energy_source: Literal["measured", "modelled"] = "modelled"

    def __init__(
        self,
        configuration: Configuration,
        *,
        model: str | None = None,
        time_scale: float = 1.0,
        seed: int = 0,
        acceptance_rate: float | Mapping[tuple[str, str], float] | None = None,
        options: SimOptions | None = None,
        power_period_s: float = NVML_PERIOD_S,
        start_s: float = 0.0,
        start_clock_s: float | None = None,
        origin: tuple[float, float] | None = None,
    ) -> None:
        live = LiveSim(
            configuration,
            time_scale=time_scale,
            seed=seed,
            acceptance_rate=acceptance_rate,
            options=options,
            origin=origin,
        )
        target = live.plan.target.name
        if model is not None and (not isinstance(model, str) or get_model(model).name != target):
            raise ConfigError(
                f"model = {model!r:.60} is not the configuration's target model {target!r}"
            )
        if (
            isinstance(power_period_s, bool)
            or not isinstance(power_period_s, (int, float))
            or not 0 < power_period_s < math.inf
        ):
            raise ConfigError(f"power_period_s = {power_period_s!r}: must be seconds > 0")
        for name, v in (("start_s", start_s), ("start_clock_s", start_clock_s)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not 0 <= v < math.inf):  # fmt: skip
                raise ConfigError(f"{name} = {v!r}: must be seconds >= 0")
        self.start_s = float(start_s)
        self.start_clock_s = self.start_s if start_clock_s is None else float(start_clock_s)
        self.configuration = configuration
        self.model = model if model is not None else configuration.target_model
        self.live = live
        self.power_period_s = float(power_period_s)
        self._devices = tuple(
            Device(gpu, role)
            for gpu, role in zip(configuration.gpus, ROLES[configuration.kind], strict=True)
        )
        self._sampler: ModelledSampler | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.live.start()
        if self.start_clock_s > 0:  # the modelled engine start, on the virtual clock
            await asyncio.sleep(self.start_clock_s / self.live.time_scale)

    async def stop(self) -> None:
        await self.live.stop()

    @property
    def ready(self) -> bool:
        return self.live.running

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._devices

    @property
    def time_scale(self) -> float:
        return self.live.time_scale

    @property
    def modelled_start_s(self) -> float:
        return self.start_s

    def clock_s(self) -> float:
        return self.live.clock_s()

    # ---- energy --------------------------------------------------------------------------------
    def power_sampler(self) -> PowerSampler:
        """One :class:`~greenllm.energy.ModelledSampler` over :attr:`devices` (keys
        ``role:gpu``) on the virtual clock. Each reading is the GPU's mean modelled power since
        the previous one (from :meth:`LiveSim.energy_j`, as a GPU's energy counter gives it), so
        no step between two readings is missed or counted twice: the integral is the modelled
        energy to within one period at a window's edges, where an instantaneous reading would
        alias the steps (tens of ms) against the period."""
        if self._sampler is None:
            keys = [d.key for d in self._devices]
            live = self.live
            t0 = live.clock_s()
            last: list[Any] = [t0, live.energy_j(t0), live.power_w(t0)]

            def power(_elapsed_s: float) -> dict[str, float]:
                now = live.clock_s()
                joules = live.energy_j(now)
                if now - last[0] > 1e-9:
                    last[2] = [max(b - a, 0.0) / (now - last[0])
                               for a, b in zip(last[1], joules, strict=True)]  # fmt: skip
                    last[0], last[1] = now, joules
                return dict(zip(keys, last[2], strict=True))

            wall_period = max(self.power_period_s / live.time_scale, _MIN_WALL_PERIOD_S)
            self._sampler = ModelledSampler(
                power, devices=keys, period_s=wall_period, clock=live.clock_s
            )
        return self._sampler

    # ---- requests ------------------------------------------------------------------------------
    async def stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """The request's tokens as the simulator produces them (see the module docstring).
        ``ConfigError`` for sizes that can never be served; :class:`UpstreamError` if the
        upstream is not running or stops meanwhile."""
        prompt = prompt_token_count(request)
        try:
            req = self.live.submit(prompt, request.max_tokens, request_id=request.request_id)
        except BackendClosedError as err:
            raise UpstreamError(f"sim upstream: {err}", retryable=False) from err
        rng = random.Random(_text_seed(request))
        n_words = len(FILLER_WORDS)
        emitted = 0
        try:
            async for ev in req:
                idx = [rng.randrange(n_words) for _ in range(ev.tokens)]
                text = "".join(" " + FILLER_WORDS[i] for i in idx)
                ids = tuple(_FILLER_ID0 + i for i in idx)
                emitted += ev.tokens
                if ev.last:
                    yield TokenChunk(text, ids, ev.time_s, "length", prompt, emitted)
                else:
                    yield TokenChunk(text, ids, ev.time_s)
        except BackendClosedError as err:
            raise UpstreamError(f"sim upstream: {err}", retryable=emitted == 0) from err
        finally:
            req.cancel()

    def stats(self) -> UpstreamStats:
        s = self.live.stats()
        extra: dict[str, float] = {
            "iterations": float(s.iterations),
            "link_bytes": float(s.link_bytes),
            "requests_active": float(s.requests_active),
            "requests_cancelled": float(s.requests_cancelled),
            "tokens_emitted": float(s.tokens_emitted),
            "max_lag_s": s.max_lag_s,
            "time_scale": self.live.time_scale,
        }
        for d, busy in zip(self._devices, s.busy_s, strict=True):
            extra[f"busy_s:{d.key}"] = busy
        return UpstreamStats(s.spec_proposed_tokens, s.spec_accepted_tokens, extra)

    def __repr__(self) -> str:
        return f"SimUpstream({self.configuration.label}, time_scale={self.live.time_scale:g})"
