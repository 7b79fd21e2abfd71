"""The gateway's core: admission, retry, timeouts, receipts and metrics around an upstream.

:class:`Gateway` knows nothing of HTTP (:mod:`greenllm.serve.app` puts FastAPI in front of it).
A request is admitted while fewer than ``max_inflight`` are in flight (else 429 with
``Retry-After``), charged to the carbon meter from admission to its last token
(:class:`~greenllm.serve.receipts.ReceiptLedger`), streamed from the upstream with a timeout on
every wait for the next chunk, and retried once if the upstream failed before its first token
(:class:`~greenllm.serve.upstream.UpstreamError` with ``retryable``). A request whose consumer
goes away (the client disconnected) closes the upstream stream, which cancels its work.

**Switching configuration, make-before-break** (:meth:`Gateway.switch`): the new
configuration's engines start and answer a one-token warm-up request while the old one keeps
serving; then new requests go to the new one, the old one finishes what it has in flight and
only then stops. Each configuration has its own meter and ledger (its own GPUs), so a request
is charged to the GPUs that served it; the switch itself (engine start and warm-up: the new
GPUs' power and allocated time) is recorded as a :class:`SwitchRecord`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from greenllm.carbon import embodied_carbon_g, operational_carbon_g
from greenllm.config import SLO
from greenllm.energy import CarbonMeter, MeterWindow, power_model
from greenllm.errors import ConfigError
from greenllm.serve.metrics import GatewayMetrics
from greenllm.serve.protocol import APIError
from greenllm.serve.receipts import LedgerTotals, Receipt, ReceiptLedger
from greenllm.serve.tasks import cancel_and_wait
from greenllm.serve.upstream import GenerationRequest, TokenChunk, Upstream, UpstreamError

__all__ = [
    "Deployment",
    "Finished",
    "Gateway",
    "GatewaySettings",
    "Observation",
    "SwitchRecord",
]

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


@dataclass(frozen=True)
class Observation:
    """A request that ended, as the gateway's observers see it (e.g. the controller)."""

    receipt: Receipt
    status: str
    """``ok``, ``error`` or ``cancelled``."""
    ttft_s: float | None
    tpot_s: float | None
    met_slo: bool


@dataclass
class Deployment:
    """One configuration being served: its upstream, and the meter and ledger of its GPUs."""

    upstream: Upstream
    meter: CarbonMeter
    ledger: ReceiptLedger
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    started_s: float = 0.0
    """Seconds its engines took to start (the upstream's clock: wall, or a simulator's)."""

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def label(self) -> str:
        return self.upstream.configuration.label

    def totals(self) -> LedgerTotals:
        """Charged to its finished requests so far."""
        return self.ledger.totals


@dataclass(frozen=True)
class SwitchRecord:
    """One make-before-break switch: timings (seconds of the upstreams' clock: wall, or a
    simulator's) and what it cost.

    ``energy_j`` and ``embodied_g``/``operational_g`` are the new configuration's GPUs from
    the start of its engines to the end of the warm-up (idle power while starting, the warm-up
    request's power, Eq. 1 on the allocated time), plus the old configuration's GPUs while
    they sat idle and no request was left to carry it (``old_idle_g``); the rest of the old
    GPUs' time is charged to the requests they finish."""

    from_label: str
    to_label: str
    reason: str
    at_s: float
    start_s: float
    warmup_s: float
    drain_s: float
    energy_j: float
    embodied_g: float
    operational_g: float
    requests_drained: int
    old_idle_g: float = 0.0

    @property
    def total_g(self) -> float:
        return self.embodied_g + self.operational_g

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.from_label, "to": self.to_label, "reason": self.reason,
                "at_s": self.at_s, "start_s": self.start_s, "warmup_s": self.warmup_s,
                "drain_s": self.drain_s, "energy_j": self.energy_j,
                "embodied_g": self.embodied_g, "operational_g": self.operational_g,
                "total_g": self.total_g, "requests_drained": self.requests_drained,
                "old_idle_g": self.old_idle_g}  # fmt: skip


class Gateway:
    """One configuration at a time served from an upstream, with receipts and metrics;
    :meth:`switch` moves to another configuration without dropping a request.

    Intensity: ``region`` (e.g. ``"CISO"``) or ``intensity_g_per_kwh`` (default: CISO, as
    :class:`~greenllm.energy.CarbonMeter`); :meth:`set_intensity` changes it for requests
    admitted afterwards. ``slo``: the latency objective the ``greenllm_slo_attainment`` metric
    counts against (default: 1 s TTFT, 100 ms TPOT). ``metrics``: shared with other gateways
    (the replicas of a deployment, :class:`~greenllm.serve.fleet.FleetGateway`).
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
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self._first = upstream
        self.settings = settings or GatewaySettings()
        self.slo = slo or SLO(ttft_s=1.0, tpot_s=0.1)
        self._meter_args: dict[str, Any] = dict(
            region=region, intensity_g_per_kwh=intensity_g_per_kwh, lifetimes_years=lifetimes_years
        )
        self.metrics = metrics or GatewayMetrics(
            configuration_label=upstream.configuration.label,
            acceptance_rate=lambda: self.upstream.stats().acceptance_rate,
        )
        self.active: Deployment | None = None
        self.retired: list[Deployment] = []
        """Configurations switched away from (stopped), with their totals."""
        self.switches: list[SwitchRecord] = []
        self.inflight = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._switching = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self.recoveries = 0
        """Times the upstream was brought back after it stopped being ready."""
        self.observers: list[Callable[[Observation], None]] = []
        """Called with an :class:`Observation` of every request that ends (any status)."""
        self.admission_observers: list[Callable[[float], None]] = []
        """Called with the upstream clock's time of every request admitted."""

    # ---- state ---------------------------------------------------------------------------------
    @property
    def upstream(self) -> Upstream:
        """The upstream new requests go to."""
        return self.active.upstream if self.active is not None else self._first

    @property
    def label(self) -> str:
        return self.upstream.configuration.label

    @property
    def meter(self) -> CarbonMeter | None:
        return self.active.meter if self.active is not None else None

    @property
    def ledger(self) -> ReceiptLedger | None:
        return self.active.ledger if self.active is not None else None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def _deploy(self, upstream: Upstream, warm_up: bool = False) -> tuple[Deployment, Any]:
        """Start ``upstream``, open its meter and (after the warm-up request, if asked, in a
        window of its own) its ledger. Returns the deployment and the warm-up's report."""
        t0 = time.monotonic()
        meter = report = None
        try:
            await upstream.start()
            started_s = upstream.modelled_start_s
            if started_s is None:
                started_s = (time.monotonic() - t0) * upstream.time_scale
            meter = CarbonMeter([d.gpu for d in upstream.devices],
                                sampler=upstream.power_sampler(), **self._meter_args)  # fmt: skip
            if warm_up:
                with meter.window("warm-up") as win:
                    await self._warm_up(upstream)
                report = win.report
                meter.reports.clear()
        except BaseException:
            if meter is not None:
                meter.close()
            await upstream.stop()  # whatever part of it started
            raise
        ledger = ReceiptLedger(meter, upstream.configuration.label, upstream.energy_source)
        return Deployment(upstream, meter, ledger, started_s=started_s), report

    async def start(self) -> None:
        """Start the upstream and the meter (idempotent)."""
        if self._started:
            return
        self.active, _ = await self._deploy(self._first)
        if self.active.meter.intensity_g_per_kwh is not None:
            self.metrics.intensity.set(self.active.meter.intensity_g_per_kwh)
        self._started = True
        self._watcher = asyncio.create_task(self._watch(), name="gateway-upstream-watch")
        logger.info("gateway serving %s on %s (%s)", self.upstream.model, self.label,
                    self.upstream.backend)  # fmt: skip

    async def stop(self) -> None:
        """Refuse new requests, let in-flight ones finish (up to ``drain_timeout_s``), then
        stop the upstream and the meter."""
        self.draining = True
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(watcher)
        if self.inflight:
            logger.info("draining %d request(s)", self.inflight)
            try:
                async with asyncio.timeout(self.settings.drain_timeout_s):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning("%d request(s) still running after the drain timeout",
                               self.inflight)  # fmt: skip
        if self.active is not None:
            await self._retire(self.active)
        else:
            await self._first.stop()
        self._started = False

    async def _retire(self, dep: Deployment) -> LedgerTotals:
        """Stop ``dep``; the idle time no request carried (not in its ledger's totals)."""
        await dep.upstream.stop()
        idle = dep.ledger.close_idle()
        dep.meter.close()
        return idle

    async def switch(self, upstream: Upstream, reason: str = "") -> SwitchRecord:
        """Serve ``upstream``'s configuration from now on, make-before-break: start its
        engines and warm them with a one-token request while the current configuration keeps
        serving, send new requests to it, let the old one finish its requests in flight (up to
        ``drain_timeout_s``), then stop the old one. On a failure to start or warm up, the new
        engines are stopped, the current configuration stays, and the error is raised."""
        if not self._started or self.active is None:
            raise ConfigError("Gateway.switch: start the gateway first")
        async with self._switching:
            old = self.active
            at_s = time.time()
            t0 = time.monotonic()
            new, warm = await self._deploy(upstream, warm_up=True)
            scale = upstream.time_scale
            warmup_s = (time.monotonic() - t0) * scale - new.started_s
            if self.draining:  # the gateway is stopping: keep nothing new running
                await self._retire(new)
                raise ConfigError("Gateway.switch: the gateway is shutting down")
            start = self._start_cost(new)
            self.active = new
            self.metrics.set_configuration(new.label)
            logger.warning("switched %s -> %s (%s); draining %d request(s) on %s", old.label,
                           new.label, reason or "asked", old.inflight, old.label)  # fmt: skip
            t_drain = time.monotonic()
            drained = old.inflight
            if old.inflight:
                try:
                    async with asyncio.timeout(self.settings.drain_timeout_s):
                        await old.idle.wait()
                except TimeoutError:
                    logger.warning("%d request(s) still on %s after the drain timeout",
                                   old.inflight, old.label)  # fmt: skip
            idle = await self._retire(old)
            self.retired.append(old)
            idle_g = idle.embodied_g + idle.operational_g
            record = SwitchRecord(
                from_label=old.label, to_label=new.label, reason=reason, at_s=at_s,
                start_s=new.started_s, warmup_s=warmup_s,
                drain_s=(time.monotonic() - t_drain) * old.upstream.time_scale,
                energy_j=warm.energy_j + start[0] + old.meter.pue * sum(idle.energy_j.values()),
                embodied_g=warm.embodied_g + start[1] + idle.embodied_g,
                operational_g=warm.operational_g + start[2] + idle.operational_g,
                requests_drained=drained, old_idle_g=idle_g,
            )  # fmt: skip
            self.switches.append(record)
            return record

    async def _warm_up(self, upstream: Upstream) -> None:
        request = GenerationRequest(f"warmup-{len(self.switches)}", max_tokens=1, prompt="Hello",
                                    temperature=0.0)  # fmt: skip
        async with asyncio.timeout(self.settings.chunk_timeout_s):
            async for _ in upstream.stream(request):
                pass

    def _start_cost(self, dep: Deployment) -> tuple[float, float, float]:
        """Energy (J, facility), embodied and operational carbon (g) of ``dep``'s engine start:
        its GPUs at the power model's idle power for the start time (Eq. 2), allocated
        meanwhile (Eq. 1)."""
        meter, seconds = dep.meter, dep.started_s
        joules = meter.pue * seconds * sum(power_model(d.gpu).power_w(0.0)
                                           for d in dep.upstream.devices)  # fmt: skip
        pairs = zip(meter.gpus, meter.lifetimes_years, strict=True)
        embodied = sum(float(embodied_carbon_g(seconds, g, life)) for g, life in pairs)
        if meter.intensity_g_per_kwh is not None:
            intensity = meter.intensity_g_per_kwh
        else:
            assert meter.trace is not None
            now = time.time()
            intensity = float(meter.trace.mean(now - seconds, now)) if seconds > 0 else 0.0
        return joules, embodied, float(operational_carbon_g(joules, intensity))

    def set_intensity(self, g_per_kwh: float, source: str) -> None:
        """Charge requests that finish from now on at ``g_per_kwh`` (a live provider's value);
        the ``greenllm_grid_carbon_intensity_g_per_kwh`` gauge follows."""
        if self.active is not None:  # later configurations get it from _meter_args
            self.active.meter.set_intensity(g_per_kwh, source)
        self._meter_args.update(region=None, intensity_g_per_kwh=float(g_per_kwh))
        self.metrics.intensity.set(g_per_kwh)

    def totals(self) -> dict[str, float]:
        """Everything charged so far, every configuration served and every switch included:
        ``requests``, ``completion_tokens``, ``energy_j``, ``embodied_g``, ``operational_g``,
        ``switch_g``, ``total_g``."""
        deps = [*self.retired, *([self.active] if self.active is not None else [])]
        t = [d.ledger.totals for d in deps]
        out = {
            "requests": float(sum(x.requests for x in t)),
            "completion_tokens": float(sum(x.completion_tokens for x in t)),
            "energy_j": sum(sum(x.energy_j.values()) for x in t),
            "embodied_g": sum(x.embodied_g for x in t),
            "operational_g": sum(x.operational_g for x in t),
            "switch_g": sum(r.total_g for r in self.switches),
        }
        out["total_g"] = out["embodied_g"] + out["operational_g"] + out["switch_g"]
        return out

    async def _watch(self) -> None:
        """While the upstream is not ready, call :meth:`Upstream.recover` with exponential
        backoff (``restart_backoff_s``); ``/ready`` answers 503 meanwhile."""
        first, longest = self.settings.restart_backoff_s
        delay = first
        while not self.draining:
            await asyncio.sleep(self.settings.health_period_s)
            upstream = self.upstream
            if upstream.ready or self.draining:
                delay = first
                continue
            logger.warning("the %s upstream is not ready: recovering it", upstream.backend)
            try:
                await upstream.recover()
            except Exception as err:
                logger.warning("recovery failed (%s); next try in %g s", err, delay)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
                continue
            if upstream.ready:
                self.recoveries += 1
                logger.warning("the %s upstream is ready again", upstream.backend)
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
        dep = self.active
        assert dep is not None  # admitted: started
        self.inflight += 1
        dep.inflight += 1
        self._idle.clear()
        dep.idle.clear()
        self.metrics.inflight.inc()
        win = dep.ledger.open(request.request_id)
        closed = False
        t0 = dep.upstream.clock_s()
        for admitted in self.admission_observers:
            admitted(t0)
        first_s = last_s = None
        completion = prompt = 0
        finish_reason = "error"
        status = "error"
        stream = self._stream(request, dep.upstream)
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
                dep.ledger.settle()  # an idle window it ended: closed after its first token
            status = "ok" if finish_reason != "error" else "error"
            receipt, ttft, tpot = self._close(dep, win, request, prompt, completion, t0, first_s,
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
                    self._close(dep, win, request, prompt, completion, t0, first_s, last_s,
                                status)  # fmt: skip

    def _close(
        self,
        dep: Deployment,
        win: MeterWindow,
        request: GenerationRequest,
        prompt: int,
        completion: int,
        t0: float,
        first_s: float | None,
        last_s: float | None,
        status: str,
    ) -> tuple[Receipt, float | None, float | None]:
        receipt = dep.ledger.close(win, request.request_id, prompt, completion)
        ttft = None if first_s is None else max(0.0, first_s - t0)
        tpot = None
        if first_s is not None and last_s is not None and completion > 1:
            tpot = max(0.0, last_s - first_s) / (completion - 1)
        met = (status == "ok" and ttft is not None and ttft <= self.slo.ttft_s
               and (tpot is None or tpot <= self.slo.tpot_s))  # fmt: skip
        self.metrics.observe(receipt, ttft if status == "ok" else None,
                             tpot if status == "ok" else None, met)  # fmt: skip
        self.metrics.requests.labels(status).inc()
        if self.observers:
            seen = Observation(receipt, status, ttft, tpot, met)
            for observe in self.observers:
                observe(seen)
        self.metrics.inflight.dec()
        self.inflight -= 1
        dep.inflight -= 1
        if self.inflight == 0:
            self._idle.set()
        if dep.inflight == 0:
            dep.idle.set()
        return receipt, ttft, tpot

    async def _stream(
        self, request: GenerationRequest, upstream: Upstream
    ) -> AsyncGenerator[TokenChunk, None]:
        """The upstream's chunks, a timeout on each, one retry before the first token."""
        timeout = self.settings.chunk_timeout_s
        for attempt in (1, 2):
            stream = upstream.stream(request)
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
