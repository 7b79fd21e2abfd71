"""Prometheus metrics of the gateway (``GET /metrics``), one registry per gateway.

Names follow Prometheus conventions (base units in the name, ``_total`` counters, histograms
in seconds, like vLLM's ``vllm:time_to_first_token_seconds`` and Dynamo's frontend metrics),
prefixed ``greenllm_``:

==========================================  =========  =====================================
``greenllm_requests_total{status}``         counter    ``ok``, ``error``, ``cancelled``,
                                                       ``rejected`` (429), ``invalid`` (4xx)
``greenllm_time_to_first_token_seconds``    histogram  admission to first token
``greenllm_time_per_output_token_seconds``  histogram  per request: decode time / (tokens - 1)
``greenllm_inflight_requests``              gauge      admitted, not finished
``greenllm_energy_joules_total{gpu,role}``  counter    charged to finished requests
``greenllm_carbon_grams_total{scope}``      counter    ``embodied``, ``operational``
``greenllm_grid_carbon_intensity_g_per_kwh`` gauge     the intensity in use
``greenllm_slo_attainment``                 gauge      share of the last N requests in SLO
``greenllm_spec_decode_acceptance_rate``    gauge      accepted / proposed draft tokens
``greenllm_configuration_info{label}``      gauge      1 for the configuration served
``greenllm_configuration_switches_total``    counter    make-before-break switches
==========================================  =========  =====================================
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from greenllm.errors import missing_extra
from greenllm.serve.receipts import Receipt

__all__ = ["GatewayMetrics"]

_TTFT_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                   7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
_TPOT_BUCKETS_S = (0.001, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
                   0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)  # fmt: skip


class GatewayMetrics:
    """The gateway's metrics in their own ``CollectorRegistry``."""

    def __init__(
        self,
        *,
        configuration_label: str,
        slo_window: int = 1000,
        acceptance_rate: Callable[[], float | None] | None = None,
    ) -> None:
        try:
            import prometheus_client as prom
        except ImportError as err:  # pragma: no cover - the serve extra installs it
            raise missing_extra("prometheus_client", "serve") from err
        self._prom = prom
        self.registry = reg = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "greenllm_requests", "Requests by outcome.", ["status"], registry=reg
        )
        for status in ("ok", "error", "cancelled", "rejected", "invalid"):
            self.requests.labels(status)
        self.ttft = prom.Histogram(
            "greenllm_time_to_first_token_seconds", "Time to first token.",
            buckets=_TTFT_BUCKETS_S, registry=reg,
        )  # fmt: skip
        self.tpot = prom.Histogram(
            "greenllm_time_per_output_token_seconds", "Mean time per output token after the "
            "first, per request.", buckets=_TPOT_BUCKETS_S, registry=reg,
        )  # fmt: skip
        self.inflight = prom.Gauge(
            "greenllm_inflight_requests", "Requests admitted and not finished.", registry=reg
        )
        self.energy = prom.Counter(
            "greenllm_energy_joules", "Device energy charged to requests.", ["gpu", "role"],
            registry=reg,
        )  # fmt: skip
        self.carbon = prom.Counter(
            "greenllm_carbon_grams", "Carbon charged to requests (Eq. 1-3).", ["scope"],
            registry=reg,
        )  # fmt: skip
        for scope in ("embodied", "operational"):
            self.carbon.labels(scope)
        self.intensity = prom.Gauge(
            "greenllm_grid_carbon_intensity_g_per_kwh", "Grid carbon intensity in use.",
            registry=reg,
        )  # fmt: skip
        self._slo: deque[bool] = deque(maxlen=slo_window)
        slo = prom.Gauge(
            "greenllm_slo_attainment", f"Share of the last {slo_window} finished requests that "
            "met the TTFT and TPOT SLO (NaN before the first).", registry=reg,
        )  # fmt: skip
        slo.set_function(self.slo_attainment)
        accept = prom.Gauge(
            "greenllm_spec_decode_acceptance_rate", "Accepted / proposed draft tokens "
            "(NaN without speculation).", registry=reg,
        )  # fmt: skip
        accept.set_function(lambda: _nan_if_none(acceptance_rate() if acceptance_rate else None))
        self._info = prom.Gauge(
            "greenllm_configuration_info", "The configuration served (value 1; 0 for one "
            "served before a switch).", ["label"], registry=reg,
        )  # fmt: skip
        self._label = configuration_label
        self._info.labels(configuration_label).set(1)
        self.switches = prom.Counter(
            "greenllm_configuration_switches", "Make-before-break switches of configuration.",
            registry=reg,
        )  # fmt: skip

    def mark_served(self, label: str) -> None:
        """``label`` is served too (a deployment serves several configurations at once)."""
        self._info.labels(label).set(1)

    def set_configuration(self, label: str) -> None:
        """A switch: ``label`` is served now (1), the previous one no longer (0)."""
        self._info.labels(self._label).set(0)
        self._info.labels(label).set(1)
        self._label = label
        self.switches.inc()

    def slo_attainment(self) -> float:
        return sum(self._slo) / len(self._slo) if self._slo else math.nan

    def observe(
        self, receipt: Receipt, ttft_s: float | None, tpot_s: float | None, met_slo: bool
    ) -> None:
        """A finished request: latency histograms, SLO window, energy and carbon."""
        if ttft_s is not None:
            self.ttft.observe(ttft_s)
        if tpot_s is not None:
            self.tpot.observe(tpot_s)
        self._slo.append(met_slo)
        for key, joules in receipt.energy_j.items():
            role, _, gpu = key.partition(":")
            self.energy.labels(gpu=gpu, role=role).inc(joules)
        self.carbon.labels("embodied").inc(receipt.embodied_g)
        self.carbon.labels("operational").inc(receipt.operational_g)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else x
