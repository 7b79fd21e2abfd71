"""Calibration of the step-time model: public end-to-end measurements and the fit.

Two levels (docs/simulator-model.md gives the derivation and the tables; the ceilings, the
fitted constants and :class:`~.efficiency.Efficiency` live in :mod:`.efficiency`):

1. **Ceilings per GPU** from public micro-benchmarks, one method per resource: the fp16
   ``torch.matmul`` TFLOP/s of large square matrices (:data:`~.efficiency.GEMM_TFLOPS`) and
   the achievable memory bandwidth (:data:`~.efficiency.BANDWIDTH_GBS`). A GPU without a
   measurement borrows the ratio (measured / data sheet) of a named sibling
   (:data:`~.efficiency.LIKE`).
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from greenllm.backends.sim.efficiency import Efficiency, efficiency_for, gemm_ratio
from greenllm.backends.sim.roofline import StepModel
from greenllm.carbon import GPUSpec, get_gpu, list_gpus

__all__ = [
    "POINTS",
    "CalibrationPoint",
    "fit",
    "leave_one_out",
    "main",
    "predict",
    "report",
]


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
    errors = []
    for i, held in enumerate(POINTS):
        rest = tuple(replace(p, held_out=False) for j, p in enumerate(POINTS) if j != i)
        k, t0, p = fit(rest, roofline_p)
        errors.append(predict(held, lambda g, k=k, t0=t0, p=p: efficiency_for(g, k, t0, p))
                      / held.measured - 1)  # fmt: skip
    return errors


def report() -> str:
    """Markdown tables: per-GPU efficiencies and every calibration point (measured vs model)."""
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
