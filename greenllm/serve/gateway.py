"""The gateway's core: admission, retry, timeouts, receipts and metrics around an upstream.

:class:`Gateway` knows nothing of HTTP (:mod:`greenllm.serve.app` puts FastAPI in front of it).
A request is admitted while fewer than ``max_inflight`` are in flight (else 429 with
``Retry-After``), charged to the carbon meter from admission to its last token
(:class:`~greenllm.serve.receipts.ReceiptLedger`), streamed from the upstream with a timeout on
every wait for the next chunk, and retried once if the upstream failed before its first token
(:class:`~greenllm.serve.upstream.UpstreamError` with ``retryable``). A request whose consumer
goes away (the client disconnected) closes the upstream stream, which cancels its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from greenllm.config import SLO
from greenllm.energy import CarbonMeter, MeterWindow
from greenllm.errors import ConfigError
from greenllm.serve.metrics import GatewayMetrics
from greenllm.serve.protocol import APIError
from greenllm.serve.receipts import Receipt, ReceiptLedger
from greenllm.serve.upstream import GenerationRequest, TokenChunk, Upstream, UpstreamError

__all__ = ["Finished", "Gateway", "GatewaySettings"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewaySettings:
    """Limits and policies of one gateway (every field has a default)."""

    max_inflight: int = 256
    """Requests admitted at once; one more gets 429 with ``Retry-After``."""
    retry_after_s: int = 1
    """The ``Retry-After`` of a 429."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Largest request body (413 beyond)."""
    max_tokens_limit: int = 4096
    """Most output tokens one request may ask for (422 beyond)."""
    default_max_tokens: int = 16
    """Output tokens when a request gives no ``max_tokens`` (OpenAI's completions default)."""
    chunk_timeout_s: float = 300.0
    """Longest wait for an upstream's next chunk (first token included) before the request
    fails; a hung upstream never hangs a client."""
    drain_timeout_s: float = 30.0
    """On shutdown, how long in-flight requests may take to finish."""
    api_key: str | None = None
    """If set, ``/v1/*`` needs ``Authorization: Bearer <key>`` (401 otherwise)."""
    health_period_s: float = 1.0
    """How often the gateway checks that the upstream is ready."""
    restart_backoff_s: tuple[float, float] = (1.0, 60.0)
    """First and longest wait between recovery attempts of a not-ready upstream (doubling)."""

    def __post_init__(self) -> None:
        for name in ("max_inflight", "retry_after_s", "max_body_bytes", "max_tokens_limit",
                     "default_max_tokens"):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"GatewaySettings.{name} = {v!r}: must be an integer >= 1")
        lo, hi = self.restart_backoff_s
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 < lo <= hi):
            raise ConfigError(f"GatewaySettings.restart_backoff_s = {self.restart_backoff_s!r}: "
                              "need 0 < first <= longest (seconds)")  # fmt: skip
        for name in ("chunk_timeout_s", "drain_timeout_s", "health_period_s"):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v <= 0:
                raise ConfigError(f"GatewaySettings.{name} = {v!r}: must be seconds > 0")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ConfigError("GatewaySettings.default_max_tokens exceeds max_tokens_limit")
        if self.api_key is not None and not self.api_key:
            raise ConfigError("GatewaySettings.api_key is empty: give a key or None")


@dataclass(frozen=True)
class Finished:
    """The last event of a request: its receipt and latencies (upstream clock)."""

    receipt: Receipt
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    tpot_s: float | None


class Gateway:
    """One configuration served from ``upstream`` with receipts and metrics.

    Intensity: ``region`` (e.g. ``"CISO"``) or ``intensity_g_per_kwh`` (default: CISO, as
    :class:`~greenllm.energy.CarbonMeter`). ``slo``: the latency objective the
    ``greenllm_slo_attainment`` metric counts against (default: 1 s TTFT, 100 ms TPOT).
    """

    def __init__(
        self,
        upstream: Upstream,
        settings: GatewaySettings | None = None,
        *,
        region: str | None = None,
        intensity_g_per_kwh: float | None = None,
        lifetimes_years: float | Mapping[str, float] = 7.0,
        slo: SLO | None = None,
    ) -> None:
        self.upstream = upstream
        self.settings = settings or GatewaySettings()
        self.slo = slo or SLO(ttft_s=1.0, tpot_s=0.1)
        self.label = upstream.configuration.label
        self._meter_args: dict[str, Any] = dict(
            region=region, intensity_g_per_kwh=intensity_g_per_kwh, lifetimes_years=lifetimes_years
        )
        self.metrics = GatewayMetrics(
            configuration_label=self.label, acceptance_rate=lambda: upstream.stats().acceptance_rate
        )
        self.meter: CarbonMeter | None = None
        self.ledger: ReceiptLedger | None = None
        self.inflight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._watcher: asyncio.Task[None] | None = None
        self.recoveries = 0
        """Times the upstream was brought back after it stopped being ready."""

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the upstream and the meter (idempotent)."""
        if self._started:
            return
        await self.upstream.start()
        devices = self.upstream.devices
        self.meter = CarbonMeter(
            [d.gpu for d in devices], sampler=self.upstream.power_sampler(), **self._meter_args
        )
        self.ledger = ReceiptLedger(self.meter, self.label, self.upstream.energy_source)
        if self.meter.intensity_g_per_kwh is not None:
            self.metrics.intensity.set(self.meter.intensity_g_per_kwh)
        self._started = True
        self._watcher = asyncio.create_task(self._watch(), name="gateway-upstream-watch")
        logger.info("gateway serving %s on %s (%s)", self.upstream.model, self.label,
                    self.upstream.backend)  # fmt: skip

    async def stop(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to ``drain_timeout_s``), then
        stop the upstream and the meter."""
        self.draining = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.inflight:
            logger.info("draining %d request(s)", self.inflight)
            try:
                await asyncio.wait_for(self._idle.wait(), self.settings.drain_timeout_s)
            except TimeoutError:
                logger.warning("%d request(s) still running after the drain timeout",
                               self.inflight)  # fmt: skip
        await self.upstream.stop()
        if self.ledger is not None:
            self.ledger.close_idle()
        if self.meter is not None:
            self.meter.close()
        self._started = False

    async def _watch(self) -> None:
        """While the upstream is not ready, call :meth:`Upstream.recover` with exponential
        backoff (``restart_backoff_s``); ``/ready`` answers 503 meanwhile."""
        first, longest = self.settings.restart_backoff_s
        delay = first
        while not self.draining:
            await asyncio.sleep(self.settings.health_period_s)
            if self.upstream.ready or self.draining:
                delay = first
                continue
            logger.warning("the %s upstream is not ready: recovering it", self.upstream.backend)
            try:
                await self.upstream.recover()
            except Exception as err:
                logger.warning("recovery failed (%s); next try in %g s", err, delay)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
                continue
            if self.upstream.ready:
                self.recoveries += 1
                logger.warning("the %s upstream is ready again", self.upstream.backend)
                delay = first

    @property
    def ready(self) -> bool:
        return self._started and not self.draining and self.upstream.ready

    @property
    def models(self) -> tuple[str, ...]:
        return (self.upstream.model,)

    # ---- requests ------------------------------------------------------------------------------
    def admit(self) -> None:
        """Raise the API error for a request that cannot be admitted now (503 or 429)."""
        if not self.ready:
            reason = "shutting down" if self.draining else "not ready (engines starting)"
            raise APIError(503, f"the server is {reason}; retry later", type="server_error",
                           code="not_ready", headers={"Retry-After": "5"})  # fmt: skip
        if self.inflight >= self.settings.max_inflight:
            self.metrics.requests.labels("rejected").inc()
            raise APIError(
                429, f"the server is at its limit of {self.settings.max_inflight} requests in "
                "flight; retry after the Retry-After seconds", type="rate_limit_error",
                code="overloaded", headers={"Retry-After": str(self.settings.retry_after_s)},
            )  # fmt: skip

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk | Finished]:
        """Admit ``request`` and stream its chunks, then one :class:`Finished`.

        Raises :class:`APIError` (not admitted) before the first item and
        :class:`UpstreamError` when the upstream fails. Closing the iterator early cancels it.
        """
        self.admit()
        assert self.ledger is not None
        self.inflight += 1
        self._idle.clear()
        self.metrics.inflight.inc()
        win = self.ledger.open(request.request_id)
        closed = False
        t0 = self.upstream.clock_s()
        first_s = last_s = None
        completion = prompt = 0
        finish_reason = "error"
        status = "error"
        stream = self._stream(request)
        try:
            async for chunk in stream:
                if chunk.token_ids or chunk.text:
                    first_s = chunk.time_s if first_s is None else first_s
                    last_s = chunk.time_s
                completion += len(chunk.token_ids)
                if chunk.finish_reason is not None:
                    finish_reason = chunk.finish_reason
                    prompt = chunk.prompt_tokens or 0
                    completion = chunk.completion_tokens or completion
                yield chunk
            status = "ok" if finish_reason != "error" else "error"
            receipt, ttft, tpot = self._close(win, request, prompt, completion, t0, first_s,
                                              last_s, status)  # fmt: skip
            closed = True
            yield Finished(receipt, finish_reason, prompt, completion, ttft, tpot)
        except (GeneratorExit, asyncio.CancelledError):
            status = "cancelled"
            raise
        finally:
            try:
                await stream.aclose()  # cancels the upstream's work now, not at garbage collection
            finally:
                if not closed:
                    self._close(win, request, prompt, completion, t0, first_s, last_s, status)

    def _close(
        self,
        win: MeterWindow,
        request: GenerationRequest,
        prompt: int,
        completion: int,
        t0: float,
        first_s: float | None,
        last_s: float | None,
        status: str,
    ) -> tuple[Receipt, float | None, float | None]:
        assert self.ledger is not None
        receipt = self.ledger.close(win, request.request_id, prompt, completion)
        ttft = None if first_s is None else max(0.0, first_s - t0)
        tpot = None
        if first_s is not None and last_s is not None and completion > 1:
            tpot = max(0.0, last_s - first_s) / (completion - 1)
        met = (status == "ok" and ttft is not None and ttft <= self.slo.ttft_s
               and (tpot is None or tpot <= self.slo.tpot_s))  # fmt: skip
        self.metrics.observe(receipt, ttft if status == "ok" else None,
                             tpot if status == "ok" else None, met)  # fmt: skip
        self.metrics.requests.labels(status).inc()
        self.metrics.inflight.dec()
        self.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
        return receipt, ttft, tpot

    async def _stream(self, request: GenerationRequest) -> AsyncGenerator[TokenChunk, None]:
        """The upstream's chunks, a timeout on each, one retry before the first token."""
        timeout = self.settings.chunk_timeout_s
        for attempt in (1, 2):
            stream = self.upstream.stream(request)
            streamed = False
            try:
                while True:
                    try:
                        async with asyncio.timeout(timeout):  # no task per chunk (wait_for's)
                            chunk = await anext(stream)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise UpstreamError(
                            f"the upstream sent nothing for {timeout:g} s (chunk_timeout_s)",
                            retryable=not streamed,
                        ) from None
                    streamed = True
                    yield chunk
            except UpstreamError as err:
                if attempt == 1 and err.retryable and not streamed:
                    logger.warning("request %s: %s; retrying once", request.request_id, err)
                    continue
                raise
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
