"""The ``cpu`` device: the machine the simulator runs on, as greenllm's engine sees it.

A GPU's ceilings come from public micro-benchmarks (:mod:`.efficiency`). The CPU's come from
micro-benchmarks of the engine's own kernels on this machine
(:func:`greenllm.backends.torch.cpu_profile.measure_cpu`: torch float32, the engine's thread
count, CPU seconds), measured at the shapes of the model to predict, because on a CPU the BLAS
and its code path (MKL on an Intel or an AMD core, numpy's OpenBLAS) change the rates more
than the silicon does. A :class:`CpuProfile` holds them:

* ``gemm_gflops``: linear layers over 256 rows (a prefill), the weight traffic taken out;
* ``stream_gbs``: the weight stream of one-row linear layers (a decode step), over 256 MiB of
  the model's layer matrices (larger than the last-level cache);
* ``gemv_rows`` and ``pack_factor``: up to how many rows the stream keeps its one-row rate, and
  how much more traffic 8 rows cost (the BLAS packs the weights for a GEMM);
* ``attention_cost``: a causal attention FLOP of the SDPA kernel in GEMM FLOPs;
* ``step_s`` and ``layer_s``: the eager framework's time per forward and per decoder layer
  (one-token forwards of tiny Llamas, hidden 64: next to no FLOPs or bytes).

:func:`register_cpu` adds the device to the catalog as ``cpu`` (``fp16_tflops`` holds the GEMM
rate, ``mem_bw_gbs`` the stream rate) and makes :meth:`CpuProfile.efficiency` its efficiency;
:class:`~.roofline.StepModel` then runs the same roofline as for the GPUs, with p = 1 (on one
core compute and memory traffic do not overlap). Nothing is fitted to the quantities the check
(:mod:`greenllm.backends.torch.sim_check`) compares.

Power and embodied carbon are estimates, not measurements: Cloud Carbon Footprint's per-vCPU
coefficients for Intel Cascade Lake, the newest Intel row of its table (0.64 W idle, 3.80 W at
full load per vCPU), and an ACT estimate of the share of silicon a vCPU holds (assumed 10 mm^2
of a 10 nm-class die per vCPU: a core, its L2 and an L3 slice) plus the machine's RAM at ACT's
DDR rate (the catalog's ``LPDDR5`` entry uses it).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, fields

from greenllm.backends.sim.efficiency import Efficiency
from greenllm.carbon import GPUSpec, act_embodied_kg, register_gpu
from greenllm.errors import ConfigError

__all__ = [
    "CPU_DEVICE",
    "CPU_IDLE_W_PER_VCPU",
    "CPU_MAX_W_PER_VCPU",
    "CpuProfile",
    "cpu_efficiency",
    "cpu_spec",
    "register_cpu",
]

CPU_DEVICE = "cpu"
# Cloud Carbon Footprint coefficients (cloudcarbonfootprint.org/docs/methodology, "Cascade
# Lake" row of its micro-architecture table): watts per vCPU at 0 % and 100 % utilisation.
CPU_IDLE_W_PER_VCPU = 0.64
CPU_MAX_W_PER_VCPU = 3.80
_DIE_MM2_PER_VCPU = 10.0  # assumption (see the module docstring)

_LOCK = threading.Lock()
_REGISTERED: list[CpuProfile] = []


@dataclass(frozen=True)
class CpuProfile:
    """This CPU measured with the engine's kernels at ``model``'s shapes (module docstring)."""

    model: str
    threads: int
    cpu_model: str
    vcpus: int
    ram_gb: float
    kernels: str  # e.g. "torch 2.13.0"
    gemm_gflops: float
    stream_gbs: float
    gemv_rows: int
    pack_factor: float
    attention_cost: float
    step_s: float
    layer_s: float

    def __post_init__(self) -> None:
        for f in ("gemm_gflops", "stream_gbs", "attention_cost"):
            if not getattr(self, f) > 0:
                raise ConfigError(f"CpuProfile.{f} = {getattr(self, f)!r}: must be > 0")
        for f in ("pack_factor", "step_s", "layer_s", "gemv_rows"):
            if not getattr(self, f) >= 0:
                raise ConfigError(f"CpuProfile.{f} = {getattr(self, f)!r}: must be >= 0")
        if self.threads < 1 or self.vcpus < 1:
            raise ConfigError(f"CpuProfile threads = {self.threads}, vcpus = {self.vcpus}: >= 1")

    @property
    def efficiency(self) -> Efficiency:
        """The roofline's terms: the rates are the ceilings themselves (shares 1), p = 1."""
        return Efficiency(
            compute=1.0,
            memory=1.0,
            overhead_s=self.step_s,
            roofline_p=1.0,
            layer_s=self.layer_s,
            gemv_rows=self.gemv_rows,
            pack_factor=self.pack_factor,
            attention_cost=self.attention_cost,
        )

    def to_dict(self) -> dict[str, float | int | str]:
        """JSON-ready fields (the disk cache)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> CpuProfile:
        """The inverse of :meth:`to_dict`; :class:`ConfigError` names a missing field."""
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ConfigError(f"cpu profile: missing {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})  # type: ignore[arg-type]


def cpu_spec(profile: CpuProfile) -> GPUSpec:
    """The ``cpu`` device of ``profile``: a catalog entry for the roofline and the carbon model."""
    vcpus = profile.vcpus
    die = _DIE_MM2_PER_VCPU * vcpus
    return GPUSpec.create(
        CPU_DEVICE,
        vram_gb=round(profile.ram_gb, 2),
        mem_bw_gbs=profile.stream_gbs,
        die_area_mm2=die,
        max_power_w=CPU_MAX_W_PER_VCPU * vcpus,
        idle_power_w=CPU_IDLE_W_PER_VCPU * vcpus,
        node_nm=10,
        fp16_tflops=profile.gemm_gflops / 1000,
        year=2023,
        memory_type="LPDDR5",
        supports_bf16=False,
        embodied_kg=act_embodied_kg(die, 10, profile.ram_gb, "LPDDR5"),
        embodied_source="act-estimate",
        source=(
            f"{profile.cpu_model}, {vcpus} logical CPUs, measured at {profile.threads} "
            f"thread(s) with {profile.kernels} at {profile.model}'s shapes: float32 GEMM "
            f"{profile.gemm_gflops:.1f} GFLOP/s (fp16_tflops holds it), weight stream "
            f"{profile.stream_gbs:.2f} GB/s; power: Cloud Carbon Footprint per-vCPU "
            f"coefficients (Cascade Lake); embodied: ACT estimate (greenllm.backends.sim.cpu)"
        ),
    )


def register_cpu(profile: CpuProfile) -> GPUSpec:
    """Register ``profile`` as the catalog's ``cpu`` device and its efficiency; the spec."""
    spec = cpu_spec(profile)
    with _LOCK:
        register_gpu(spec, replace=True)
        _REGISTERED[:] = [profile]
    return spec


def cpu_efficiency() -> Efficiency:
    """The registered ``cpu`` device's efficiency (:func:`register_cpu` first)."""
    with _LOCK:
        if not _REGISTERED:
            raise ConfigError(
                "the cpu device has no profile: register_cpu("
                "greenllm.backends.torch.cpu_profile.measure_cpu()) first"
            )
        return _REGISTERED[0].efficiency
