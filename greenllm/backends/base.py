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

The built-in backends subclass :class:`BackendBase`: the argument checks of ``run`` in one
place, ``close()`` once (then ``run`` raises :class:`~greenllm.errors.BackendClosedError`) and
``with`` blocks. Keys of ``RunResult.extra`` that mean the same on every backend are
:class:`RunExtra`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypedDict, TypeVar, runtime_checkable

import numpy as np

from greenllm.config import SLO, ConfigKind, Configuration, Workload
from greenllm.errors import BackendClosedError, ConfigError
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = [
    "ROLES",
    "Backend",
    "BackendBase",
    "Capabilities",
    "GPUTrace",
    "RunExtra",
    "RunResult",
]

#: The role of each GPU of a configuration kind, in ``Configuration.gpus`` order (new GPU first).
ROLES: dict[ConfigKind, tuple[str, ...]] = {
    ConfigKind.STANDALONE: ("target",),
    ConfigKind.SPEC_DECODE: ("target+draft",),
    ConfigKind.DPD: ("prefill", "decode"),
    ConfigKind.DSD: ("target", "draft"),
}


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
    role: str  # one of ROLES: "target", "draft", "prefill", "decode" or "target+draft"
    busy_s: float
    allocated_s: float
    energy_j: float
    power_times_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    power_w: np.ndarray = field(default_factory=lambda: np.zeros(0))


class RunExtra(TypedDict, total=False):
    """Keys of :attr:`RunResult.extra` that mean the same on every backend that sets them.

    Every key is optional; a backend adds its own keys beside these (docs/simulator.md,
    docs/engine.md, docs/vllm.md list them).
    """

    devices: dict[str, str | None]
    """Where the work of each side really ran: ``{"new": "cuda:0" | "cpu", "old": ... | None}``
    (``None``: no old-GPU side). ``new_gpu``/``old_gpu`` are the nominal GPUs. torch, vllm."""
    token_ids: list[list[int] | None]
    """The generated token ids of each request, in request order (``None``: it failed).
    torch, vllm."""
    energy_model: str
    """How ``GPUTrace.energy_j`` was obtained: ``"measured: ..."`` or ``"modelled: ..."``.
    torch, vllm (the simulator's energy is always modelled)."""
    acceptance_rate: float
    """Draft tokens accepted / proposed, in [0, 1]: the simulator's assumed rate per token, the
    measured one elsewhere (then equal to :attr:`RunResult.acceptance_rate`). sim, torch."""
    wall_s: float
    """Wall-clock seconds the run took on this machine (s). sim."""


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
    extra: dict[str, Any] = field(default_factory=dict)  # common keys: RunExtra

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
        self,
        intensity_g_per_kwh: float | None = None,
        lifetime_years: float | dict[str, float] = 7.0,
        *,
        region: str | None = None,
    ) -> Any:
        """Eq. 1-3 over the run: a :class:`~greenllm.carbon.CarbonBreakdown` with the output
        tokens served, so ``.total_per_token_g`` is the paper's carbon per token.

        The grid is ``intensity_g_per_kwh`` (g/kWh) or ``region`` (a code resolved by
        :func:`greenllm.carbon.carbon_intensity`, e.g. ``"CISO"``): give at most one of them
        (both raise ConfigError); neither means 261 g/kWh, CISO's figure of Section 7.5.
        ``lifetime_years`` is one value or ``{"T4": 10, "default": 7}``.
        """
        from greenllm.carbon import DeviceUsage, carbon_intensity, lifetime_for, window_carbon

        if region is not None and intensity_g_per_kwh is not None:
            raise ConfigError(
                f"RunResult.carbon: give intensity_g_per_kwh ({intensity_g_per_kwh!r:.40}) or "
                f"region ({region!r:.40}), not both"
            )
        if region is not None:
            if not isinstance(region, str) or not region.strip():
                raise ConfigError(
                    f"RunResult.carbon: region = {region!r:.60}: must be a region code such "
                    "as 'CISO' (see greenllm.carbon.list_regions())"
                )
            intensity_g_per_kwh = carbon_intensity(region)
        elif intensity_g_per_kwh is None:
            intensity_g_per_kwh = 261.0
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


_B = TypeVar("_B", bound="BackendBase")


class BackendBase(abc.ABC):
    """Base class of the built-in backends (a :class:`Backend`).

    :meth:`run` checks its arguments (:meth:`check_run`) and calls :meth:`_run`;
    :meth:`close` calls :meth:`_close` once, after which :meth:`run` raises
    :class:`~greenllm.errors.BackendClosedError`. A backend is also a context manager.
    """

    name: ClassVar[str]
    _closed: bool = False

    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """Configuration kinds this backend runs; measured or modelled energy."""

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def check_open(self) -> None:
        """Raise :class:`~greenllm.errors.BackendClosedError` once :meth:`close` was called."""
        if self._closed:
            raise BackendClosedError(
                f"this {type(self).__name__} is closed: create a new one to run again"
            )

    def run(
        self,
        configuration: Configuration,
        workload: Workload,
        *,
        requests: RequestSet | None = None,
        duration_s: float | None = None,
        seed: int = 0,
    ) -> RunResult:
        """Serve ``requests`` (or Poisson arrivals at ``workload.qps`` for ``duration_s``)."""
        served = self.check_run(configuration, workload, requests, duration_s, seed)
        return self._run(configuration, workload, served, int(seed))

    @abc.abstractmethod
    def _run(
        self, configuration: Configuration, workload: Workload, requests: RequestSet, seed: int
    ) -> RunResult:
        """Serve ``requests``, already checked by :meth:`check_run`."""

    def check_run(
        self,
        configuration: Configuration,
        workload: Workload,
        requests: RequestSet | None,
        duration_s: float | None,
        seed: int,
    ) -> RequestSet:
        """Check the arguments of :meth:`run` and return the requests to serve: ``requests`` as
        given, or Poisson arrivals at ``workload.qps`` for ``duration_s`` seeded by ``seed``.

        Raises :class:`~greenllm.errors.BackendClosedError` after :meth:`close`, and
        :class:`~greenllm.errors.ConfigError` for a bad argument or a kind the backend does not
        run."""
        self.check_open()
        if not isinstance(configuration, Configuration):
            raise ConfigError(f"configuration = {configuration!r}: expected a Configuration")
        if not isinstance(workload, Workload):
            raise ConfigError(f"workload = {workload!r}: expected a Workload")
        self.capabilities().check(configuration, self.name)
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

    def close(self) -> None:
        """Release processes, GPUs and scratch folders (idempotent); :meth:`run` then raises
        :class:`~greenllm.errors.BackendClosedError`."""
        if self._closed:
            return
        self._closed = True
        self._close()

    @abc.abstractmethod
    def _close(self) -> None:
        """Release what this backend holds; called once, by the first :meth:`close`."""

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
