"""Serving a fleet deployment: each workload's traffic to its replicas in proportion to the
split (``greenllm fleet plan --out``, served by ``greenllm serve --deployment``).

Clients name the workload as the model (``"model": "chat"``); :class:`FleetGateway` keeps one
:class:`~greenllm.serve.gateway.Gateway` per replica (its own upstream, meter and receipts:
a request is charged to the GPUs of the replica that served it) and picks the replica by
smooth weighted round-robin over the workload's **ready** replicas, weighted by the QPS the
deployment gives each. A replica that stops being ready drops out of the rotation, so its
share moves to the others, and comes back when its gateway has recovered it. All replicas
share one set of Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from greenllm.errors import ConfigError
from greenllm.serve.gateway import Finished, Gateway, GatewaySettings, SwitchRecord
from greenllm.serve.metrics import GatewayMetrics
from greenllm.serve.protocol import APIError
from greenllm.serve.upstream import GenerationRequest, TokenChunk, Upstream

__all__ = ["FleetGateway", "Replica"]


@dataclass
class Replica:
    """One replica of a workload: its gateway and its weight (the QPS the split gives it)."""

    gateway: Gateway
    weight: float
    current: float = field(default=0.0, repr=False)  # smooth weighted round-robin state
    served: int = 0


class FleetGateway:
    """Several workloads, each a pool of replicas (see the module docstring); the same surface
    as :class:`Gateway` for :func:`~greenllm.serve.app.create_app` and the server."""

    def __init__(self, pools: Mapping[str, Sequence[Replica]], settings: GatewaySettings,
                 metrics: GatewayMetrics) -> None:  # fmt: skip
        if not pools or any(not reps for reps in pools.values()):
            raise ConfigError("FleetGateway: every workload needs at least one replica")
        for name, reps in pools.items():
            for r in reps:
                if not (math.isfinite(r.weight) and r.weight > 0):
                    raise ConfigError(f"FleetGateway: workload {name!r}: weight {r.weight!r} "
                                      "must be > 0")  # fmt: skip
        self.pools = {name: list(reps) for name, reps in pools.items()}
        self.settings, self.metrics = settings, metrics
        self.draining = False
        self._started = False
        self.switches: list[SwitchRecord] = []

    @classmethod
    def build(cls, pools: Mapping[str, Sequence[tuple[Upstream, float]]],
              settings: GatewaySettings | None = None, **gateway_args: Any) -> FleetGateway:
        """Gateways for ``{workload: [(upstream, weight), ...]}`` sharing one set of metrics;
        ``gateway_args`` go to every :class:`Gateway` (intensity, region, SLO)."""  # fmt: skip
        settings = settings or GatewaySettings()
        if not pools or any(not reps for reps in pools.values()):
            raise ConfigError("FleetGateway: every workload needs at least one replica")
        first = next(iter(pools.values()))[0][0]
        metrics = GatewayMetrics(configuration_label=first.configuration.label)
        built = {name: [Replica(Gateway(up, settings, metrics=metrics, **gateway_args), w)
                        for up, w in reps] for name, reps in pools.items()}  # fmt: skip
        for reps in built.values():
            for r in reps:
                metrics.mark_served(r.gateway.label)
        return cls(built, settings, metrics)

    @property
    def replicas(self) -> list[Replica]:
        return [r for reps in self.pools.values() for r in reps]

    # ---- the Gateway surface ----------------------------------------------------------------
    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.pools)

    @property
    def label(self) -> str:
        n = len(self.replicas)
        return f"deployment: {n} replica{'s' * (n != 1)} of {len(self.pools)} workload(s)"

    @property
    def upstream(self) -> Upstream:
        return self.replicas[0].gateway.upstream

    @property
    def ready(self) -> bool:
        return (self._started and not self.draining
                and all(any(r.gateway.ready for r in reps) for reps in self.pools.values()))

    async def start(self) -> None:
        await asyncio.gather(*(r.gateway.start() for r in self.replicas))
        self._started = True

    async def stop(self) -> None:
        self.draining = True
        await asyncio.gather(*(r.gateway.stop() for r in self.replicas))
        self._started = False

    def admit(self) -> None:
        if not self.ready:
            reason = "shutting down" if self.draining else "not ready (engines starting)"
            raise APIError(503, f"the server is {reason}; retry later", type="server_error",
                           code="not_ready", headers={"Retry-After": "5"})  # fmt: skip

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.replicas:
            for k, v in r.gateway.totals().items():
                out[k] = out.get(k, 0.0) + v
        return out

    def pick(self, workload: str) -> Replica:
        """The next replica of ``workload`` (smooth weighted round-robin over ready ones)."""
        reps = self.pools.get(workload)
        if reps is None:
            raise APIError(404, f"model '{workload}' does not exist; this deployment serves "
                           f"{', '.join(self.pools)}", type="not_found_error", param="model",
                           code="model_not_found")  # fmt: skip
        live = [r for r in reps if r.gateway.ready]
        if not live:
            raise APIError(503, f"no replica of {workload!r} is ready; retry later",
                           type="server_error", code="not_ready",
                           headers={"Retry-After": "5"})  # fmt: skip
        total = sum(r.weight for r in live)
        for r in live:
            r.current += r.weight
        best = max(live, key=lambda r: r.current)
        best.current -= total
        best.served += 1
        return best

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenChunk | Finished]:
        """Route ``request`` by its model (the workload) and stream the replica's events."""
        name = request.model if request.model is not None else next(iter(self.pools))
        inner = cast(AsyncGenerator[TokenChunk | Finished, None],
                     self.pick(name).gateway.generate(request))  # it is one (an async def)
        try:
            async for event in inner:
                yield event
        finally:
            await inner.aclose()  # a client that left cancels the replica's work now
