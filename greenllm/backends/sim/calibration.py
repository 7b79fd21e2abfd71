"""Calibration of the step-time model: public measurements and the fit.

Two levels (docs/simulator-model.md gives the derivation and the tables; the ceilings, the
fitted constants and :class:`~.efficiency.Efficiency` live in :mod:`.efficiency`):

1. **Ceilings per GPU** from public micro-benchmarks, one method per resource: the fp16
   ``torch.matmul`` TFLOP/s of large square matrices (:data:`~.efficiency.GEMM_TFLOPS`) and
   the achievable memory bandwidth (:data:`~.efficiency.BANDWIDTH_GBS`). A GPU without a
   measurement borrows the ratio (measured / data sheet) of a named sibling
   (:data:`~.efficiency.LIKE`).
2. **Four global constants** (:class:`Constants`) fitted by least squares (log-ratio
   residuals, scipy) on the points of :data:`POINTS` with ``held_out=False``: per-operator GPU
   times of Llama forward passes (kind ``layers``, Vidur's profiles) and end-to-end serving
   measurements. ``K_COMPUTE`` (share of the GEMM ceiling a forward pass reaches),
   ``LAYER_S`` (GPU time per layer beyond the roofline), ``OVERHEAD_S`` (host time per
   serving step; per-operator GPU times do not contain it) and ``ROOFLINE_P`` (the
   soft-roofline exponent, ``t = (t_c^p + t_m^p)^(1/p)``; p -> inf is the hard max).
   Held-out points measure the error.

``python -c "from greenllm.backends.sim import calibration; calibration.main()"`` refits and
prints the tables of the docs (``main(['--cv'])`` adds the model selection).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

from greenllm.backends.sim.efficiency import Efficiency, efficiency_for, gemm_ratio
from greenllm.backends.sim.models import get_model
from greenllm.backends.sim.roofline import StepModel
from greenllm.carbon import GPUSpec, get_gpu, list_gpus

__all__ = [
    "POINTS",
    "CalibrationPoint",
    "Constants",
    "fit",
    "leave_one_out",
    "main",
    "predict",
    "report",
]


Kind = Literal["layers", "ttft", "tpot", "latency", "throughput"]


@dataclass(frozen=True)
class CalibrationPoint:
    """One public measurement, replayed through the step model by :func:`predict`.

    ``layers``: GPU time (s) of the operators of one forward pass of ``input_tokens`` tokens
    other than the attention kernel (with its KV write) and the LM head, summed over layers
    (kernel times; no host overhead). ``ttft``: one prefill step of ``batch`` x
    ``input_tokens`` (s). ``tpot``: mean decode step over ``output_tokens`` tokens after the
    prompt (s). ``latency``: static batch, prefill then ``output_tokens - 1`` decode steps (s).
    ``throughput``: ``batch x output_tokens`` / latency (tokens/s).
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
# Vidur (Agrawal et al., MLSys 2024) per-operator profiles, microsoft/vidur
# data/profiling/compute/<gpu>/meta-llama/<model>/mlp.csv at commit 7d47513: TP 1, median
# kernel time of each operator; per forward pass = emb + layers x (input_layernorm +
# attn_pre_proj + attn_rope + attn_post_proj + post_attention_layernorm + mlp_up_proj +
# mlp_act + mlp_down_proj + 2 x add: the layer's second residual add is not timed, counted as
# the timed one). Their "a100" is an A100 80GB (README), "h100" an H100 DGX (SXM).
_VIDUR = "microsoft/vidur data/profiling/compute/{}/meta-llama/{}/mlp.csv (sum of medians)"
_VIDUR_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_VIDUR_FIT_TOKENS = (1, 4, 16, 64, 256, 1024)  # the others are held out
_VIDUR_MS: dict[tuple[str, str, str, str], tuple[float, ...]] = {
    ("a100", "A100-80GB", "Llama-2-7b-hf", "llama-2-7b"):
        (9.347, 9.028, 9.093, 9.128, 9.262, 9.604, 9.766, 12.35, 17.95, 33.61, 68.38, 134.4),
    ("a40", "A40", "Llama-2-7b-hf", "llama-2-7b"):
        (23.97, 23.97, 24.04, 24.23, 24.78, 26.52, 30.12, 30.38, 44.81, 71.77, 138.3, 262.3),
    ("h100", "H100", "Llama-2-7b-hf", "llama-2-7b"):  # held out: a GPU not in the fit
        (5.634, 5.507, 5.54, 5.543, 5.852, 5.859, 5.924, 6.438, 9.257, 12.13, 21.28, 40.86),
    ("a100", "A100-80GB", "Meta-Llama-3-8B", "llama-3.1-8b"):  # held out: a model not in it
        (9.763, 9.86, 9.861, 10.06, 10.21, 10.98, 11.33, 13.29, 19.63, 34.88, 75.61, 146.6),
}  # fmt: skip


def _vidur_points() -> tuple[CalibrationPoint, ...]:
    out = []
    for (dev, gpu, repo_model, model), times_ms in _VIDUR_MS.items():
        fit_set = gpu != "H100" and model == "llama-2-7b"
        for n, t_ms in zip(_VIDUR_TOKENS, times_ms, strict=True):
            out.append(CalibrationPoint(
                f"Vidur {dev} {model} {n} tok", model, gpu, "layers", 1, n, 0, t_ms / 1e3,
                _VIDUR.format(dev, repo_model), not (fit_set and n in _VIDUR_FIT_TOKENS),
            ))  # fmt: skip
    return tuple(out)


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
    *_vidur_points(),
)  # fmt: skip


def predict(
    point: CalibrationPoint, eff_of: Callable[[GPUSpec], Efficiency] | None = None
) -> float:
    """The step model's value for ``point``; ``eff_of(gpu) -> Efficiency`` overrides the fit."""
    g = get_gpu(point.gpu)
    eff = None if eff_of is None else eff_of(g)
    sm = StepModel(point.model, g, efficiency=eff)
    b, n_in, n_out = point.batch, point.input_tokens, point.output_tokens
    if point.kind == "layers":  # the step without attention (and its KV write) and LM head
        m = get_model(point.model)
        head = m.vocab_size * m.hidden_size
        flops = sm.flops(n_in) - 2.0 * head - 4.0 * m.n_layers * m.hidden_size * n_in * (
            n_in + 1) / 2  # fmt: skip
        moved = sm.bytes(n_in) - head * m.bytes_per_param - m.kv_cache_bytes(1) * n_in
        return sm.gpu_time_s(flops, moved)
    if point.kind == "ttft":
        return sm.time_s(b * n_in, 0, b)
    decode = [sm.time_s(b, b * (n_in + i), b) for i in range(n_out - 1)]
    if point.kind == "tpot":
        return sum(decode) / len(decode)
    total = sm.time_s(b * n_in, 0, b) + sum(decode)
    return total if point.kind == "latency" else b * n_out / total


class Constants(NamedTuple):
    """The fitted global constants of :mod:`.efficiency` (same names, lower case)."""

    k_compute: float
    layer_s: float
    overhead_s: float
    roofline_p: float

    def efficiency(self, gpu: GPUSpec) -> Efficiency:
        """The :class:`Efficiency` of ``gpu`` under these constants."""
        return efficiency_for(gpu, self.k_compute, self.overhead_s, self.roofline_p,
                              self.layer_s)  # fmt: skip


# start, lower and upper bounds of each constant in the fit
_X0 = Constants(0.8, 2e-5, 0.002, 2.0)
_LO = Constants(0.05, 0.0, 0.0, 1.0)
_HI = Constants(1.0, 1e-3, 0.05, 16.0)


def fit(
    points: tuple[CalibrationPoint, ...] | None = None, fixed: dict[str, float] | None = None
) -> Constants:
    """Least-squares :class:`Constants` over the non-held-out points (log-ratio residuals);
    ``fixed`` holds some constants at given values (e.g. ``{"roofline_p": 1.0}``)."""
    import numpy as np
    from scipy.optimize import least_squares

    pts = [p for p in (POINTS if points is None else points) if not p.held_out]
    fixed = dict(fixed or {})
    free = [f for f in Constants._fields if f not in fixed]

    def constants(x: np.ndarray) -> Constants:
        return Constants(**fixed, **dict(zip(free, (float(v) for v in x), strict=True)))

    def residuals(x: np.ndarray) -> list[float]:
        c = constants(x)
        return [math.log(predict(pt, c.efficiency) / pt.measured) for pt in pts]

    pick = [Constants._fields.index(f) for f in free]
    res = least_squares(
        residuals,
        [_X0[i] for i in pick],
        bounds=([_LO[i] for i in pick], [_HI[i] for i in pick]),
        x_scale=[_X0[i] for i in pick],
    )
    return constants(res.x)


def leave_one_out(fixed: dict[str, float] | None = None) -> list[float]:
    """Relative error on each point of :data:`POINTS` when fitted on all the others."""
    errors = []
    for i, held in enumerate(POINTS):
        rest = tuple(replace(p, held_out=False) for j, p in enumerate(POINTS) if j != i)
        c = fit(rest, fixed)
        errors.append(predict(held, c.efficiency) / held.measured - 1)
    return errors


def _summary(points: list[CalibrationPoint]) -> str:
    errs = [abs(predict(p) / p.measured - 1) for p in points]
    return f"mean |error| {100 * sum(errs) / len(errs):.1f} %, max {100 * max(errs):.1f} %"


def report() -> str:
    """Markdown tables: per-GPU efficiencies, the per-operator points (model error by token
    count) and the end-to-end points (measured vs model), with fit and held-out summaries."""
    lines = ["| GPU | GEMM ratio | e_c | e_m |", "|---|---|---|---|"]
    for name in list_gpus():
        g = get_gpu(name)
        e = efficiency_for(g)
        lines.append(f"| {name} | {gemm_ratio(g):.3f} | {e.compute:.3f} | {e.memory:.3f} |")
    layers = [p for p in POINTS if p.kind == "layers"]
    series: dict[tuple[str, str], list[CalibrationPoint]] = {}
    for p in layers:
        series.setdefault((p.gpu, p.model), []).append(p)
    tokens = sorted({p.input_tokens for p in layers})
    lines += ["", "| GPU | model | row | " + " | ".join(map(str, tokens)) + " |",
              "|---|---|---|" + "---|" * len(tokens)]  # fmt: skip
    for (gpu, model), pts in series.items():
        by_n = {p.input_tokens: p for p in pts}
        measured = [f"{1e3 * by_n[n].measured:.4g}" if n in by_n else "" for n in tokens]
        errors = []
        for n in tokens:
            p = by_n.get(n)
            cell = "" if p is None else f"{100 * (predict(p) / p.measured - 1):+.0f}%"
            errors.append(cell if p is None or p.held_out else f"**{cell}**")
        lines.append(f"| {gpu} | {model} | measured (ms) | " + " | ".join(measured) + " |")
        lines.append("| | | model error | " + " | ".join(errors) + " |")
    lines += ["", "| point | model | GPU | kind | batch | in/out | set | measured | model "
              "| error |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for p in POINTS:
        if p.kind == "layers":
            continue
        v = predict(p)
        lines.append(
            f"| {p.name} | {p.model} | {p.gpu} | {p.kind} | {p.batch} | {p.input_tokens}/"
            f"{p.output_tokens} | {'held-out' if p.held_out else 'fit'} | {p.measured:.4g} "
            f"| {v:.4g} | {100 * (v / p.measured - 1):+.1f}% |"
        )
    lines.append("")
    for label, pts in (
        ("per-operator, fit", [p for p in layers if not p.held_out]),
        ("per-operator, held out", [p for p in layers if p.held_out]),
        ("end-to-end, fit", [p for p in POINTS if p.kind != "layers" and not p.held_out]),
        ("end-to-end, held out", [p for p in POINTS if p.kind != "layers" and p.held_out]),
    ):
        lines.append(f"* {label} ({len(pts)} points): {_summary(pts)}")
    return "\n".join(lines)


# Model selection (main --cv): the chosen model and the alternatives it was compared with.
_VARIANTS: tuple[tuple[str, dict[str, float]], ...] = (
    ("t_layer, p fitted (chosen)", {}),
    ("t_layer = 0 (one overhead, as before)", {"layer_s": 0.0}),
    ("p = 1 (sum)", {"roofline_p": 1.0}),
    ("p = 2", {"roofline_p": 2.0}),
    ("p = 16 (~max)", {"roofline_p": 16.0}),
)


def main(argv: list[str] | None = None) -> None:
    """Refit and print the tables of docs/simulator-model.md (``--cv``: also model selection)."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    c = fit()
    print(f"fit: K_COMPUTE={c.k_compute:.4f} LAYER_S={c.layer_s:.4g} "
          f"OVERHEAD_S={c.overhead_s:.6f} ROOFLINE_P={c.roofline_p:.4f}\n")  # fmt: skip
    print(report())
    if "--cv" in argv:  # model selection: leave-one-out over all points (about a minute)
        print("\n| model | LOO mean abs error | LOO max abs error |\n|---|---|---|")
        for label, fixed in _VARIANTS:
            errs = [abs(x) for x in leave_one_out(fixed)]
            print(f"| {label} | {100 * sum(errs) / len(errs):.1f}% | {100 * max(errs):.1f}% |")


if __name__ == "__main__":  # pragma: no cover
    main()
