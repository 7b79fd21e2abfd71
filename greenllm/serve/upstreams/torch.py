"""The ``torch`` upstream: greenllm's own PyTorch engine (:class:`greenllm.engine.Engine`) in
all four configurations, streaming through :meth:`Engine.stream
<greenllm.engine.driver.engine.Engine.stream>`.

* **Engine**: the configuration maps to an engine as in the ``torch`` backend
  (:func:`greenllm.backends.torch.support.engine_key`: kind -> mode, model aliases -> folders,
  ``num_speculative_tokens`` -> K, the link emulated only with ``emulate_link`` or an explicit
  ``link``). :meth:`TorchUpstream.start` starts it in a thread, so the event loop stays free
  during the 10-60 s start.
* **Prompts**: chat messages through the tokenizer's chat template
  (``add_generation_prompt=True``), text through the tokenizer, token ids as they are.
* **Sampling**: temperature (0 = greedy), top_p, seed and max_tokens map to
  :class:`~greenllm.engine.SamplingParams`; the tokenizer's EOS token stops a request unless
  ``ignore_eos``. Stop strings are matched here on the decoded text (the engine has none): the
  text is cut before the stop string, ``finish_reason`` is "stop" and the rest of the request
  is aborted on the workers.
* **Text**: each chunk carries the new suffix of the decoded whole output, so a character split
  across tokens comes out whole once complete (a chunk may have empty text), and text that
  could be the start of a stop string is held back until it cannot.
* **Errors**: an engine failure raises :class:`~greenllm.serve.upstream.UpstreamError`,
  retryable only when no chunk was streamed yet.
* **Energy**: measured with NVML when it sees a GPU and the engine's roles run on distinct
  ``cuda:<i>`` devices; else modelled as the torch backend models it: each GPU's power model
  (:func:`greenllm.energy.power_model`) at the utilisation its worker measured (busy seconds
  per second, :meth:`Engine.stats`), idle power between forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from greenllm.backends import ROLES
from greenllm.backends.torch import support as ts
from greenllm.config import ConfigKind, Configuration
from greenllm.energy import NVML_PERIOD_S, ModelledSampler, NVMLSampler, PowerSampler, power_model
from greenllm.errors import ConfigError, GreenLLMError, WorkerError
from greenllm.serve.upstream import (
    Device,
    GenerationRequest,
    TokenChunk,
    Upstream,
    UpstreamError,
    UpstreamStats,
)

__all__ = ["TorchUpstream", "held_back_chars"]

logger = logging.getLogger(__name__)

_STATS_EVERY_S = 1.0  # the modelled sampler asks the workers for busy time at most this often


def _cuda_index(device: str) -> int | None:
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return 0 if device == "cuda" else None


def held_back_chars(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class _NamedNVML(NVMLSampler):
    """An :class:`NVMLSampler` over given GPU indices whose devices are named by the roles'
    keys (``role:gpu``) instead of ``gpu<i>`` (renamed once, when it opens)."""

    def __init__(self, names: dict[int, str], period_s: float) -> None:
        super().__init__(period_s, devices=list(names))
        self._role_names = {f"gpu{i}": name for i, name in names.items()}

    def _open(self) -> Sequence[str]:
        super()._open()
        name = self._role_names
        self._handles = {name.get(d, d): h for d, h in self._handles.items()}
        self.models = {name.get(d, d): m for d, m in self.models.items()}
        self.power_source = {name.get(d, d): s for d, s in self.power_source.items()}
        self._has_counter = {name.get(d, d) for d in self._has_counter}
        self._device_flags = {name.get(d, d): f for d, f in self._device_flags.items()}
        return tuple(self._handles)


class TorchUpstream(Upstream):
    """Serve one configuration on greenllm's PyTorch engine.

    ``configuration``: a :class:`~greenllm.config.Configuration` (its models, K and GPUs are
    used) or a kind (``"standalone"``, ``"spec_decode"``, ``"dsd"``, ``"dpd"``), which is built
    with ``target``, ``draft`` (default ``smollm2-135m-draft`` where one is needed), ``k`` and
    the nominal ``new_gpu`` / ``old_gpu`` of the carbon accounting. ``device_new`` /
    ``device_old``: where the workers run. ``link``: a
    :class:`~greenllm.engine.LinkEmulation` between the two workers (default: none, or the
    configuration's ``link_gbps`` with ``emulate_link``). ``model``: the name clients use
    (default the target). ``engine_options``: more :class:`~greenllm.engine.Engine` keywords
    (``threads``, ``max_batch``, ``timeout_s``, ``placement``, ...).
    """

    backend = "torch"

    def __init__(
        self,
        configuration: Configuration | str,
        *,
        target: str = "smollm2-135m",
        draft: str | None = None,
        k: int = 4,
        device_new: str = "cpu",
        device_old: str = "cpu",
        link: Any = None,
        emulate_link: bool = False,
        link_latency_s: float = 0.0,
        lean: bool = False,
        overlap: bool = True,
        new_gpu: str = "A100",
        old_gpu: str = "T4",
        model: str | None = None,
        power_period_s: float = NVML_PERIOD_S,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        from greenllm.engine import Engine

        if isinstance(configuration, str):
            try:
                kind = ConfigKind(configuration)
            except ValueError as err:
                raise ConfigError(
                    f"configuration {configuration!r:.60}: use a Configuration or one of "
                    f"{[c.value for c in ConfigKind]}"
                ) from err
            needs_draft = kind in (ConfigKind.SPEC_DECODE, ConfigKind.DSD)
            two = kind in (ConfigKind.DSD, ConfigKind.DPD)
            configuration = Configuration(
                kind=kind, new_gpu=new_gpu, old_gpu=old_gpu if two else None,
                target_model=target,
                draft_model=(draft or "smollm2-135m-draft") if needs_draft else None,
                num_speculative_tokens=k,
            )  # fmt: skip
        if not (isinstance(power_period_s, (int, float)) and 0 < power_period_s < math.inf):
            raise ConfigError(f"power_period_s = {power_period_s!r}: must be seconds > 0")
        key = ts.engine_key(configuration, emulate_link=emulate_link or link is not None,
                            link_latency_s=link_latency_s, lean=lean, overlap=overlap,
                            devices=(device_new, device_old))  # fmt: skip
        if link is None and key.link_gbps:
            from greenllm.engine import LinkEmulation

            link = LinkEmulation(key.link_gbps, key.link_latency_s)
        if key.mode not in ("dsd", "dpd"):
            link = None
        self.configuration = configuration
        self.model = model if model is not None else configuration.target_model
        self.power_period_s = float(power_period_s)
        engine_args = dict(k=key.k, device_new=key.device_new, device_old=key.device_old,
                           overlap=key.overlap, lean=key.lean, link=link,
                           **(engine_options or {}))  # fmt: skip
        self._new_engine = lambda: Engine(key.mode, key.target, key.draft, **engine_args)
        self.engine = self._new_engine()
        self._context = ts.max_context(key.target)
        roles = ROLES[configuration.kind]
        self._devices = tuple(
            Device(gpu, role) for gpu, role in zip(configuration.gpus, roles, strict=True)
        )
        self._sides = ("new", "old")[: len(self._devices)]
        self._running = False
        self._stopped = False
        self._sampler: PowerSampler | None = None
        self.energy_source: Literal["measured", "modelled"] = (
            "measured" if self._nvml_indices() is not None else "modelled"
        )
        self._busy_lock = threading.Lock()
        self._busy: tuple[float, tuple[float, ...]] | None = None  # (time, busy_s per device)
        self._util: tuple[float, ...] = (0.0,) * len(self._devices)

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the engine's workers (in a thread) and wait until they are ready."""
        if self._running:
            return
        if self._stopped:
            raise UpstreamError("torch upstream: stopped; make a new one", retryable=False)
        await asyncio.to_thread(self.engine.start)
        self._running = True

    async def recover(self) -> None:
        """Replace the engine by a fresh one with the same arguments (its dead workers' requests
        have failed already; new requests get 503 until it is up)."""
        if self._stopped:
            return
        self._running = False
        old, self.engine = self.engine, self._new_engine()
        await asyncio.to_thread(old.close)
        with self._busy_lock:
            self._busy = None
        await asyncio.to_thread(self.engine.start)
        self._running = True

    async def stop(self) -> None:
        """Stop every worker (idempotent)."""
        self._running, self._stopped = False, True
        await asyncio.to_thread(self.engine.close)

    @property
    def ready(self) -> bool:
        return self._running and all(w["alive"] for w in self.engine.workers if w["side"] == "new")

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._devices

    @property
    def tokenizer(self) -> Any:
        """The target model's tokenizer (loaded by :meth:`start`)."""
        return self.engine.tokenizer

    # ---- energy --------------------------------------------------------------------------------
    def _nvml_indices(self) -> list[int] | None:
        """The CUDA indices of the roles' devices when NVML can measure them apart."""
        devices = [self.engine.devices[s] for s in self._sides]
        indices = [_cuda_index(d) for d in devices]
        if any(i is None for i in indices) or len(set(indices)) != len(indices):
            return None
        from greenllm.energy import nvml_available

        return [int(i) for i in indices if i is not None] if nvml_available() else None

    def power_sampler(self) -> PowerSampler:
        """NVML over the engine's GPUs (``energy_source == "measured"``), else the modelled
        sampler of the module docstring; devices are :meth:`Device.key` values."""
        if self._sampler is not None:
            return self._sampler
        keys = [d.key for d in self._devices]
        indices = self._nvml_indices() if self.energy_source == "measured" else None
        if indices is not None:
            self._sampler = _NamedNVML(dict(zip(indices, keys, strict=True)), self.power_period_s)
            return self._sampler
        models = [power_model(d.gpu) for d in self._devices]

        def power(_elapsed_s: float) -> dict[str, float]:
            util = self._utilisation()
            return {k: m.power_w(u) for k, m, u in zip(keys, models, util, strict=True)}

        self._sampler = ModelledSampler(power, devices=keys, period_s=self.power_period_s)
        return self._sampler

    def _utilisation(self) -> tuple[float, ...]:
        """Busy seconds per second of each device since the last refresh (refreshed at most
        every second; one GPU of standalone/spec_decode counts both sides' busy time)."""
        with self._busy_lock:
            now = time.monotonic()
            if self._busy is not None and now - self._busy[0] < _STATS_EVERY_S:
                return self._util
            if not self._running:
                self._busy, self._util = None, (0.0,) * len(self._devices)
                return self._util
            try:
                stats = self.engine.stats(timeout_s=1.0)
            except GreenLLMError:
                return self._util
            busy = tuple(stats.busy_s(s) for s in self._sides)
            if len(busy) == 1:
                busy = (stats.busy_s("new") + stats.busy_s("old"),)
            if self._busy is not None:
                dt = now - self._busy[0]
                self._util = tuple(min(1.0, max(0.0, (b - b0) / dt))
                                   for b, b0 in zip(busy, self._busy[1], strict=True))  # fmt: skip
            self._busy = (now, busy)
            return self._util

    # ---- requests ------------------------------------------------------------------------------
    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids (chat template for messages; ConfigError if impossible)."""
        tok = self.tokenizer
        if request.messages is not None:
            if tok is None or not getattr(tok, "chat_template", None):
                raise ConfigError(f"model {self.model!r} has no chat template: use completions")
            ids = tok.apply_chat_template(list(request.messages), add_generation_prompt=True,
                                          tokenize=True, return_dict=False)  # fmt: skip
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            ids = list(ids[0]) if ids and isinstance(ids[0], list) else list(ids)
        elif isinstance(request.prompt, str):
            if tok is None:
                raise ConfigError(f"model {self.model!r} has no tokenizer: send token ids")
            ids = list(tok(request.prompt)["input_ids"])
        elif request.prompt is not None:
            ids = [int(t) for t in request.prompt]
        else:
            raise ConfigError(f"request {request.request_id!r}: no prompt and no messages")
        if not ids:
            raise ConfigError(f"request {request.request_id!r}: the prompt is empty")
        if len(ids) + request.max_tokens > self._context:
            raise ConfigError(f"prompt ({len(ids)} tokens) + max_tokens ({request.max_tokens}) "
                              f"exceed the model's context of {self._context} tokens")  # fmt: skip
        return [int(t) for t in ids]

    def sampling(self, request: GenerationRequest) -> Any:
        """The engine's :class:`~greenllm.engine.SamplingParams` for ``request``."""
        from greenllm.engine import SamplingParams

        eos = getattr(self.tokenizer, "eos_token_id", None)
        stops = () if request.ignore_eos or eos is None else (int(eos),)
        return SamplingParams(temperature=float(request.temperature), top_p=float(request.top_p),
                              max_tokens=int(request.max_tokens), seed=request.seed,
                              stop_token_ids=stops)  # fmt: skip

    def _decode(self, ids: list[int]) -> str:
        tok = self.tokenizer
        return "" if tok is None else str(tok.decode(ids, skip_special_tokens=True))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        """The request's text as the engine produces it (see the module docstring)."""
        if not self.ready:
            raise UpstreamError("torch upstream: the engine is not running", retryable=True)
        ids = self.encode(request)
        sampling = self.sampling(request)
        stops = tuple(s for s in request.stop if s)
        tokens: list[int] = []
        sent = ""  # text already streamed
        yielded = False
        try:
            async with contextlib.aclosing(self.engine.stream(ids, sampling)) as events:
                async for event in events:
                    tokens += event.tokens
                    time_s = event.times_s[-1] if event.times_s else time.time()
                    full = self._decode(tokens)
                    cut = min((i for i in (full.find(s, max(0, len(sent) - len(s) + 1))
                                           for s in stops) if i >= 0), default=-1)  # fmt: skip
                    if cut >= 0:  # a stop string: cut before it, abort the rest (aclosing)
                        yield TokenChunk(full[len(sent):cut], tuple(event.tokens), time_s, "stop",
                                         len(ids), len(tokens))  # fmt: skip
                        return
                    if event.last:
                        out = event.output
                        reason: Literal["stop", "length"] = "length"
                        if out is not None and out.finish_reason == "stop":
                            reason = "stop"
                        yield TokenChunk(full[len(sent):], tuple(event.tokens), time_s, reason,
                                         len(ids), len(tokens))  # fmt: skip
                        return
                    ready = full[: len(full) - held_back_chars(full, stops)]
                    while ready.endswith("\ufffd"):  # a character still incomplete
                        ready = ready[:-1]
                    delta = ready[len(sent) :] if ready.startswith(sent) else ""
                    sent += delta
                    yield TokenChunk(delta, tuple(event.tokens), time_s)
                    yielded = True
        except WorkerError as err:
            raise UpstreamError(f"torch upstream: {err}", retryable=not yielded) from err

    def stats(self) -> UpstreamStats:
        """Speculative tokens proposed/accepted and, in ``extra``, busy seconds per device,
        link bytes, DPD re-runs, DSD fallbacks and requests in flight."""
        extra: dict[str, float] = {"requests_in_flight": float(len(self.engine.in_flight()))}
        if not self._running:
            return UpstreamStats(extra=extra)
        try:
            s = self.engine.stats(timeout_s=1.0)
        except GreenLLMError:
            return UpstreamStats(extra=extra)
        for d, side in zip(self._devices, self._sides, strict=True):
            extra[f"busy_s:{d.key}"] = s.busy_s(side)
        extra.update(link_bytes=float(s.link_bytes), reruns=float(s.reruns),
                     fallback_requests=float(s.fallback_requests))  # fmt: skip
        return UpstreamStats(s.proposed_tokens, s.accepted_tokens, extra)

    def __repr__(self) -> str:
        return f"TorchUpstream({self.configuration.label}, running={self._running})"
