"""The ``Backend`` protocol every serving backend implements, and what a run returns.

A backend runs one :class:`~greenllm.config.Configuration` on one
:class:`~greenllm.config.Workload` and reports, per request, when it arrived, when its first
and last tokens came out (and optionally every token time); per GPU, its busy and allocated time,
its energy and a power trace; the bytes moved over the link between GPUs; and, for speculative
decoding, how many draft tokens were proposed and accepted.

Hooks (all required):

* ``name``: the registry name (``"sim"``, ``"torch"``, ``"vllm"``).
* ``capabilities() -> Capabilities``: configuration kinds it can run; measured or modelled energy.
* ``run(configuration, workload, *, requests=None, duration_s=None, seed=0) -> RunResult``:
  serve ``requests`` (or Poisson arrivals at ``workload.qps`` for ``duration_s``).
* ``close()``: release processes, GPUs and scratch folders. Idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from greenllm.config import SLO, ConfigKind, Configuration, Workload
from greenllm.errors import ConfigError
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = [
    "Backend",
    "Capabilities",
    "GPUTrace",
    "RunResult",
    "run_requests",
]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do on this machine."""

    kinds: frozenset[ConfigKind]
    energy: str = "modelled"  # "measured" (NVML/RAPL) or "modelled" (a power model)
    needs_gpu: bool = False
    description: str = ""

    def check(self, configuration: Configuration, backend: str) -> None:
        """Raise ConfigError if ``configuration``'s kind is not supported."""
        if configuration.kind not in self.kinds:
            can = ", ".join(sorted(k.label for k in self.kinds))
            raise ConfigError(
                f"backend {backend!r} cannot run {configuration.kind.label}; it runs: {can}"
            )


@dataclass(frozen=True)
class GPUTrace:
    """What one GPU of the configuration did: time, energy and (optionally) power samples."""

    gpu: str
    role: str  # "target", "draft", "prefill", "decode" or "target+draft"
    busy_s: float
    allocated_s: float
    energy_j: float
    power_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    power_w: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class RunResult:
    """Everything one run measured or modelled."""

    backend: str
    configuration: Configuration
    workload: Workload
    seed: int
    requests: RequestTimings
    gpus: tuple[GPUTrace, ...]  # in configuration.gpus order (new GPU first)
    duration_s: float
    link_bytes: int = 0
    spec_proposed_tokens: int = 0
    spec_accepted_tokens: int = 0
    overloaded: bool = False  # the queue grew without bound or the KV cache could not fit
    energy: str = "modelled"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed draft tokens (NaN without speculative decoding)."""
        if self.spec_proposed_tokens == 0:
            return float("nan")
        return self.spec_accepted_tokens / self.spec_proposed_tokens

    @property
    def output_tokens(self) -> int:
        r = self.requests
        return int(r.output_tokens[r.served].sum())

    def carbon(
        self, intensity_g_per_kwh: float = 261.0, lifetime_years: float | dict[str, float] = 7.0
    ) -> Any:
        """Eq. 1-3 over the run: a :class:`~greenllm.carbon.CarbonBreakdown` with the output
        tokens served, so ``.total_per_token_g`` is the paper's carbon per token.

        ``lifetime_years`` is one value or ``{"T4": 10, "default": 7}``.
        """
        from greenllm.carbon import DeviceUsage, lifetime_for, window_carbon

        devices = [
            DeviceUsage(g.gpu, g.allocated_s, g.energy_j, lifetime_for(g.gpu, lifetime_years))
            for g in self.gpus
        ]
        return window_carbon(devices, intensity_g_per_kwh, tokens=self.output_tokens or None)

    def slo_attainment(self, slo: SLO | None = None) -> float:
        """Fraction of requests whose TTFT and mean TPOT meet ``slo`` (unserved ones miss)."""
        from greenllm.slo import slo_attainment

        slo = slo or self.workload.slo
        if slo is None:
            raise ConfigError("no SLO: pass slo=SLO(...) or give the workload one")
        r = self.requests
        both, _, _ = slo_attainment(r.ttft_s[r.served], r.tpot_s[r.served], slo,
                                    n_failed=int((~r.served).sum()))  # fmt: skip
        return both

    def to_record(self, slo: SLO | None = None, run_id: str = "default") -> Any:
        """This run as a :class:`~greenllm.profiler.store.records.ProfileRecord` for the store."""
        from greenllm.profiler.store import ProfileRecord

        r = self.requests
        served = r.served
        return ProfileRecord.from_requests(
            self.workload,
            self.configuration,
            self.backend,
            ttft_s=r.ttft_s[served],
            tpot_s=r.tpot_s[served],
            energy_j=[g.energy_j for g in self.gpus],
            duration_s=self.duration_s,
            busy_s=[min(g.busy_s, self.duration_s) for g in self.gpus],
            allocated_s=[g.allocated_s for g in self.gpus],
            slo=slo,
            n_failed=int((~served).sum()),
            run_id=run_id,
            input_tokens=int(r.input_tokens[served].sum()),
            output_tokens=int(r.output_tokens[served].sum()),
            link_bytes=int(self.link_bytes),
        )


@runtime_checkable
class Backend(Protocol):
    """A serving backend; see the module docstring for every hook."""

    name: str

    def capabilities(self) -> Capabilities: ...

    def run(
        self,
        configuration: Configuration,
        workload: Workload,
        *,
        requests: RequestSet | None = None,
        duration_s: float | None = None,
        seed: int = 0,
    ) -> RunResult: ...

    def close(self) -> None: ...


def run_requests(
    backend: str,
    capabilities: Capabilities,
    configuration: Configuration,
    workload: Workload,
    requests: RequestSet | None,
    duration_s: float | None,
    seed: int,
) -> RequestSet:
    """Check the arguments of :meth:`Backend.run` and return the requests to serve: ``requests``
    as given, or Poisson arrivals at ``workload.qps`` for ``duration_s`` seeded by ``seed``."""
    if not isinstance(configuration, Configuration):
        raise ConfigError(f"configuration = {configuration!r}: expected a Configuration")
    if not isinstance(workload, Workload):
        raise ConfigError(f"workload = {workload!r}: expected a Workload")
    capabilities.check(configuration, backend)
    if (requests is None) == (duration_s is None):
        raise ConfigError(
            "give exactly one of requests=RequestSet(...) or duration_s=... (got "
            f"{'both' if requests is not None else 'neither'})"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: must be an integer >= 0")
    if requests is None:
        return RequestSet.poisson(
            workload.qps, workload.request_size, duration_s=duration_s, seed=int(seed)
        )
    if not isinstance(requests, RequestSet):
        raise ConfigError(f"requests = {type(requests).__name__}: expected a RequestSet")
    return requests
