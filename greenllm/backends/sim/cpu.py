"""The ``cpu`` device: the machine the simulator runs on, with ceilings measured on it.

A GPU's ceilings come from public micro-benchmarks (:mod:`.efficiency`); the CPU's are measured
here by :func:`measure_cpu`, in a fresh subprocess limited to ``threads`` BLAS threads (the
engine's workers run one torch thread each when two share this machine), median of repeats in
CPU seconds (time-slicing by other jobs on a shared machine does not count):

* **peak**: float32 GEMM, numpy ``a @ b`` of two 1024 x 1024 matrices (the engine runs float32
  on the CPU), in GFLOP/s, median of 31;
* **bandwidth**: the read stream of a float32 matrix-vector product over a 1 GiB matrix (larger
  than the last-level cache), in GB/s, median of 5: a decode step reads its weights the same way.

:func:`cpu_spec` turns them into a :class:`~greenllm.carbon.GPUSpec` named ``cpu``
(``fp16_tflops`` holds the float32 GEMM peak, ``mem_bw_gbs`` the bandwidth) and
:func:`register_cpu` adds it to the catalog; :class:`~.roofline.StepModel` then runs the same
roofline as for the GPUs with :data:`CPU_EFFICIENCY`. Measurements are cached per process and in
``<cache>/cpu-profile-v1.json`` (``$GREENLLM_CACHE`` or ``~/.cache/greenllm``), keyed by CPU
model, logical CPUs, threads and numpy version.

Power and embodied carbon are estimates, not measurements: Cloud Carbon Footprint's per-vCPU
coefficients for Intel Cascade Lake, the newest Intel row of its table (0.64 W idle, 3.80 W at
full load per vCPU), and an ACT estimate of the share of silicon a vCPU holds (assumed 10 mm^2
of a 10 nm-class die per vCPU: a core, its L2 and an L3 slice) plus the machine's RAM at ACT's
DDR rate (the catalog's ``LPDDR5`` entry uses it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from greenllm.backends.sim.efficiency import Efficiency
from greenllm.carbon import GPUSpec, act_embodied_kg, register_gpu
from greenllm.errors import BackendUnavailableError, ConfigError

__all__ = [
    "CPU_DEVICE",
    "CPU_EFFICIENCY",
    "CPU_IDLE_W_PER_VCPU",
    "CPU_MAX_W_PER_VCPU",
    "CpuCeilings",
    "cpu_spec",
    "measure_cpu",
    "register_cpu",
]

logger = logging.getLogger(__name__)

CPU_DEVICE = "cpu"
# Cloud Carbon Footprint coefficients (cloudcarbonfootprint.org/docs/methodology, "Cascade
# Lake" row of its micro-architecture table): watts per vCPU at 0 % and 100 % utilisation.
CPU_IDLE_W_PER_VCPU = 0.64
CPU_MAX_W_PER_VCPU = 3.80
_DIE_MM2_PER_VCPU = 10.0  # assumption (see the module docstring)

# Efficiency of greenllm's engine (transformers, eager, float32, one torch thread) on the cpu
# device, against the measured ceilings. ``overhead_s`` and ``layer_s``: linear
# fit of the one-token forward time of tiny Llamas (hidden 64, vocab 256: next to no FLOPs or
# bytes) over 1-30 layers; ``gemv_rows``: the forward time of SmolLM2-135M jumps between 3 and
# 4 new tokens (the BLAS leaves matrix-vector kernels); ``compute``, ``memory``, ``roofline_p``,
# ``pack_factor`` and ``attention_cost``: least squares (log-ratio residuals) on SmolLM2-135M
# forwards of 1-512 new tokens at context 0, a decode step after 600 tokens and the 4-layer
# draft's one-token forward, 8 rounds, each predicted with the ceilings measured just before
# it. ``compute`` > 1: torch's float32 kernels beat numpy's 1024^3 GEMM here; p = 1: on one
# core compute and memory traffic do not overlap; attention FLOPs cost 5.5 GEMM FLOPs (the
# SDPA kernel computes the full causal square, then softmax, at a lower rate). Points and fit:
# ``benchmarks/bench_sim_vs_engine.py --fit --reps 8`` (docs/simulator-model.md, "The simulator
# against this CPU"); the checked quantities are other points.
CPU_EFFICIENCY = Efficiency(
    compute=1.108,
    memory=0.783,
    overhead_s=0.00051,
    roofline_p=1.0,
    layer_s=0.000351,
    gemv_rows=3,
    pack_factor=0.466,
    attention_cost=5.50,
)

_GEMM_N = 1024
_BW_BYTES = 1 << 30
_CACHE_FILE = "cpu-profile-v1.json"
_LOCK = threading.Lock()
_MEASURED: dict[int, CpuCeilings] = {}


@dataclass(frozen=True)
class CpuCeilings:
    """Measured ceilings of this CPU at ``threads`` BLAS threads."""

    gemm_gflops: float  # float32 GEMM, 1024^3
    bandwidth_gbs: float  # float32 GEMV read stream over 1 GiB
    threads: int
    cpu_model: str
    vcpus: int
    ram_gb: float


_BENCH = """
import json, sys, time
import numpy as np
n, nbytes = {n}, {nbytes}

def median(f, reps):
    f()
    times = []
    for _ in range(reps):
        start = time.process_time(); f(); times.append(time.process_time() - start)
    return sorted(times)[reps // 2]

rng = np.random.default_rng(0)
a = rng.random((n, n), dtype=np.float32); b = rng.random((n, n), dtype=np.float32)
gemm = 2 * n**3 / median(lambda: a @ b, 31) / 1e9
m = np.ones((nbytes // 4 // 4096, 4096), np.float32); x = np.ones(4096, np.float32)
bw = m.nbytes / median(lambda: m @ x, 5) / 1e9
print(json.dumps({{"gemm_gflops": gemm, "bandwidth_gbs": bw}}))
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return 16.0  # unknown: a nominal size (only the embodied-carbon estimate uses it)


def _cache_path() -> Path:
    env = os.environ.get("GREENLLM_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "greenllm") / _CACHE_FILE


def _key(threads: int) -> str:
    import numpy as np

    return f"{_cpu_model()}|{os.cpu_count()}|{threads}|numpy {np.__version__}"


def _run_benchmark(threads: int) -> dict[str, float]:
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    code = _BENCH.format(n=_GEMM_N, nbytes=_BW_BYTES)
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=300, check=True)  # fmt: skip
        out = json.loads(done.stdout.strip().splitlines()[-1])
        return {k: float(out[k]) for k in ("gemm_gflops", "bandwidth_gbs")}
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError) as err:
        raise BackendUnavailableError(
            f"the cpu micro-benchmark failed ({str(err)[:200]}); it needs numpy and ~1.1 GB of "
            f"free memory"
        ) from err


def measure_cpu(threads: int = 1, *, refresh: bool = False) -> CpuCeilings:
    """This CPU's float32 GEMM peak and read bandwidth at ``threads`` threads (module docstring);
    cached per process and on disk unless ``refresh``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads = {threads!r}: must be an integer >= 1")
    with _LOCK:
        if not refresh and threads in _MEASURED:
            return _MEASURED[threads]
        key, path = _key(threads), _cache_path()
        stored: dict[str, dict[str, float]] = {}
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(path.read_text())
        values = None if refresh else stored.get(key)
        if values is None:
            values = _run_benchmark(threads)
            logger.info("cpu ceilings (%d threads): %.1f GFLOP/s, %.2f GB/s", threads,
                        values["gemm_gflops"], values["bandwidth_gbs"])  # fmt: skip
            stored[key] = values
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp-{os.getpid()}")
                tmp.write_text(json.dumps(stored, indent=1))
                tmp.replace(path)
            except OSError as err:
                logger.warning("cannot cache the cpu ceilings in %s: %s", path, err)
        ceilings = CpuCeilings(
            float(values["gemm_gflops"]), float(values["bandwidth_gbs"]), threads, _cpu_model(),
            os.cpu_count() or 1, _ram_gb(),
        )  # fmt: skip
        if not all(math.isfinite(v) and v > 0
                   for v in (ceilings.gemm_gflops, ceilings.bandwidth_gbs)):  # fmt: skip
            raise BackendUnavailableError(f"the cpu micro-benchmark gave {values!r}")
        _MEASURED[threads] = ceilings
        return ceilings


def cpu_spec(ceilings: CpuCeilings) -> GPUSpec:
    """The ``cpu`` device of ``ceilings``: a catalog entry for the roofline and the carbon model."""
    vcpus = ceilings.vcpus
    die = _DIE_MM2_PER_VCPU * vcpus
    return GPUSpec.create(
        CPU_DEVICE,
        vram_gb=round(ceilings.ram_gb, 2),
        mem_bw_gbs=ceilings.bandwidth_gbs,
        die_area_mm2=die,
        max_power_w=CPU_MAX_W_PER_VCPU * vcpus,
        idle_power_w=CPU_IDLE_W_PER_VCPU * vcpus,
        node_nm=10,
        fp16_tflops=ceilings.gemm_gflops / 1000,
        year=2023,
        memory_type="LPDDR5",
        supports_bf16=False,
        embodied_kg=act_embodied_kg(die, 10, ceilings.ram_gb, "LPDDR5"),
        embodied_source="act-estimate",
        source=(
            f"{ceilings.cpu_model}, {vcpus} logical CPUs, measured at {ceilings.threads} "
            f"thread(s): float32 GEMM {ceilings.gemm_gflops:.1f} GFLOP/s (fp16_tflops holds it), "
            f"GEMV read {ceilings.bandwidth_gbs:.2f} GB/s; power: Cloud Carbon Footprint "
            f"per-vCPU coefficients (Cascade Lake); embodied: ACT estimate "
            f"(greenllm.backends.sim.cpu)"
        ),
    )


def register_cpu(threads: int = 1, *, refresh: bool = False) -> GPUSpec:
    """Measure this CPU (cached) and register it in the GPU catalog as ``cpu``; the spec."""
    spec = cpu_spec(measure_cpu(threads, refresh=refresh))
    register_gpu(spec, replace=True)
    return spec

