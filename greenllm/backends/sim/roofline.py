"""Roofline step-time model: how long one forward pass of a Llama-shaped model takes on a GPU.

One step (a forward pass of ``b`` sequences bringing ``N`` new tokens in total, on top of
``C`` tokens of earlier context summed over the batch) takes

    t = (t_c^p + t_m^p)^(1/p) + L x t_layer + t_host
    t_c = F / (P x e_c),    t_m = B / (W x e_m)

* ``F`` FLOPs = 2 x P_lin x N (every linear layer) + 2 x V x h x R (LM head over R rows: one
  per sequence, R = min(N, b), as vLLM samples; a verification passes ``logit_rows`` = the
  K + 1 rows it scores per sequence) + 4 x L x h x A (QK^T and AV), where ``A`` counts the
  (query, key) pairs attended: A = (N / b) x C + N x (N / b + 1) / 2 (causal; new tokens split
  evenly over the batch: exact for decode and for one prefill).
* ``B`` bytes = weights read once (the input-embedding table only for the N rows looked up)
  + KV read (C x kv bytes/token) + KV written (N x kv bytes/token) + activations
  (N x L x (18 h + 2 kv + 6 I) x bytes/element: each kernel reads its input, writes its output).
* ``P`` dense fp16 tensor peak and ``W`` memory bandwidth from the data sheet
  (:func:`greenllm.carbon.get_gpu`); ``e_c``, ``e_m`` and the soft-roofline exponent ``p`` from
  :mod:`.efficiency` (p -> inf is the classical max); a step of N > gemv_rows new tokens reads
  the weights 1 + pack_factor times, and ``t_c`` counts each attention FLOP attention_cost
  times (on GPUs gemv_rows and pack_factor are 0 and attention_cost is 1). The ``cpu`` device
  (:mod:`.cpu`) has measured ceilings and its own efficiency, from its registered profile.
* ``L x t_layer``: time per layer that neither roof explains (on a GPU the latency of a layer's
  ~10 small kernels); ``t_host``: host time per serving step (scheduler, inputs, sampling).
  Their sum is :attr:`StepModel.overhead_s`; :meth:`StepModel.gpu_time_s` leaves ``t_host``
  out.

Everything is linear in ``C``, so the fast path takes the total context over the batch
(decode sequences have different contexts): ``forward_time_s(context_tokens=c, batch=b)`` is
``StepModel.time_s(new_tokens, b * c, b)``.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

from greenllm.backends.sim.cpu import CPU_DEVICE, cpu_efficiency
from greenllm.backends.sim.efficiency import (
    MEMORY_POWER_FRACTION,
    Efficiency,
    efficiency_for,
    tensor_tflops,
)
from greenllm.backends.sim.models import get_model
from greenllm.carbon import GPUSpec, get_gpu
from greenllm.config import ModelSpec
from greenllm.errors import ConfigError

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "StepCost",
    "StepModel",
    "forward_time_s",
    "gpu_memory_bytes",
    "kv_capacity_tokens",
    "step_cost",
    "step_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepCost:
    """One step: time, work, traffic, the binding roof, and the power model's utilisation.

    ``utilisation`` = max(t_c, beta x t_m) / ``time_s`` in [0, 1] with beta the
    :data:`~.efficiency.MEMORY_POWER_FRACTION`: 1 at the tensor roof, ``beta`` when
    bandwidth-bound, lower as the fixed overhead takes a larger share of the step.
    """

    time_s: float
    flops: float
    bytes: float
    compute_bound: bool
    utilisation: float
    compute_s: float
    memory_s: float


class StepModel:
    """Fast step-time model of one (model, GPU) pair: :meth:`time_s` is a few float operations.

    ``step_model(model, gpu)`` caches one per pair; pass ``efficiency`` to override the
    calibrated factors (as :func:`.calibration.fit` does).
    """

    __slots__ = ("_act_b", "_att_f", "_att_t", "_beta", "_emb_row_b", "_flops_per_s", "_gemv_n",
                 "_head_f", "_inv_p", "_kv_b", "_layers_s", "_lin_f", "_mem_bps", "_p",
                 "_per_new_b", "_w_b", "_w_gemm_b", "efficiency", "gpu", "model",
                 "overhead_s")  # fmt: skip

    def __init__(
        self, model: str | ModelSpec, gpu: str | GPUSpec, efficiency: Efficiency | None = None
    ) -> None:
        m, g = get_model(model), get_gpu(gpu)
        if efficiency is not None:
            eff = efficiency
        else:
            eff = cpu_efficiency() if g.name == CPU_DEVICE else efficiency_for(g)
        if not (eff.compute > 0 and eff.memory > 0 and eff.overhead_s >= 0 and eff.roofline_p >= 1
                and eff.layer_s >= 0 and eff.gemv_rows >= 0 and eff.pack_factor >= 0
                and eff.attention_cost > 0):  # fmt: skip
            raise ConfigError(
                f"efficiency = {eff!r}: need compute, memory > 0, overhead_s, layer_s >= 0, "
                f"p >= 1, gemv_rows >= 0, pack_factor >= 0, attention_cost > 0"
            )
        self.model, self.gpu, self.efficiency = m, g, eff
        h, L, bpe = m.hidden_size, m.n_layers, m.bytes_per_param
        embed = m.vocab_size * h
        self._flops_per_s = tensor_tflops(g) * 1e12 * eff.compute
        self._mem_bps = g.mem_bw_gbs * 1e9 * eff.memory
        self._layers_s = float(L * eff.layer_s)
        self.overhead_s = float(eff.overhead_s) + self._layers_s  # fixed time of every step
        self._gemv_n = float(eff.gemv_rows)
        self._p = float(eff.roofline_p)
        self._inv_p = 1.0 / self._p
        self._beta = MEMORY_POWER_FRACTION
        self._lin_f = 2.0 * (m.n_params - embed * (1 if m.tie_embeddings else 2))
        self._head_f = 2.0 * embed
        self._att_f = 4.0 * L * h
        self._att_t = self._att_f * eff.attention_cost  # attention FLOPs as GEMM-FLOP time
        self._w_b = float(m.weight_bytes - (0 if m.tie_embeddings else embed * bpe))
        self._w_gemm_b = self._w_b * (1.0 + eff.pack_factor)  # a GEMM step (N > gemv_rows)
        self._emb_row_b = 0.0 if m.tie_embeddings else float(h * bpe)
        self._kv_b = float(m.kv_cache_bytes(1))
        kv_dim = m.n_kv_heads * m.head_dim
        self._act_b = float(L * (18 * h + 2 * kv_dim + 6 * m.intermediate_size) * bpe)
        self._per_new_b = self._emb_row_b + self._kv_b + self._act_b

    def flops(
        self,
        new_tokens: float,
        context_tokens_total: float = 0.0,
        batch: float = 1.0,
        logit_rows: float | None = None,
    ) -> float:
        """FLOPs of one step (see the module docstring)."""
        n, b = new_tokens, batch
        rows = min(n, b) if logit_rows is None else logit_rows
        attended = (n / b) * context_tokens_total + n * (n / b + 1.0) / 2.0
        return self._lin_f * n + self._head_f * rows + self._att_f * attended

    def bytes(
        self, new_tokens: float, context_tokens_total: float = 0.0, batch: float = 1.0
    ) -> float:
        """Bytes moved between the GPU's memory and its chip in one step."""
        w = self._w_b if new_tokens <= self._gemv_n else self._w_gemm_b
        return w + self._per_new_b * new_tokens + self._kv_b * context_tokens_total

    def time_s(
        self,
        new_tokens: float,
        context_tokens_total: float = 0.0,
        batch: float = 1.0,
        logit_rows: float | None = None,
    ) -> float:
        """Seconds for one step: ``new_tokens`` over ``batch`` sequences whose earlier contexts
        sum to ``context_tokens_total``; the LM head runs on ``logit_rows`` rows (default one
        per sequence). Hot path: no validation, no attribute lookups of specs."""
        n, c, b = new_tokens, context_tokens_total, batch
        rows = (n if n < b else b) if logit_rows is None else logit_rows
        f = self._lin_f * n + self._head_f * rows
        f += self._att_t * ((n / b) * c + n * (n / b + 1.0) * 0.5)
        tc = f / self._flops_per_s
        w = self._w_b if n <= self._gemv_n else self._w_gemm_b
        tm = (w + self._per_new_b * n + self._kv_b * c) / self._mem_bps
        p = self._p
        return (tc**p + tm**p) ** self._inv_p + self.overhead_s

    def gpu_time_s(self, flops: float, bytes_moved: float) -> float:
        """GPU seconds of kernels doing ``flops`` and moving ``bytes_moved`` over all layers:
        the soft roofline plus the per-layer time, without the host's per-step overhead."""
        tc = flops / self._flops_per_s
        tm = bytes_moved / self._mem_bps
        return (tc**self._p + tm**self._p) ** self._inv_p + self._layers_s

    def time_util(
        self,
        new_tokens: float,
        context_tokens_total: float = 0.0,
        batch: float = 1.0,
        logit_rows: float | None = None,
    ) -> tuple[float, float]:
        """``(time_s, utilisation)`` of one step: :meth:`cost` without building a StepCost."""
        n, c, b = new_tokens, context_tokens_total, batch
        rows = (n if n < b else b) if logit_rows is None else logit_rows
        f = self._lin_f * n + self._head_f * rows
        f += self._att_t * ((n / b) * c + n * (n / b + 1.0) * 0.5)
        tc = f / self._flops_per_s
        w = self._w_b if n <= self._gemv_n else self._w_gemm_b
        tm = (w + self._per_new_b * n + self._kv_b * c) / self._mem_bps
        p = self._p
        t = (tc**p + tm**p) ** self._inv_p + self.overhead_s
        bm = self._beta * tm
        return t, (tc if tc > bm else bm) / t

    def cost(
        self,
        new_tokens: float,
        context_tokens_total: float = 0.0,
        batch: float = 1.0,
        logit_rows: float | None = None,
    ) -> StepCost:
        """The full :class:`StepCost` of one step (for reports and the power model)."""
        f = self.flops(new_tokens, context_tokens_total, batch, logit_rows)
        byt = self.bytes(new_tokens, context_tokens_total, batch)
        t, u = self.time_util(new_tokens, context_tokens_total, batch, logit_rows)
        n, b = new_tokens, batch
        attended = (n / b) * context_tokens_total + n * (n / b + 1.0) / 2.0
        tc = (f + (self._att_t - self._att_f) * attended) / self._flops_per_s
        tm = byt / self._mem_bps
        return StepCost(t, f, byt, tc >= tm, u, tc, tm)


@functools.lru_cache(maxsize=256)
def _cached(model: ModelSpec, gpu: GPUSpec, efficiency: Efficiency | None) -> StepModel:
    return StepModel(model, gpu, efficiency)


def step_model(model: str | ModelSpec, gpu: str | GPUSpec) -> StepModel:
    """The cached, calibrated :class:`StepModel` of ``model`` on ``gpu`` (names or specs)."""
    g = get_gpu(gpu)  # the cpu device's efficiency is its registered profile's (keyed by it)
    return _cached(get_model(model), g, cpu_efficiency() if g.name == CPU_DEVICE else None)


def _check(new_tokens: int, context_tokens: int, batch: int) -> None:
    for name, v, lo in (("new_tokens", new_tokens, 1), ("context_tokens", context_tokens, 0),
                        ("batch", batch, 1)):  # fmt: skip
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < lo:
            raise ConfigError(f"{name} = {v!r}: must be a finite number >= {lo}")
    if batch > new_tokens:
        raise ConfigError(
            f"batch = {batch!r} > new_tokens = {new_tokens!r}: each sequence in a step brings at "
            f"least one new token (allowed: 1 <= batch <= new_tokens)"
        )


def forward_time_s(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    new_tokens: int,
    context_tokens: int = 0,
    batch: int = 1,
) -> float:
    """Seconds of one forward pass of ``batch`` sequences that together bring ``new_tokens`` new
    tokens, each with ``context_tokens`` tokens of earlier context (DESIGN.md). Equals
    ``step_model(model, gpu).time_s(new_tokens, batch * context_tokens, batch)``."""
    _check(new_tokens, context_tokens, batch)
    return step_model(model, gpu).time_s(new_tokens, batch * context_tokens, batch)


def step_cost(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    new_tokens: int,
    context_tokens: int = 0,
    batch: int = 1,
) -> StepCost:
    """:class:`StepCost` of the same step as :func:`forward_time_s`."""
    _check(new_tokens, context_tokens, batch)
    return step_model(model, gpu).cost(new_tokens, batch * context_tokens, batch)


# --- memory -------------------------------------------------------------------------------------
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of the GPU memory it may use
CUDA_CONTEXT_BYTES = 512 * 2**20  # CUDA context + cuBLAS workspace held outside the KV pool
# Memory the driver reports where it differs from the data sheet's GiB: the T4 reserves 1/16
# of its GDDR6 for ECC (on by default in clouds); nvidia-smi shows 15360 MiB (e.g. Colab).
_REPORTED_MIB = {"T4": 15360}


def gpu_memory_bytes(gpu: str | GPUSpec) -> int:
    """Device memory as the driver reports it (data-sheet GiB, less ECC where reserved)."""
    g = get_gpu(gpu)
    return int(_REPORTED_MIB.get(g.name, g.vram_gb * 1024) * 2**20)


def kv_capacity_tokens(
    model: str | ModelSpec,
    gpu: str | GPUSpec,
    *,
    other_models: tuple[str | ModelSpec, ...] = (),
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    max_batched_tokens: int = 2048,
) -> int:
    """Tokens of context whose KV cache fits on ``gpu``, as vLLM sizes its pool:
    ``gpu_memory_utilization`` x device memory, less the CUDA context, the weights of ``model``
    and ``other_models`` and the peak activations of a ``max_batched_tokens`` step, divided by
    the KV bytes per token of ``model`` plus ``other_models`` (a draft on the same GPU keeps KV
    for the same tokens as its target). Raises :class:`~greenllm.errors.InfeasibleError` with
    the numbers if not even one token fits."""
    from greenllm.errors import InfeasibleError

    u = gpu_memory_utilization
    if isinstance(u, bool) or not isinstance(u, (int, float)) or not 0 < u <= 1:
        raise ConfigError(f"gpu_memory_utilization = {u!r}: must be in (0, 1] (vLLM default 0.9)")
    if (
        isinstance(max_batched_tokens, bool)
        or not isinstance(max_batched_tokens, int)
        or (max_batched_tokens < 1)
    ):
        raise ConfigError(f"max_batched_tokens = {max_batched_tokens!r}: must be an int >= 1")
    m, g = get_model(model), get_gpu(gpu)
    models = [m, *(get_model(o) for o in other_models)]
    budget = gpu_memory_bytes(g) * u
    weights = sum(x.weight_bytes for x in models)
    act = max(_activation_bytes(x, max_batched_tokens) for x in models)
    free = budget - CUDA_CONTEXT_BYTES - weights - act
    per_token = sum(x.kv_cache_bytes(1) for x in models)  # every model keeps KV of each token
    tokens = int(free // per_token) if free > 0 else 0
    if tokens < 1:
        gib = 2**30
        raise InfeasibleError(
            f"{' + '.join(x.name for x in models)} do not fit on {g.name}: weights "
            f"{weights / gib:.2f} GiB + activations {act / gib:.2f} GiB + CUDA context "
            f"{CUDA_CONTEXT_BYTES / gib:.2f} GiB > {u:g} x {gpu_memory_bytes(g) / gib:.2f} GiB = "
            f"{budget / gib:.2f} GiB usable; use a GPU with more memory, a smaller model, or a "
            f"higher gpu_memory_utilization"
        )
    return tokens


def _activation_bytes(m: ModelSpec, tokens: int) -> int:
    """Peak activations of a ``tokens``-token step: residual, QKV, MLP buffers and fp32 logits
    for one row per sequence (at most 256 sequences)."""
    kv_dim = m.n_kv_heads * m.head_dim
    per_token = (3 * m.hidden_size + 2 * kv_dim + 3 * m.intermediate_size) * m.bytes_per_param
    return tokens * per_token + min(tokens, 256) * m.vocab_size * 4
