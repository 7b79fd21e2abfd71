"""What the profile store holds: one :class:`ProfileRecord` per measured cell (paper, Section 4.2).

A cell is (workload: application, request size, QPS; configuration; backend; run id). A record
keeps the latency summaries, the SLO attainment that fills the scheduler's ``SLO_att`` matrix
(Section 4.3, Algorithm 1), and per-GPU energy and time from which the carbon matrix ``C`` is
computed at planning time (Eq. 1-3 with the planner's lifetimes and carbon intensity).

SLO rule: a request meets the SLO when its TTFT <= ``slo.ttft_s`` and its mean TPOT (its decode
time divided by its output tokens after the first) <= ``slo.tpot_s``. A request with a single
output token has no TPOT and meets the TPOT part; a failed request meets neither.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

import numpy as np
from pydantic import Field, field_validator, model_validator

from greenllm.config import (
    SLO,
    Configuration,
    FrozenModel,
    RequestSize,
    RequestSizeDistribution,
    Workload,
)
from greenllm.errors import ConfigError
from greenllm.slo import slo_attainment

if TYPE_CHECKING:
    from greenllm.backends import RunResult

__all__ = [
    "CarbonAtMeasurement",
    "CellUsage",
    "GPURow",
    "GPUUsage",
    "LatencySummary",
    "ProfileRecord",
    "Provenance",
    "cell_id",
    "qps_key",
    "size_label",
]

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]  # SQLite INTEGER is 64-bit signed
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
#: How a record's GPU energy was obtained: read from a device (NVML, RAPL), from a power model,
#: or not at all (0 J: no sampler saw a device, so its carbon is embodied only).
EnergySource = Literal["measured", "modelled", "unmeasured"]
Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]*$")
]


def size_label(size: RequestSize | RequestSizeDistribution) -> str:
    """Stable text key of a request size.

    ``512x128`` for a fixed size, ``dist[256x64,512x128,1024x256;max=32768]`` for a distribution.
    """
    if isinstance(size, RequestSize):
        return f"{size.input_tokens}x{size.output_tokens}"
    parts = ",".join(f"{p.input_tokens}x{p.output_tokens}" for p in (size.p25, size.p50, size.p75))
    return f"dist[{parts};max={size.max_tokens}]"


def qps_key(qps: float) -> str:
    """QPS rounded to 6 significant digits, so ``0.1 + 0.2`` and ``0.3`` are the same cell."""
    return f"{qps:.6g}"


def cell_id(
    application: str,
    request_size: RequestSize | RequestSizeDistribution,
    qps: float,
    configuration_id: str,
    backend: str,
    run_id: str,
) -> str:
    """Stable 20-hex-digit key of a cell: SHA-1 of its parts (the workload's SLO is not one)."""
    parts = (application, size_label(request_size), qps_key(qps), configuration_id, backend, run_id)
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:20]


class LatencySummary(FrozenModel):
    """Mean and percentiles (numpy's default linear interpolation) of per-request latencies."""

    count: Count
    mean_s: NonNeg | None = None
    p50_s: NonNeg | None = None
    p90_s: NonNeg | None = None
    p99_s: NonNeg | None = None

    @model_validator(mode="after")
    def _consistent(self) -> LatencySummary:
        stats = (self.mean_s, self.p50_s, self.p90_s, self.p99_s)
        if self.count == 0 and any(s is not None for s in stats):
            raise ValueError("count = 0 but statistics are given: leave mean/p50/p90/p99 empty")
        if self.count > 0 and any(s is None for s in stats):
            raise ValueError(f"count = {self.count} needs mean_s, p50_s, p90_s and p99_s")
        p50, p90, p99 = self.p50_s or 0.0, self.p90_s or 0.0, self.p99_s or 0.0
        if p50 > p90 * (1 + 1e-9) or p90 > p99 * (1 + 1e-9):
            raise ValueError(
                f"percentiles must not decrease: "
                f"p50 {self.p50_s}, p90 {self.p90_s}, p99 {self.p99_s}"
            )
        return self

    @classmethod
    def from_values(cls, values_s: Sequence[float] | np.ndarray) -> LatencySummary:
        """Summary of the finite values in ``values_s`` (NaN entries are skipped)."""
        arr = np.asarray(values_s, dtype=float).ravel()
        arr = arr[~np.isnan(arr)]
        if np.isinf(arr).any() or (arr < 0).any():
            raise ConfigError("latencies must be finite and >= 0 seconds (use NaN for 'no value')")
        if arr.size == 0:
            return cls(count=0)
        p50, p90, p99 = np.percentile(arr, [50, 90, 99])
        return cls(
            count=int(arr.size),
            mean_s=float(arr.mean()),
            p50_s=float(p50),
            p90_s=float(p90),
            p99_s=float(p99),
        )


class GPUUsage(FrozenModel):
    """What one GPU of a configuration used during a measurement (lifetimes are applied later)."""

    gpu: Annotated[str, Field(min_length=1, max_length=64)]
    energy_j: NonNeg
    busy_s: NonNeg
    allocated_s: NonNeg


class CarbonAtMeasurement(FrozenModel):
    """Carbon at the intensity and lifetime used when measuring: display only, never planned on."""

    embodied_g: NonNeg
    operational_g: NonNeg
    intensity_g_per_kwh: NonNeg
    lifetime_years: Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] | None = None

    @property
    def total_g(self) -> float:
        return self.embodied_g + self.operational_g


class Provenance(FrozenModel):
    """Where and when a record was measured; ``extra`` is free-form JSON (e.g. seeds, driver)."""

    created_utc: datetime
    backend_version: Annotated[str, Field(max_length=128)] = ""
    greenllm_version: Annotated[str, Field(max_length=64)] = ""
    python_version: Annotated[str, Field(max_length=64)] = ""
    host: Annotated[str, Field(max_length=255)] = ""
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created_utc")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is UTC:
            return v
        if v.tzinfo is None:
            raise ValueError("must be timezone-aware (e.g. datetime.now(timezone.utc))")
        return v.astimezone(UTC)

    @field_validator("extra")
    @classmethod
    def _json(cls, v: dict[str, Any]) -> dict[str, Any]:
        if _plain_json(v):
            return v
        try:
            return json.loads(json.dumps(v, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"must be JSON-serialisable (str keys, finite numbers): {err}"
            ) from err

    @classmethod
    def capture(cls, backend_version: str = "", extra: dict[str, Any] | None = None) -> Provenance:
        """Provenance of a measurement taken now on this host with this Python and greenllm."""
        from greenllm.version import __version__

        return cls(
            created_utc=datetime.now(UTC),
            backend_version=backend_version,
            greenllm_version=__version__,
            python_version=platform.python_version(),
            host=socket.gethostname(),
            extra=extra or {},
        )


def _plain_json(v: Any) -> bool:
    """True if ``v`` is made only of what ``json.loads`` returns (so no round trip is needed)."""
    if v is None or isinstance(v, (str, bool, int)):
        return True
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, list):
        return all(_plain_json(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_json(x) for k, x in v.items())
    return False


class ProfileRecord(FrozenModel):
    """One measured cell: workload x configuration x backend x run id (one row of the store).

    ``energy_source``: ``"measured"`` (NVML, RAPL), ``"modelled"`` (a power model) or
    ``"unmeasured"`` (0 J: no sampler saw a device, so any carbon is embodied only). Records
    built by :meth:`from_requests` / :meth:`from_run` are ``"unmeasured"`` when every GPU has
    0 J while one was busy (> 0 s), whatever the backend claims (neither a meter nor a power
    model gives 0 J for a busy GPU); otherwise the claimed source. Records stored before the
    field existed read as ``"modelled"``.
    """

    workload: Workload
    configuration: Configuration
    backend: Name
    run_id: Name = "default"
    n_requests: Count
    duration_s: NonNeg
    ttft: LatencySummary
    tpot: LatencySummary
    slo_attainment: Fraction
    ttft_attainment: Fraction
    tpot_attainment: Fraction
    gpus: tuple[GPUUsage, ...]
    input_tokens: Count = 0
    output_tokens: Count = 0
    link_bytes: Count = 0
    carbon: CarbonAtMeasurement | None = None
    provenance: Provenance
    energy_source: EnergySource = Field(
        default="modelled", description="how the GPU energy was obtained"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProfileRecord:
        if self.workload.slo is None:
            raise ValueError(
                "workload.slo is missing: SLO attainment needs the SLO it was measured against"
            )
        names = tuple(g.gpu for g in self.gpus)
        if names != self.configuration.gpus:
            raise ValueError(
                f"gpus {names} must list the configuration's GPUs in order: "
                f"{self.configuration.gpus}"
            )
        if max(self.ttft.count, self.tpot.count) > self.n_requests:
            raise ValueError(
                f"more latencies ({self.ttft.count}) than n_requests ({self.n_requests})"
            )
        if self.slo_attainment > min(self.ttft_attainment, self.tpot_attainment) + 1e-9:
            raise ValueError("slo_attainment cannot exceed the TTFT-only or TPOT-only attainment")
        return self

    @property
    def cell_id(self) -> str:
        """Stable key: hash of (application, request size, QPS to 6 significant digits,
        configuration id, backend, run id)."""
        w = self.workload
        return cell_id(
            w.application, w.request_size, w.qps, self.configuration.id, self.backend, self.run_id
        )

    @property
    def energy_j(self) -> float:
        """Energy of all GPUs of the configuration."""
        return sum(g.energy_j for g in self.gpus)

    @classmethod
    def from_requests(
        cls,
        workload: Workload,
        configuration: Configuration,
        backend: str,
        *,
        ttft_s: Sequence[float] | np.ndarray,
        tpot_s: Sequence[float] | np.ndarray,
        energy_j: Sequence[float],
        duration_s: float,
        busy_s: Sequence[float] | None = None,
        allocated_s: Sequence[float] | None = None,
        slo: SLO | None = None,
        n_failed: int = 0,
        run_id: str = "default",
        input_tokens: int = 0,
        output_tokens: int = 0,
        link_bytes: int = 0,
        carbon: CarbonAtMeasurement | None = None,
        provenance: Provenance | None = None,
        energy_source: str = "modelled",
    ) -> ProfileRecord:
        """Summarise raw per-request latencies and per-GPU numbers into a record.

        Per-GPU sequences follow ``configuration.gpus`` (new GPU first). ``busy_s`` and
        ``allocated_s`` default to ``duration_s`` for every GPU. ``slo`` defaults to
        ``workload.slo`` and, when given, is stored in the record's workload.
        ``energy_source`` says how ``energy_j`` was obtained (``"measured"``, ``"modelled"``
        or ``"unmeasured"``); the record's is ``"unmeasured"`` when every GPU has 0 J while one
        was busy, else this one.
        """
        slo = slo or workload.slo
        if slo is None:
            raise ConfigError("no SLO: pass slo=SLO(ttft_s=..., tpot_s=...) or set workload.slo")
        if workload.slo != slo:
            workload = Workload(**{**workload.model_dump(), "slo": slo.model_dump()})
        n_gpu = len(configuration.gpus)
        busy = [duration_s] * n_gpu if busy_s is None else list(busy_s)
        alloc = [duration_s] * n_gpu if allocated_s is None else list(allocated_s)
        if not len(energy_j) == len(busy) == len(alloc) == n_gpu:
            raise ConfigError(
                f"per-GPU lists have lengths {len(energy_j)}, {len(busy)}, {len(alloc)}: "
                f"need {n_gpu}, one per GPU of {configuration.label} "
                f"({', '.join(configuration.gpus)})"
            )
        both, ttft_only, tpot_only = slo_attainment(ttft_s, tpot_s, slo, n_failed)
        gpus = tuple(
            GPUUsage(gpu=name, energy_j=e, busy_s=b, allocated_s=a)
            for name, e, b, a in zip(configuration.gpus, energy_j, busy, alloc, strict=True)
        )
        return cls(
            workload=workload,
            configuration=configuration,
            backend=backend,
            run_id=run_id,
            n_requests=int(np.asarray(ttft_s).size) + n_failed,
            duration_s=duration_s,
            ttft=LatencySummary.from_values(ttft_s),
            tpot=LatencySummary.from_values(tpot_s),
            slo_attainment=both,
            ttft_attainment=ttft_only,
            tpot_attainment=tpot_only,
            gpus=gpus,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            link_bytes=link_bytes,
            carbon=carbon,
            provenance=provenance or Provenance.capture(),
            energy_source=_energy_source_of(gpus, energy_source),
        )

    @classmethod
    def from_run(
        cls, run: RunResult, slo: SLO | None = None, run_id: str = "default"
    ) -> ProfileRecord:
        """A backend's :class:`~greenllm.backends.base.RunResult` as a record for the store.

        Latencies and tokens of the served requests (unserved ones count as SLO misses), per-GPU
        energy and allocated time, busy time capped at the run's duration, the link bytes.
        ``slo`` defaults to the workload's. The energy source is the run's ``energy``
        (``"measured"``/``"modelled"``), or ``"unmeasured"`` when every GPU has 0 J while one
        was busy.
        """
        r = run.requests
        served = r.served
        return cls.from_requests(
            run.workload,
            run.configuration,
            run.backend,
            ttft_s=r.ttft_s[served],
            tpot_s=r.tpot_s[served],
            energy_j=[g.energy_j for g in run.gpus],
            duration_s=run.duration_s,
            busy_s=[min(g.busy_s, run.duration_s) for g in run.gpus],
            allocated_s=[g.allocated_s for g in run.gpus],
            slo=slo,
            n_failed=int((~served).sum()),
            run_id=run_id,
            input_tokens=int(r.input_tokens[served].sum()),
            output_tokens=int(r.output_tokens[served].sum()),
            link_bytes=int(run.link_bytes),
            energy_source=run.energy,
        )


def _energy_source_of(gpus: Sequence[GPUUsage], claimed: str) -> str:
    """``"unmeasured"`` when every GPU has 0 J while one was busy (> 0 s), else ``claimed``
    (validated by :class:`ProfileRecord`): neither a meter nor a power model gives 0 J for a
    busy GPU, so no sampler saw a device, whatever the claim."""
    if all(g.energy_j == 0 for g in gpus) and any(g.busy_s > 0 for g in gpus):
        return "unmeasured"
    return claimed


class GPURow(NamedTuple):
    """One GPU of a cell, as read for matrix building (no pydantic, for speed)."""

    gpu: str
    energy_j: float
    busy_s: float
    allocated_s: float


class CellUsage(NamedTuple):
    """The per-cell numbers the planner needs (see :meth:`ProfileStore.usage`)."""

    cell_id: str
    application: str
    size_label: str
    qps: float
    configuration_id: str
    kind: str
    backend: str
    run_id: str
    n_requests: int
    duration_s: float
    slo_attainment: float
    ttft_attainment: float
    tpot_attainment: float
    input_tokens: int
    output_tokens: int
    energy_source: str
    gpus: tuple[GPURow, ...]
