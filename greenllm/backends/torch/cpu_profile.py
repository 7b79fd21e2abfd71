"""Measure this CPU with the engine's kernels: the ``cpu`` device's profile
(:class:`greenllm.backends.sim.CpuProfile`; what each field means is there).

All in this process, torch float32 at ``threads`` threads, CPU seconds of the calling thread,
medians of repeats (:func:`measure_cpu`, about 5 s):

* the weight stream: one-layer sets of the model's matrices (q, k, v, o, gate, up, down),
  copied to 256 MiB, multiplied by 1, 2, 3, 4 and 8 rows (``linear``, as the engine's layers);
* the GEMM rate: the same matrices (64 MiB) by 256 rows, less the stream's time for them;
* attention: causal ``scaled_dot_product_attention`` of 256 tokens with the model's heads;
* the framework's fixed times: one-token forwards of tiny Llamas (hidden 64, vocab 256) with
  1, 10, 20 and 30 layers, a line in the layer count.

Profiles are cached per process and in ``<cache>/cpu-profile-v2.json`` (``$GREENLLM_CACHE`` or
``~/.cache/greenllm``), keyed by CPU model, logical CPUs, threads, torch version and model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from greenllm.backends.sim import CpuProfile, get_model
from greenllm.backends.torch.timing import decode_s, median, thread_clock
from greenllm.errors import ConfigError, missing_extra

try:
    import torch
except ImportError as _err:  # pragma: no cover - exercised only without torch
    raise missing_extra("torch", "torch") from _err

__all__ = ["measure_cpu"]

logger = logging.getLogger(__name__)

_STREAM_BYTES = 256 << 20
_GEMM_BYTES = 64 << 20
_GEMM_ROWS = 256
_ATTENTION_TOKENS = 256
_STREAM_ROWS = (1, 2, 3, 4, 8)
_KEEPS_RATE = 0.9  # a row count "keeps the one-row rate" within 10 %
_CACHE_FILE = "cpu-profile-v2.json"
_LOCK = threading.Lock()
_MEASURED: dict[str, CpuProfile] = {}


def _timed(f: Callable[[], object], reps: int) -> float:
    f()
    times = []
    for _ in range(reps):
        start = thread_clock()
        f()
        times.append(thread_clock() - start)
    return median(times)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _layer_shapes(model: str) -> list[tuple[int, int]]:
    """(out, in) of one decoder layer's linear maps."""
    m = get_model(model)
    h, inter, kv = m.hidden_size, m.intermediate_size, m.n_kv_heads * m.head_dim
    return [(h, h), (kv, h), (kv, h), (h, h), (inter, h), (inter, h), (h, inter)]


def _weights(shapes: list[tuple[int, int]], nbytes: int) -> list[torch.Tensor]:
    layer_bytes = 4 * sum(o * i for o, i in shapes)
    copies = max(1, nbytes // layer_bytes)
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(o, i, generator=gen) for _ in range(copies) for o, i in shapes]


def _apply(ws: list[torch.Tensor], rows: int) -> Callable[[], object]:
    xs = {w.shape[1]: torch.rand(rows, w.shape[1]) for w in ws}
    return lambda: [torch.nn.functional.linear(xs[w.shape[1]], w) for w in ws]


def _stream(model: str, reps: int) -> tuple[float, int, float]:
    """(one-row stream GB/s, gemv_rows, pack_factor)."""
    ws = _weights(_layer_shapes(model), _STREAM_BYTES)
    nbytes = 4 * sum(w.numel() for w in ws)
    rate = {r: nbytes / _timed(_apply(ws, r), reps) / 1e9 for r in _STREAM_ROWS}
    one = rate[1]
    gemv_rows = 1
    for r in (2, 3):
        if rate[r] < _KEEPS_RATE * one:
            break
        gemv_rows = r
    return one, gemv_rows, max(0.0, one / rate[8] - 1.0)


def _gemm(model: str, stream_gbs: float, pack_factor: float, reps: int) -> float:
    """GFLOP/s of linear layers over many rows, their weight traffic taken out (p = 1)."""
    ws = _weights(_layer_shapes(model), _GEMM_BYTES)
    flops = sum(2.0 * _GEMM_ROWS * w.numel() for w in ws)
    traffic_s = 4 * sum(w.numel() for w in ws) * (1 + pack_factor) / (stream_gbs * 1e9)
    t = _timed(_apply(ws, _GEMM_ROWS), reps)
    return flops / max(t - traffic_s, 0.5 * t) / 1e9


def _attention_cost(model: str, gemm_gflops: float, reps: int) -> float:
    """A causal attention FLOP of SDPA in GEMM FLOPs (4 h FLOPs per attended pair)."""
    m, n = get_model(model), _ATTENTION_TOKENS
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.rand(1, m.n_heads, n, m.head_dim, generator=gen) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    t = _timed(lambda: sdpa(q, k, v, is_causal=True), reps)
    return t * gemm_gflops * 1e9 / (4.0 * m.hidden_size * n * (n + 1) / 2)


def _fixed_times(reps: int) -> tuple[float, float]:
    """(seconds per forward, seconds per layer) of one-token forwards of tiny Llamas."""
    import numpy as np

    from greenllm.engine import tiny_llama

    layers = (1, 10, 20, 30)
    times = [decode_s(tiny_llama(vocab_size=256, hidden_size=64, n_layers=n, seed=0), 8, reps)
             for n in layers]  # fmt: skip
    per_layer, base = np.polyfit(layers, times, 1)
    return max(float(base), 0.0), max(float(per_layer), 0.0)


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


def _profile(model: str, threads: int, reps: int) -> CpuProfile:
    with _torch_threads(threads), torch.inference_mode():
        stream, gemv_rows, pack = _stream(model, reps)
        gemm = _gemm(model, stream, pack, reps)
        attention = _attention_cost(model, gemm, 2 * reps)
        step_s, layer_s = _fixed_times(3 * reps)
    return CpuProfile(
        model=get_model(model).name, threads=threads, cpu_model=_cpu_model(),
        vcpus=os.cpu_count() or 1, ram_gb=_ram_gb(), kernels=f"torch {torch.__version__}",
        gemm_gflops=gemm, stream_gbs=stream, gemv_rows=gemv_rows, pack_factor=pack,
        attention_cost=attention, step_s=step_s, layer_s=layer_s,
    )  # fmt: skip


def measure_cpu(
    model: str = "smollm2-135m", threads: int = 1, *, refresh: bool = False, reps: int = 5
) -> CpuProfile:
    """This CPU's profile for ``model``'s shapes at ``threads`` torch threads (module
    docstring); cached per process and on disk unless ``refresh``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads = {threads!r}: must be an integer >= 1")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigError(f"reps = {reps!r}: must be an integer >= 1")
    name = get_model(model).name
    key = f"{_cpu_model()}|{os.cpu_count()}|{threads}|torch {torch.__version__}|{name}"
    with _LOCK:
        if not refresh and key in _MEASURED:
            return _MEASURED[key]
        path = _cache_path()
        stored: dict[str, dict[str, object]] = {}
        with contextlib.suppress(OSError, ValueError):
            stored = json.loads(path.read_text())
        profile = None
        if not refresh and key in stored:
            with contextlib.suppress(ConfigError, TypeError):
                profile = CpuProfile.from_dict(stored[key])
        if profile is None:
            profile = _profile(name, threads, reps)
            logger.info("cpu profile for %s: %s", name, profile)
            stored[key] = profile.to_dict()
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp-{os.getpid()}")
                tmp.write_text(json.dumps(stored, indent=1))
                tmp.replace(path)
            except OSError as err:
                logger.warning("cannot cache the cpu profile in %s: %s", path, err)
        _MEASURED[key] = profile
        return profile
