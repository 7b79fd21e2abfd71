"""Serving: ``greenllm serve``, an OpenAI-compatible gateway with a carbon receipt per response.

- :class:`Gateway` (:mod:`~greenllm.serve.gateway`): admission, retry, timeouts, receipts and
  metrics around one configuration's engines, switched make-before-break
  (:class:`SwitchRecord`, :class:`Deployment`); :class:`GatewaySettings` its limits;
- :class:`Controller` (:mod:`~greenllm.serve.controller`): re-plans the configuration as grid
  intensity and load change (:class:`ControllerSettings`, :class:`LoadMonitor`), with an SLO
  guard and a JSONL audit log;
- :class:`FleetGateway` (:mod:`~greenllm.serve.fleet`): a fleet deployment, each workload's
  requests to its replicas (:class:`Replica`) in proportion to the split;
  :class:`Finished` the last event of a request;
- :func:`create_app` (:mod:`~greenllm.serve.app`): the FastAPI app (OpenAI routes, health,
  readiness, Prometheus metrics); :func:`run_server` (:mod:`~greenllm.serve.server`) runs it
  under uvicorn;
- the upstream interface (:mod:`~greenllm.serve.upstream`): :class:`Upstream`,
  :class:`GenerationRequest`, :class:`TokenChunk`, :class:`Device`, :class:`UpstreamError`,
  :class:`UpstreamStats`; the implementations are in :mod:`greenllm.serve.upstreams`;
- receipts (:mod:`~greenllm.serve.receipts`): :class:`Receipt`, :class:`ReceiptLedger`;
  metrics (:mod:`~greenllm.serve.metrics`): :class:`GatewayMetrics`; the OpenAI request
  models and error (:mod:`~greenllm.serve.protocol`): :class:`APIError`.

Names are imported lazily: ``import greenllm.serve`` imports neither FastAPI nor uvicorn (the
``serve`` extra); see docs/serve.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greenllm.lazy import lazy_exports

_LAZY: dict[str, str] = {
    "Gateway": "greenllm.serve.gateway",
    "GatewaySettings": "greenllm.serve.gateway",
    "Finished": "greenllm.serve.gateway",
    "Deployment": "greenllm.serve.gateway",
    "SwitchRecord": "greenllm.serve.gateway",
    "Observation": "greenllm.serve.gateway",
    "Controller": "greenllm.serve.controller",
    "ControllerSettings": "greenllm.serve.controller",
    "LoadMonitor": "greenllm.serve.controller",
    "FleetGateway": "greenllm.serve.fleet",
    "Replica": "greenllm.serve.fleet",
    "create_app": "greenllm.serve.app",
    "run_server": "greenllm.serve.server",
    "bind_socket": "greenllm.serve.server",
    "Upstream": "greenllm.serve.upstream",
    "GenerationRequest": "greenllm.serve.upstream",
    "TokenChunk": "greenllm.serve.upstream",
    "Device": "greenllm.serve.upstream",
    "UpstreamError": "greenllm.serve.upstream",
    "UpstreamStats": "greenllm.serve.upstream",
    "Receipt": "greenllm.serve.receipts",
    "ReceiptLedger": "greenllm.serve.receipts",
    "LedgerTotals": "greenllm.serve.receipts",
    "GatewayMetrics": "greenllm.serve.metrics",
    "APIError": "greenllm.serve.protocol",
    "CompletionRequest": "greenllm.serve.protocol",
    "ChatCompletionRequest": "greenllm.serve.protocol",
    "parse_request": "greenllm.serve.protocol",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:  # pragma: no cover
    from greenllm.serve.app import create_app  # noqa: F401
    from greenllm.serve.controller import Controller, ControllerSettings, LoadMonitor  # noqa: F401
    from greenllm.serve.fleet import FleetGateway, Replica  # noqa: F401
    from greenllm.serve.gateway import (  # noqa: F401
        Deployment,
        Finished,
        Gateway,
        GatewaySettings,
        Observation,
        SwitchRecord,
    )
    from greenllm.serve.metrics import GatewayMetrics  # noqa: F401
    from greenllm.serve.protocol import (  # noqa: F401
        APIError,
        ChatCompletionRequest,
        CompletionRequest,
        parse_request,
    )
    from greenllm.serve.receipts import LedgerTotals, Receipt, ReceiptLedger  # noqa: F401
    from greenllm.serve.server import bind_socket, run_server  # noqa: F401
    from greenllm.serve.upstream import (  # noqa: F401
        Device,
        GenerationRequest,
        TokenChunk,
        Upstream,
        UpstreamError,
        UpstreamStats,
    )
