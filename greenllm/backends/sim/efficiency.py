"""Per-GPU efficiency factors of the step-time model: public ceilings and fitted constants.

A GPU reaches a share of its data-sheet peaks (:class:`Efficiency`): ``K_COMPUTE`` x its
measured fp16 GEMM ceiling (:data:`GEMM_TFLOPS`) over the dense tensor peak, and its achievable
memory bandwidth (:data:`BANDWIDTH_GBS`) over the data sheet's; a GPU without a measurement
borrows a sibling's ratio (:data:`LIKE`). ``K_COMPUTE``, ``LAYER_S``, ``OVERHEAD_S`` and
``ROOFLINE_P`` are fitted by :func:`greenllm.backends.sim.calibration.fit`
(docs/simulator-model.md);
:data:`MEMORY_POWER_FRACTION` is the power model's share of the dynamic range drawn by a
bandwidth-bound step. :mod:`.roofline` and :mod:`.calibration` both build on this module.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from greenllm.carbon import GPUSpec, get_gpu

__all__ = [
    "BANDWIDTH_GBS",
    "GEMM_TFLOPS",
    "K_COMPUTE",
    "LAYER_S",
    "LIKE",
    "MEMORY_POWER_FRACTION",
    "OVERHEAD_S",
    "ROOFLINE_P",
    "Efficiency",
    "bandwidth_ratio",
    "efficiency_for",
    "gemm_ratio",
    "tensor_tflops",
]

# --- fitted constants (reproduced by calibration.fit(); tests/backends/sim/test_roofline.py) ---
K_COMPUTE = 0.8183  # share of the measured GEMM ceiling reached by a whole forward pass
LAYER_S = 3.763e-5  # GPU time per layer per step that no roof explains: ~10 small kernels' latency
OVERHEAD_S = 0.002287  # host time per serving step: scheduler, input preparation, sampling
ROOFLINE_P = 2.046  # soft roofline exponent (1 = no overlap of compute and memory, inf = max)

# Power: a step saturating memory bandwidth draws this share of the dynamic range (max - idle).
# Ma et al., "The Illusion of Power Capping in LLM Decode" (arXiv:2605.11999): decode on a
# 700 W H200 draws 137-300 W; with H200 idle 75 W, (300 - 75) / (700 - 75) = 0.36.
MEMORY_POWER_FRACTION = 0.36

# Dense fp16 tensor-core peak where the catalog's fp16_tflops is not it. Table 1 lists the
# V100's non-tensor 28.26 TFLOPS; cuBLAS fp16 GEMMs run on its tensor cores (125 TFLOPS,
# V100 SXM2 data sheet), and the measured 97.36 TFLOP/s below exceeds 28.26 by 3.4x.
_TENSOR_TFLOPS = {"V100": 125.0}

_DB = "zzc0721/torch-performance-test-data database.md (torch.matmul fp16, max over 1024-10240)"
_ISSUE = "zzc0721/torch-performance-test-data issue #"
GEMM_TFLOPS: dict[str, tuple[float, str]] = {
    "T4": (42.31, _DB + ": mean of 41.91 (Colab) and 42.71 (Kaggle)"),
    "V100": (97.36, _ISSUE + "140 (Tesla V100-SXM2-16GB)"),
    "A100": (247.63, _DB + ": NVIDIA A100 40GB"),
    "A100-80GB": (258.74, _DB + ": NVIDIA A100 SXM4 80GB"),
    "H100": (759.99, _DB + ": mean of 761.84 and 758.14 (two H100 80GB HBM3 rows)"),
    "H200": (759.40, _DB + ": NVIDIA H200"),
    "L40S": (264.02, _DB + ": NVIDIA L40S"),
    "A40": (119.18, _ISSUE + "185 (NVIDIA A40)"),
    "P100": (8.39, _ISSUE + "174 (Tesla P100-PCIE-16GB; no tensor cores)"),
}
_BWTEST = "CUDA samples bandwidthTest device-to-device, router-gao/cuda-demo 02-cuda-bandwidth.md"
BANDWIDTH_GBS: dict[str, tuple[float, str]] = {
    "T4": (239.6, _BWTEST + " (Tesla T4)"),
    "V100": (739.8, _BWTEST + " (Tesla V100-SXM2-16GB)"),
    "A100-80GB": (1700.0, "pytorch-labs/gpt-fast README: 'Empirically, seems like peak "
                  "bandwidth is about 1700 GB/s' (A100 80GB, power-limited to 330 W)"),
}  # fmt: skip
# GPUs without a measurement borrow a sibling's ratio (measured / data sheet):
# (GEMM sibling, bandwidth sibling). HBM parts -> A100-80GB, GDDR parts -> T4 (same method).
LIKE: dict[str, tuple[str, str]] = {
    "A100": ("A100", "A100-80GB"),  # same GA100 memory system; its 32 MB bandwidthTest is
    "H100": ("H100", "A100-80GB"),  # launch-bound (~40 us per copy), so not used
    "H200": ("H200", "A100-80GB"),
    "P100": ("P100", "A100-80GB"),
    "A40": ("A40", "T4"),
    "A10G": ("A40", "T4"),  # GA102, like A40
    "L40S": ("L40S", "T4"),
    "L4": ("L40S", "T4"),  # AD104 / AD102, like L40S
    "RTX-6000-Ada": ("L40S", "T4"),
}


@dataclass(frozen=True)
class Efficiency:
    """Achieved shares of a device's data-sheet peaks, the fixed times and the roofline p.

    ``layer_s``: time per decoder layer per step that neither roof explains (on a GPU the
    latency of a layer's small kernels; on the ``cpu`` device, :mod:`.cpu`, an eager framework
    dispatching each layer's kernels from Python). ``gemv_rows`` and ``pack_factor``: a step of
    more than ``gemv_rows`` new tokens moves the weights ``1 + pack_factor`` times (a CPU BLAS
    multiplies a few rows as matrix-vector products that stream the weights once, more rows as
    a GEMM that first packs them into blocks). ``attention_cost``: the time of an attention
    FLOP (QK^T, AV) in GEMM FLOPs (a CPU's attention kernels run below its GEMM rate). The GPUs
    have the defaults (0, 0, 1) of the last three: their fit has none of these terms."""

    compute: float  # of the dense fp16 tensor peak (tensor_tflops)
    memory: float  # of the data-sheet memory bandwidth
    overhead_s: float = OVERHEAD_S  # host time per serving step
    roofline_p: float = ROOFLINE_P
    layer_s: float = LAYER_S  # time per layer per step beyond the roofline
    gemv_rows: int = 0
    pack_factor: float = 0.0
    attention_cost: float = 1.0


def tensor_tflops(gpu: GPUSpec) -> float:
    """Dense fp16 tensor-core peak, TFLOP/s (data sheet)."""
    return _TENSOR_TFLOPS.get(gpu.name, gpu.fp16_tflops)


def gemm_ratio(gpu: GPUSpec) -> float:
    """Measured fp16 GEMM TFLOP/s / data-sheet peak (a sibling's or the median if unmeasured)."""
    name = LIKE.get(gpu.name, (gpu.name, gpu.name))[0]
    if name in GEMM_TFLOPS:
        return GEMM_TFLOPS[name][0] / tensor_tflops(get_gpu(name))
    return _median_gemm_ratio()


def bandwidth_ratio(gpu: GPUSpec) -> float:
    """Achievable / data-sheet memory bandwidth (HBM parts like A100-80GB, GDDR like T4)."""
    name = gpu.name if gpu.name in BANDWIDTH_GBS else LIKE.get(gpu.name, ("", ""))[1]
    if name not in BANDWIDTH_GBS:
        name = "A100-80GB" if gpu.memory_type.upper().startswith("HBM") else "T4"
    return BANDWIDTH_GBS[name][0] / get_gpu(name).mem_bw_gbs


def _median_gemm_ratio() -> float:
    return statistics.median(v / tensor_tflops(get_gpu(k)) for k, (v, _) in GEMM_TFLOPS.items())


def efficiency_for(
    gpu: GPUSpec,
    k_compute: float = K_COMPUTE,
    overhead_s: float = OVERHEAD_S,
    roofline_p: float = ROOFLINE_P,
    layer_s: float = LAYER_S,
) -> Efficiency:
    """The :class:`Efficiency` of ``gpu`` under the (fitted by default) global constants."""
    return Efficiency(
        k_compute * gemm_ratio(gpu), bandwidth_ratio(gpu), overhead_s, roofline_p, layer_s
    )
