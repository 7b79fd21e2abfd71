"""Calibration of the step-time model: public measurements, the fit, and per-GPU efficiencies.

Two levels (docs/simulator-model.md gives the derivation and the tables):

1. **Ceilings per GPU** from public micro-benchmarks, one method per resource: the fp16
   ``torch.matmul`` TFLOP/s of large square matrices (:data:`GEMM_TFLOPS`) and the achievable
   memory bandwidth (:data:`BANDWIDTH_GBS`). A GPU without a measurement borrows the ratio
   (measured / data sheet) of a named sibling (:data:`LIKE`).
2. **Three global constants** fitted by least squares (log-ratio residuals, scipy) on
   end-to-end Llama measurements (:data:`POINTS` with ``held_out=False``):
   ``K_COMPUTE`` (share of the GEMM ceiling a whole forward pass reaches), ``OVERHEAD_S``
   (per-step launch/scheduling time) and ``ROOFLINE_P`` (the soft-roofline exponent,
   ``t = (t_c^p + t_m^p)^(1/p)``; p -> inf is the hard max). Held-out points measure the error.

``python -c "from greenllm.backends.sim import calibration; calibration.main()"`` refits and
prints the tables of the docs (``main(['--cv'])`` adds the model selection).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from greenllm.carbon import GPUSpec

__all__ = [
    "BANDWIDTH_GBS",
    "GEMM_TFLOPS",
    "K_COMPUTE",
    "LIKE",
    "MEMORY_POWER_FRACTION",
    "OVERHEAD_S",
    "POINTS",
    "ROOFLINE_P",
    "CalibrationPoint",
    "Efficiency",
    "bandwidth_ratio",
    "efficiency_for",
    "fit",
    "gemm_ratio",
    "leave_one_out",
    "main",
    "predict",
    "report",
    "tensor_tflops",
]

# --- fitted constants (reproduced by fit(); tests/backends/sim/test_roofline.py checks) -------
K_COMPUTE = 0.8414  # share of the measured GEMM ceiling reached by a whole forward pass
OVERHEAD_S = 0.003184  # per-step fixed time: kernel launches, scheduler, sampling
ROOFLINE_P = 1.511  # soft roofline exponent (1 = no overlap of compute and memory, inf = max)

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
    """Achieved shares of a GPU's data-sheet peaks, the per-step overhead and the roofline p."""

    compute: float  # of the dense fp16 tensor peak (tensor_tflops)
    memory: float  # of the data-sheet memory bandwidth
    overhead_s: float = OVERHEAD_S
    roofline_p: float = ROOFLINE_P


def tensor_tflops(gpu: GPUSpec) -> float:
    """Dense fp16 tensor-core peak, TFLOP/s (data sheet)."""
    return _TENSOR_TFLOPS.get(gpu.name, gpu.fp16_tflops)


def gemm_ratio(gpu: GPUSpec) -> float:
    """Measured fp16 GEMM TFLOP/s / data-sheet peak (a sibling's or the median if unmeasured)."""
    name = LIKE.get(gpu.name, (gpu.name, gpu.name))[0]
    if name in GEMM_TFLOPS:
        from greenllm.carbon import get_gpu

        return GEMM_TFLOPS[name][0] / tensor_tflops(get_gpu(name))
    return _median_gemm_ratio()


def bandwidth_ratio(gpu: GPUSpec) -> float:
    """Achievable / data-sheet memory bandwidth (HBM parts like A100-80GB, GDDR like T4)."""
    from greenllm.carbon import get_gpu

    name = gpu.name if gpu.name in BANDWIDTH_GBS else LIKE.get(gpu.name, ("", ""))[1]
    if name not in BANDWIDTH_GBS:
        name = "A100-80GB" if gpu.memory_type.upper().startswith("HBM") else "T4"
    return BANDWIDTH_GBS[name][0] / get_gpu(name).mem_bw_gbs


def _median_gemm_ratio() -> float:
    from greenllm.carbon import get_gpu

    return statistics.median(v / tensor_tflops(get_gpu(k)) for k, (v, _) in GEMM_TFLOPS.items())


def efficiency_for(
    gpu: GPUSpec,
    k_compute: float = K_COMPUTE,
    overhead_s: float = OVERHEAD_S,
    roofline_p: float = ROOFLINE_P,
) -> Efficiency:
    """The :class:`Efficiency` of ``gpu`` under the (fitted by default) global constants."""
    return Efficiency(k_compute * gemm_ratio(gpu), bandwidth_ratio(gpu), overhead_s, roofline_p)


Kind = Literal["ttft", "tpot", "latency", "throughput"]


@dataclass(frozen=True)
class CalibrationPoint:
    """One public end-to-end measurement, replayed through the step model by :func:`predict`.

    ``ttft``: one prefill step of ``batch`` x ``input_tokens`` (s). ``tpot``: mean decode step
    over ``output_tokens`` tokens after the prompt (s). ``latency``: static batch, prefill then
    ``output_tokens - 1`` decode steps (s). ``throughput``: ``batch x output_tokens`` / latency
    (tokens/s).
    """

    name: str
    model: str
    gpu: str
    kind: Kind
    batch: int
    input_tokens: int
    output_tokens: int
    measured: float
    source: str
    held_out: bool = False


_TRT = "NVIDIA/TensorRT-LLM docs/source/performance.md (v0.5 low latency, v0.6.1 throughput)"
_NEMO = ("docs.nvidia.com/nemo-framework/user-guide/latest/performance/llama.html "
         "(Llama-2-7B, TP1, 128 in, 20 out)")  # fmt: skip
POINTS: tuple[CalibrationPoint, ...] = (
    CalibrationPoint("gpt-fast bs1 decode", "llama-2-7b", "A100-80GB", "throughput", 1, 5, 200,
                     104.9, "pytorch-labs/gpt-fast README (Base, 104.9 tok/s)"),
    CalibrationPoint("TRT-LLM TTFT 128", "llama-2-7b", "A100-80GB", "ttft", 1, 128, 1, 0.016,
                     _TRT),
    CalibrationPoint("TRT-LLM TTFT 2048", "llama-2-7b", "A100-80GB", "ttft", 1, 2048, 1, 0.133,
                     _TRT),
    CalibrationPoint("NeMo bs1", "llama-2-7b", "A100-80GB", "latency", 1, 128, 20, 0.2340, _NEMO),
    CalibrationPoint("NeMo bs8", "llama-2-7b", "A100-80GB", "latency", 8, 128, 20, 0.3295, _NEMO),
    CalibrationPoint("TRT-LLM bs384 128/128", "llama-2-7b", "A100-80GB", "throughput", 384, 128,
                     128, 5586.0, _TRT),
    # held out: never used by fit()
    CalibrationPoint("NeMo bs2", "llama-2-7b", "A100-80GB", "latency", 2, 128, 20, 0.2496, _NEMO,
                     True),
    CalibrationPoint("NeMo bs4", "llama-2-7b", "A100-80GB", "latency", 4, 128, 20, 0.2726, _NEMO,
                     True),
    CalibrationPoint("TRT-LLM bs60 128/2048", "llama-2-7b", "A100-80GB", "throughput", 60, 128,
                     2048, 1928.0, _TRT, True),
    CalibrationPoint("TRT-LLM bs52 2048/128", "llama-2-7b", "A100-80GB", "throughput", 52, 2048,
                     128, 591.0, _TRT, True),
    CalibrationPoint("LMDeploy bs1 1/128", "llama-2-7b", "A100-80GB", "throughput", 1, 1, 128,
                     100.02, "InternLM/lmdeploy docs/en/benchmark/a100_fp16.md (v0.2.0)", True),
    CalibrationPoint("vLLM 0.23 C=1 1024/128", "llama-3.1-8b", "A100", "tpot", 1, 1024, 128,
                     1 / 75.0, "johnmusgrave.com/p/vllm-throughput-latency-sweep-on (~75 tok/s, "
                     "A100 40GB)", True),
    CalibrationPoint("NeMo H100 bs1", "llama-2-7b", "H100", "latency", 1, 128, 20, 0.1538, _NEMO,
                     True),
    CalibrationPoint("NeMo H100 bs2", "llama-2-7b", "H100", "latency", 2, 128, 20, 0.1608, _NEMO,
                     True),
    CalibrationPoint("NeMo H100 bs4", "llama-2-7b", "H100", "latency", 4, 128, 20, 0.1748, _NEMO,
                     True),
    CalibrationPoint("NeMo H100 bs8", "llama-2-7b", "H100", "latency", 8, 128, 20, 0.1992, _NEMO,
                     True),
)  # fmt: skip


def predict(
    point: CalibrationPoint, eff_of: Callable[[GPUSpec], Efficiency] | None = None
) -> float:
    """The step model's value for ``point``; ``eff_of(gpu) -> Efficiency`` overrides the fit."""
    from greenllm.backends.sim.roofline import StepModel
    from greenllm.carbon import get_gpu

    g = get_gpu(point.gpu)
    eff = None if eff_of is None else eff_of(g)
    sm = StepModel(point.model, g, efficiency=eff)
    b, n_in, n_out = point.batch, point.input_tokens, point.output_tokens
    if point.kind == "ttft":
        return sm.time_s(b * n_in, 0, b)
    decode = [sm.time_s(b, b * (n_in + i), b) for i in range(n_out - 1)]
    if point.kind == "tpot":
        return sum(decode) / len(decode)
    total = sm.time_s(b * n_in, 0, b) + sum(decode)
    return total if point.kind == "latency" else b * n_out / total


def fit(
    points: tuple[CalibrationPoint, ...] | None = None, roofline_p: float | None = None
) -> tuple[float, float, float]:
    """Least-squares ``(K_COMPUTE, OVERHEAD_S, ROOFLINE_P)`` over the non-held-out points
    (log-ratio residuals); ``roofline_p`` fixes the exponent instead of fitting it."""
    import numpy as np
    from scipy.optimize import least_squares

    pts = [p for p in (POINTS if points is None else points) if not p.held_out]

    def residuals(x: np.ndarray) -> list[float]:
        p = x[2] if roofline_p is None else roofline_p

        def eff_of(g: GPUSpec) -> Efficiency:
            return efficiency_for(g, x[0], x[1], p)

        return [math.log(predict(pt, eff_of) / pt.measured) for pt in pts]

    x0, lo, hi = [0.8, 0.002, 2.0], [0.05, 0.0, 1.0], [1.0, 0.05, 16.0]
    n = 3 if roofline_p is None else 2
    res = least_squares(residuals, x0[:n], bounds=(lo[:n], hi[:n]))
    p = float(res.x[2]) if roofline_p is None else float(roofline_p)
    return float(res.x[0]), float(res.x[1]), p


def leave_one_out(roofline_p: float | None = None) -> list[float]:
    """Relative error on each point of :data:`POINTS` when fitted on all the others."""
    from dataclasses import replace

    errors = []
    for i, held in enumerate(POINTS):
        rest = tuple(replace(p, held_out=False) for j, p in enumerate(POINTS) if j != i)
        k, t0, p = fit(rest, roofline_p)
        errors.append(predict(held, lambda g, k=k, t0=t0, p=p: efficiency_for(g, k, t0, p))
                      / held.measured - 1)  # fmt: skip
    return errors


def report() -> str:
    """Markdown tables: per-GPU efficiencies and every calibration point (measured vs model)."""
    from greenllm.carbon import get_gpu, list_gpus

    lines = ["| GPU | GEMM ratio | e_c | e_m |", "|---|---|---|---|"]
    for name in list_gpus():
        g = get_gpu(name)
        e = efficiency_for(g)
        lines.append(f"| {name} | {gemm_ratio(g):.3f} | {e.compute:.3f} | {e.memory:.3f} |")
    lines += ["", "| point | GPU | set | measured | model | error |", "|---|---|---|---|---|---|"]
    for p in POINTS:
        v = predict(p)
        lines.append(
            f"| {p.name} | {p.gpu} | {'held-out' if p.held_out else 'fit'} | {p.measured:.4g} "
            f"| {v:.4g} | {100 * (v / p.measured - 1):+.1f}% |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Refit and print the tables of docs/simulator-model.md (``--cv``: also model selection)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    k, t0, p = fit()
    print(f"fit: K_COMPUTE={k:.4f} OVERHEAD_S={t0:.6f} ROOFLINE_P={p:.4f}\n")
    print(report())
    if "--cv" in argv:  # model selection: leave-one-out over all points (about a minute)
        print("\n| roofline | LOO mean abs error | LOO max abs error |\n|---|---|---|")
        for label, fixed in (("p fitted", None), ("p = 1 (sum)", 1.0), ("p = 2", 2.0),
                             ("p = 16 (~max)", 16.0)):  # fmt: skip
            errs = [abs(x) for x in leave_one_out(fixed)]
            print(f"| {label} | {100 * sum(errs) / len(errs):.1f}% | {100 * max(errs):.1f}% |")


if __name__ == "__main__":  # pragma: no cover
    main()
