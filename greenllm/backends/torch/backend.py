"""``TorchBackend``: the four configurations on greenllm's own PyTorch engine
(:class:`greenllm.engine.Engine`), behind the Backend protocol.

    backend = TorchBackend()
    cfg = Configuration(kind="dsd", old_gpu="T4", target_model="smollm2-135m",
                        draft_model="smollm2-135m-draft")
    result = backend.run(cfg, workload, requests=RequestSet.poisson(1.0, size, n=10))
    backend.close()

Kinds map to engine modes (standalone, spec_decode, dsd, dpd); ``num_speculative_tokens`` is
the engine's K. Models are aliases (``smollm2-135m``, ``smollm2-135m-draft``, ...) or local
Hugging Face folders; simulator names such as ``llama-1b`` have no weights (ConfigError).
Workers run on ``cuda:0`` (new GPU) and ``cuda:1`` (old GPU) when present, else on the CPU
(``extra["devices"]``); ``new_gpu``/``old_gpu`` are the nominal GPUs of the carbon accounting.
``link_gbps`` is NOT emulated by default (the workers talk over the real transport, gloo on
loopback here); ``emulate_link=True`` shapes the data plane to ``link_gbps``
(:class:`greenllm.engine.LinkEmulation`, emulation only). Requests arrive open loop at their
arrival times; each gets exactly ``input_tokens`` prompt tokens (real HumanEval text) and
exactly ``output_tokens`` generated tokens (no stop on EOS), greedy unless ``temperature``.
Started engines are reused by runs of the same configuration and stopped by :meth:`close`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from greenllm.backends.base import ROLES, BackendBase, Capabilities, RunExtra, RunResult
from greenllm.backends.realtime import (
    LEAD_S,
    gpu_trace,
    measured_j,
    measuring_sampler,
    request_timings,
)
from greenllm.backends.torch import support as ts
from greenllm.config import ConfigKind, Configuration, Workload
from greenllm.engine import resolve_model_dir
from greenllm.errors import ConfigError, missing_extra
from greenllm.workloads import RequestSet

__all__ = ["TorchBackend"]

logger = logging.getLogger(__name__)


def _devices() -> tuple[str, str]:
    try:
        import torch
    except ImportError as err:
        raise missing_extra("torch", "torch") from err
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ("cuda:0", "cuda:1") if n >= 2 else ("cuda:0", "cuda:0") if n == 1 else ("cpu", "cpu")


class TorchBackend(BackendBase):
    """The PyTorch engine (worker processes, torch.distributed between them) for all four kinds.

    Options: ``emulate_link`` (shape the data plane to ``link_gbps``; default off),
    ``link_latency_s`` (one way, with ``emulate_link``), ``lean`` / ``overlap`` (DSD: send only
    the draft tokens' probabilities; overlap their transfer with the target forward),
    ``temperature`` (0 = greedy), ``threads`` (torch threads per worker; default cores /
    workers), ``placement`` ("local" processes or "ray" actors, with ``ray_resources``),
    ``max_engines`` (started engines kept), ``request_timeout_s``, ``start_timeout_s``,
    ``power_period_s`` (modelled power trace period).
    """

    name = "torch"

    def __init__(
        self,
        *,
        emulate_link: bool = False,
        link_latency_s: float = 0.0,
        lean: bool = False,
        overlap: bool = True,
        temperature: float = 0.0,
        threads: int | None = None,
        placement: str = "local",
        ray_resources: dict[str, dict[str, float]] | None = None,
        max_engines: int = 4,
        request_timeout_s: float = 600.0,
        start_timeout_s: float = 600.0,
        power_period_s: float = 0.2,
    ) -> None:
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                raise missing_extra(module, "torch")
        if not (max_engines >= 1 and request_timeout_s > 0 and power_period_s > 0):
            raise ConfigError(
                f"max_engines={max_engines!r}, request_timeout_s={request_timeout_s!r}, "
                f"power_period_s={power_period_s!r}: need >= 1, > 0 and > 0"
            )
        if not (temperature >= 0 and link_latency_s >= 0):
            raise ConfigError(f"temperature={temperature!r}, link_latency_s={link_latency_s!r}: "
                              "both must be >= 0")  # fmt: skip
        self.emulate_link, self.link_latency_s = bool(emulate_link), float(link_latency_s)
        self.lean, self.overlap, self.temperature = bool(lean), bool(overlap), float(temperature)
        self.threads, self.placement, self.ray_resources = threads, placement, ray_resources
        self.max_engines, self.request_timeout_s = int(max_engines), float(request_timeout_s)
        self.start_timeout_s, self.power_period_s = float(start_timeout_s), float(power_period_s)
        self._engines: OrderedDict[ts.EngineKey, Any] = OrderedDict()
        self._start_s: dict[int, float] = {}

    def capabilities(self) -> Capabilities:
        from greenllm.energy import nvml_available

        return Capabilities(
            kinds=frozenset(ConfigKind),
            energy="measured" if nvml_available() else "modelled",
            needs_gpu=False,
            description="greenllm's PyTorch engine: worker processes, torch.distributed links",
        )

    @property
    def engines(self) -> list[Any]:
        """The started engines, least recently used first."""
        return list(self._engines.values())

    def engine_for(self, configuration: Configuration) -> Any:
        """The started :class:`~greenllm.engine.Engine` of ``configuration`` (started now if
        needed; the least recently used one is stopped beyond ``max_engines``)."""
        self.check_open()
        key = ts.engine_key(configuration, emulate_link=self.emulate_link,
                            link_latency_s=self.link_latency_s, lean=self.lean,
                            overlap=self.overlap, devices=_devices())  # fmt: skip
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        from greenllm.engine import Engine, LinkEmulation

        while len(self._engines) >= self.max_engines:
            _, old = self._engines.popitem(last=False)
            old.close()
        link = LinkEmulation(key.link_gbps, key.link_latency_s) if key.link_gbps else None
        engine = Engine(key.mode, key.target, key.draft, k=key.k, device_new=key.device_new,
                        device_old=key.device_old, overlap=key.overlap, lean=key.lean, link=link,
                        placement=self.placement, ray_resources=self.ray_resources,
                        start_timeout_s=self.start_timeout_s, threads=self.threads)  # fmt: skip
        start_s = time.perf_counter()
        engine.start()
        self._start_s[id(engine)] = time.perf_counter() - start_s
        logger.info("torch backend: %s engine started in %.1f s", key.mode,
                    self._start_s[id(engine)])
        self._engines[key] = engine
        return engine

    def _run(
        self, configuration: Configuration, workload: Workload, requests: RequestSet, seed: int
    ) -> RunResult:
        context = ts.max_context(str(resolve_model_dir(configuration.target_model)))
        longest = int((requests.input_tokens + requests.output_tokens).max(initial=0))
        if longest > context:
            raise ConfigError(f"a request of {longest} tokens exceeds the model's context of "
                              f"{context} tokens: use shorter requests")
        engine = self.engine_for(configuration)
        return self._serve(engine, configuration, workload, requests, seed)

    def _serve(self, engine: Any, cfg: Configuration, workload: Workload, requests: RequestSet,
               seed: int) -> RunResult:  # fmt: skip
        from greenllm.engine import SamplingParams

        prompts = ts.build_prompts(requests, engine.tokenizer, engine.target, seed)
        sampling = [SamplingParams(temperature=self.temperature, max_tokens=int(n),
                                   seed=seed * 1_000_003 + i, stop_token_ids=())
                    for i, n in enumerate(requests.output_tokens)]  # fmt: skip
        before = ts.counters(engine.stats())
        sampler = measuring_sampler(self.power_period_s)
        t0 = time.time() + LEAD_S
        if sampler is not None:
            sampler.begin_window("run")
        work = [(t0 + float(a), p, s)
                for a, p, s in zip(requests.arrival_s, prompts, sampling, strict=True)]  # fmt: skip
        outputs = ts.serve_open_loop(engine, work, self.request_timeout_s)
        measured = measured_j(sampler, len(cfg.gpus))
        run = ts.delta(ts.counters(engine.stats()), before)
        timings = request_timings(
            requests, [None if isinstance(o, BaseException) else o.token_times_s for o in outputs],
            t0,
        )
        duration = float(np.nanmax(timings.finish_s)) if timings.served.any() else 0.0
        ok = [o for o in outputs if not isinstance(o, BaseException)]
        proposed = sum(o.proposed_tokens for o in ok)
        accepted = sum(o.accepted_tokens for o in ok)
        sides = ("new", "old") if len(cfg.gpus) == 2 else ("new",)
        gpus = []
        for i, (gpu, role, side) in enumerate(zip(cfg.gpus, ROLES[cfg.kind], sides, strict=True)):
            busy = float(run["busy_s"][side])
            if len(cfg.gpus) == 1:  # one GPU does both roles: "old" counters are its own too
                busy += float(run["busy_s"]["old"])
            trace = gpu_trace(gpu, role, ts.activity_intervals(timings, busy, duration), duration,
                              self.power_period_s, measured[i] if measured else None)  # fmt: skip
            gpus.append(dataclasses.replace(trace, busy_s=min(busy, duration)))
        link_bytes = sum(run["bytes_new_to_old"].values()) + sum(run["bytes_old_to_new"].values())
        common: RunExtra = {
            "devices": {"new": engine.devices["new"],
                        "old": engine.devices["old"] if len(cfg.gpus) == 2 else None},
            "token_ids": [list(o.tokens) if not isinstance(o, BaseException) else None
                          for o in outputs],
            "energy_model": "measured: NVML" if measured else (
                "modelled: the simulator's power model of each nominal GPU, dynamic power over "
                "the compute seconds each worker measured (EngineStats.busy_s)"),
            "acceptance_rate": accepted / proposed if proposed else float("nan"),
        }  # fmt: skip
        extra = {
            **common,
            "engine": {"mode": engine.mode, "target": engine.target, "draft": engine.draft,
                       "k": engine.k, "lean": engine.lean, "overlap": engine.overlap,
                       "link_emulation": engine.link.to_dict() if engine.link else None,
                       "threads": engine.threads or "cores / workers",
                       "placement": getattr(engine.placement, "name", engine.placement),
                       "start_s": round(self._start_s.get(id(engine), 0.0), 2)},
            "engine_stats": run,
            "link_bytes_by_category": {"new_to_old": run["bytes_new_to_old"],
                                       "old_to_new": run["bytes_old_to_new"]},
            "failed": [str(o) for o in outputs if isinstance(o, BaseException)],
            "submit_s": [o.arrival_s - t0 if not isinstance(o, BaseException) else None
                         for o in outputs],
        }  # fmt: skip
        return RunResult(
            backend=self.name, configuration=cfg, workload=workload, seed=seed, requests=timings,
            gpus=tuple(gpus), duration_s=duration, link_bytes=int(link_bytes),
            spec_proposed_tokens=int(proposed), spec_accepted_tokens=int(accepted),
            overloaded=False, energy="measured" if measured else "modelled", extra=extra,
        )  # fmt: skip

    def _close(self) -> None:
        """Stop every engine this backend started."""
        while self._engines:
            _, engine = self._engines.popitem(last=False)
            engine.close()

    def __repr__(self) -> str:
        return f"TorchBackend(engines={[e.mode for e in self._engines.values()]})"
