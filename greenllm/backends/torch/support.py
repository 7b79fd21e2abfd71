"""Helpers of :class:`~greenllm.backends.torch.backend.TorchBackend`: engine settings from a
Configuration, prompts of exact token lengths, open-loop serving, and per-run counters.

Imported only by the torch backend (it imports torch lazily through the engine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greenllm.backends.prompts import fit_length, prompt_texts
from greenllm.config import ConfigKind, Configuration
from greenllm.engine import resolve_model_dir
from greenllm.errors import ConfigError, WorkerError
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = [
    "MODE_OF_KIND",
    "EngineKey",
    "activity_intervals",
    "build_prompts",
    "counters",
    "delta",
    "engine_key",
    "max_context",
    "serve_open_loop",
]

logger = logging.getLogger(__name__)

#: Configuration kind -> Engine mode.
MODE_OF_KIND: dict[ConfigKind, str] = {
    ConfigKind.STANDALONE: "standalone",
    ConfigKind.SPEC_DECODE: "spec_decode",
    ConfigKind.DSD: "dsd",
    ConfigKind.DPD: "dpd",
}


@dataclass(frozen=True)
class EngineKey:
    """Everything that fixes a started Engine; runs with equal keys share one engine."""

    mode: str
    target: str
    draft: str | None
    k: int
    link_gbps: float | None  # emulated link bandwidth, None = the real transport, unshaped
    link_latency_s: float
    lean: bool
    overlap: bool
    device_new: str
    device_old: str


def engine_key(cfg: Configuration, *, emulate_link: bool, link_latency_s: float, lean: bool,
               overlap: bool, devices: tuple[str, str]) -> EngineKey:  # fmt: skip
    """The engine ``cfg`` needs; model names resolved to local folders (ConfigError if unknown).

    ``smollm2-135m-draft`` is the distilled draft when it is cached, else the layer-skip draft
    (:func:`greenllm.engine.model.resolve.resolve_model_dir`), so a run never starts a
    distillation.
    """
    mode = MODE_OF_KIND[cfg.kind]
    target = str(resolve_model_dir(cfg.target_model))
    draft = None
    if mode in ("spec_decode", "dsd"):
        if not cfg.draft_model:
            raise ConfigError(f"{cfg.kind.label} needs draft_model (e.g. 'smollm2-135m-draft')")
        draft = str(resolve_model_dir(cfg.draft_model))
    two_gpus = mode in ("dsd", "dpd")
    gbps = float(cfg.link_gbps) if (emulate_link and two_gpus and cfg.link_gbps) else None
    return EngineKey(mode, target, draft, int(cfg.num_speculative_tokens), gbps,
                     float(link_latency_s) if gbps else 0.0, bool(lean), bool(overlap),
                     devices[0], devices[1] if two_gpus else devices[0])  # fmt: skip


def max_context(folder: str) -> int:
    """``max_position_embeddings`` of the model in ``folder`` (a very large number if absent)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return int(config.get("max_position_embeddings", 1 << 30))


def build_prompts(requests: RequestSet, tokenizer: Any, folder: str, seed: int) -> list[list[int]]:
    """One prompt of exactly ``input_tokens`` token ids per request.

    With a tokenizer: the request's own prompt text, else real HumanEval prompts in order,
    tokenised and repeated or cut to length (the vLLM backend's :func:`fit_length`). Without
    one (a bare test model): seeded random ids of the model's vocabulary (ids >= 2).
    """
    sizes = [int(n) for n in requests.input_tokens]
    if tokenizer is None:
        vocab = int(json.loads((Path(folder) / "config.json").read_text())["vocab_size"])
        rng = np.random.default_rng([int(seed), 11])
        return [rng.integers(2, vocab, n).tolist() for n in sizes]
    texts = prompt_texts(len(requests), requests.prompts)
    cache: dict[str, list[int]] = {}
    for text in texts:
        if text not in cache:
            cache[text] = list(tokenizer(text)["input_ids"])
    filler = next(iter(cache.values()))
    return [fit_length(cache[t], n, filler) for t, n in zip(texts, sizes, strict=True)]


def serve_open_loop(engine: Any, work: Sequence[tuple[float, list[int], Any]],
                    timeout_s: float) -> list[Any]:  # fmt: skip
    """Submit each ``(epoch_s, prompt, sampling)`` at ``epoch_s`` (open loop) and return the
    outputs in order (``WorkerError`` instead of an output for a request that failed)."""

    async def one(at_s: float, prompt: list[int], sampling: Any) -> Any:
        await asyncio.sleep(max(0.0, at_s - time.time()))
        while time.time() < at_s:  # asyncio may wake a little early
            await asyncio.sleep(at_s - time.time())
        try:
            return await engine.generate(prompt, sampling, timeout_s=timeout_s)
        except WorkerError as err:
            logger.warning("request failed: %s", err)
            return err

    async def run_all() -> list[Any]:
        return list(await asyncio.gather(*(one(*w) for w in work)))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(run_all())
    box: list[Any] = []  # the caller runs an event loop (e.g. a notebook): serve in a thread
    thread = threading.Thread(target=lambda: box.append(asyncio.run(run_all())))
    thread.start()
    thread.join()
    return box[0]


def activity_intervals(timings: RequestTimings, busy_s: float,
                       duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Busy ``(starts, ends, utilisation)`` of one worker for the power model.

    The union of the requests' ``[arrival, finish]`` windows, at one utilisation chosen so that
    utilisation x window length equals ``busy_s``, the compute seconds the worker measured: the
    modelled dynamic energy is then ``(P_max - P_idle) x busy_s`` (capped at full utilisation).
    """
    served = timings.served
    spans = sorted(zip(np.clip(timings.arrival_s[served], 0, duration_s),
                       np.clip(timings.finish_s[served], 0, duration_s), strict=True))  # fmt: skip
    starts: list[float] = []
    ends: list[float] = []
    for s, e in spans:
        if starts and s <= ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(float(s))
            ends.append(float(e))
    length = float(sum(e - s for s, e in zip(starts, ends, strict=True)))
    util = min(1.0, busy_s / length) if length > 0 else 0.0
    return np.asarray(starts), np.asarray(ends), np.full(len(starts), util)


def counters(stats: Any) -> dict[str, Any]:
    """The cumulative EngineStats numbers a run reports (as plain data, for :func:`delta`)."""
    return {
        "busy_s": {"new": stats.busy_s("new"), "old": stats.busy_s("old")},
        "bytes_new_to_old": dict(stats.bytes_new_to_old),
        "bytes_old_to_new": dict(stats.bytes_old_to_new),
        "proposed_tokens": stats.proposed_tokens,
        "accepted_tokens": stats.accepted_tokens,
        "verify_steps": stats.verify_steps,
        "probs_wait_s": stats.probs_wait_s,
        "row_fetches": stats.row_fetches,
        "fallback_requests": stats.fallback_requests,
        "reruns": stats.reruns,
    }


def delta(after: Any, before: Any) -> Any:
    """``after - before`` for nested dicts of numbers (keys missing before count as 0)."""
    if isinstance(after, dict):
        return {k: delta(v, before.get(k, 0) if isinstance(before, dict) else 0)
                for k, v in after.items()}  # fmt: skip
    return after - before
