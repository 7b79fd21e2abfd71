"""The ``vllm`` upstream: real vLLM OpenAI servers, one process per role, supervised here.

Roles (:data:`greenllm.backends.ROLES`) and their servers:

* Standalone: ``target``; SpecDecode: ``target+draft`` (vLLM's ``draft_model`` speculation);
  both one api_server.
* DPD: ``prefill`` (``kv_producer``) and ``decode`` (``kv_consumer``). Each request goes to the
  prefill server with ``max_tokens=1`` (not streamed), then the original request goes to the
  decode server, whose tokens stream back (vLLM's disaggregated proxy protocol). With
  ``NixlConnector`` the prefill leg carries ``kv_transfer_params={"do_remote_decode": true}``
  and its answer's ``kv_transfer_params`` go with the decode leg. With ``ExampleConnector``
  (files in a shared folder, CPU) the decode server loads the prompt's whole 32-token blocks
  the prefill server stored (none for a prompt of ``32 m + 1`` tokens: the connector's lookup
  is one block shorter then, and the decode server recomputes the prompt).
* DSD: ``target`` with greenllm's ``custom_class`` proposer, plus the draft server
  (:mod:`greenllm.backends.vllm.draft_server`) standing for the old GPU.

Started servers run from the vLLM venv (:class:`~greenllm.backends.vllm.server.VLLMServer`);
``upstream_urls`` attaches to servers running elsewhere instead (a new-GPU host and an
old-GPU host) and only checks their health. A supervision task restarts a dead started server
with exponential backoff. Meanwhile a configuration falls back where it can (DSD: the target
alone while the draft server is down; DPD: both phases on the prefill server while decode is
down) and :attr:`VLLMUpstream.ready` stays True; without a fallback it is False until the
server is healthy again.
Every HTTP call has a timeout (connect, and read between chunks); a generator closed early
closes the HTTP streams of both legs, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Collection, Mapping
from pathlib import Path
from typing import Any, Literal, cast

from greenllm.backends import ROLES
from greenllm.backends.sim.efficiency import MEMORY_POWER_FRACTION
from greenllm.backends.vllm import COMPUTE_CAPABILITY, EngineSettings, find_vllm_python
from greenllm.backends.vllm.engine_args import (
    dpd_kwargs,
    dsd_kwargs,
    settings_for,
    spec_decode_kwargs,
    split_cores,
    standalone_kwargs,
)
from greenllm.backends.vllm.metrics import (
    SPEC_ACCEPTED,
    SPEC_DRAFTS,
    SPEC_PROPOSED,
    TOKENS_BY_SOURCE,
    counter_delta,
)
from greenllm.backends.vllm.proposer import ADDR_ENV, LOG_ENV, RETRY_ENV, TIMEOUT_ENV
from greenllm.backends.vllm.scratch import Scratch
from greenllm.backends.vllm.server import (
    DraftServerProcess,
    ServerProcess,
    VLLMServer,
    draft_ping,
    http_health,
)
from greenllm.config import ConfigKind, Configuration
from greenllm.energy import ModelledSampler, PowerSampler, nvml_available, power_model
from greenllm.errors import ConfigError, missing_extra
from greenllm.serve.tasks import cancel_and_wait
from greenllm.serve.upstream import (
    Device,
    GenerationRequest,
    TokenChunk,
    Upstream,
    UpstreamError,
    UpstreamStats,
)

__all__ = ["VLLMUpstream", "parse_prometheus", "sse_chunks"]

# the families :meth:`VLLMUpstream.stats` reads (a scrape parses only these)
_SCRAPED = (SPEC_DRAFTS, SPEC_PROPOSED, SPEC_ACCEPTED, TOKENS_BY_SOURCE)

logger = logging.getLogger(__name__)

Snapshot = list[dict[str, Any]]


def parse_prometheus(text: str, names: Collection[str] | None = None) -> Snapshot:
    """Prometheus text exposition as rows ``{"name", "labels", "value"}`` (the form of
    :mod:`greenllm.backends.vllm.metrics`), read by prometheus_client's parser: a counter's
    ``_total`` suffix is dropped, its ``_created`` samples are skipped; text the parser refuses
    gives the rows before it (metrics are best effort). ``names``: only these families (their
    lines are picked before parsing: vLLM's page is mostly histogram buckets)."""
    from prometheus_client.parser import text_string_to_metric_families

    if names is not None:
        keep = tuple(names)
        text = "".join(line for line in text.splitlines(keepends=True)
                       if line.startswith(keep)
                       or (line.startswith("# ") and line[7:].startswith(keep)))  # fmt: skip
    rows: Snapshot = []
    with contextlib.suppress(ValueError):
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if not s.name.endswith("_created"):
                    row = {"name": s.name.removesuffix("_total"), "labels": dict(s.labels)}
                    rows.append({**row, "value": float(s.value)})
    return rows


class VLLMUpstream(Upstream):
    """One configuration on real vLLM OpenAI servers (started here, or attached).

    ``model_dir``/``draft_dir``: local model folders or aliases (default: the configuration's
    ``target_model``/``draft_model``, resolved by :func:`greenllm.engine.resolve_model_dir`).
    ``k``: speculative tokens (default the configuration's). ``upstream_urls``: attach mode,
    ``{"target"|"prefill"|"decode": "http://host:port", "draft": "host:port"}``. ``python``: the
    vLLM venv's Python (default ``$GREENLLM_VLLM_PYTHON``). ``connector``: DPD's KV connector.
    ``request_timeout_s``: read timeout (the longest wait for the next chunk);
    ``connect_timeout_s``: connect/write/pool timeout. ``restart_backoff_s``: first and
    largest delay between restarts of a dead server. ``draft_ahead``: DSD's draft server drafts
    the next proposals while the target verifies (``--ahead``).
    """

    backend = "vllm"

    def __init__(
        self,
        configuration: Configuration,
        *,
        model_dir: str | os.PathLike[str] | None = None,
        draft_dir: str | os.PathLike[str] | None = None,
        k: int | None = None,
        upstream_urls: Mapping[str, str] | None = None,
        python: str | os.PathLike[str] | None = None,
        settings: EngineSettings | None = None,
        connector: Literal["ExampleConnector", "NixlConnector"] = "ExampleConnector",
        served_model_name: str | None = None,
        request_timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        start_timeout_s: float = 600.0,
        health_period_s: float = 2.0,
        restart_backoff_s: tuple[float, float] = (1.0, 60.0),
        draft_timeout_s: float = 10.0,
        split_cpus: bool = True,
        scratch_dir: str | os.PathLike[str] | None = None,
        power_period_s: float = 0.2,
        draft_ahead: bool = False,
    ) -> None:
        if connector not in ("ExampleConnector", "NixlConnector"):
            raise ConfigError(f"connector {connector!r}: use 'ExampleConnector' or 'NixlConnector'")
        if not (request_timeout_s > 0 and connect_timeout_s > 0 and health_period_s > 0):
            raise ConfigError("request_timeout_s, connect_timeout_s, health_period_s must be > 0")
        lo, hi = restart_backoff_s
        if not 0 < lo <= hi:
            raise ConfigError(f"restart_backoff_s = {restart_backoff_s}: need 0 < first <= max")
        self.configuration = configuration
        self.kind = configuration.kind
        self.roles: tuple[str, ...] = ROLES[self.kind]
        self.model = served_model_name or configuration.target_model
        self.k = int(k if k is not None else configuration.num_speculative_tokens)
        self.connector = connector
        self.settings = settings or EngineSettings()
        self.request_timeout_s = float(request_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.start_timeout_s = float(start_timeout_s)
        self.health_period_s = float(health_period_s)
        self.backoff = (float(lo), float(hi))
        self.draft_timeout_s = float(draft_timeout_s)
        self.split_cpus = bool(split_cpus)
        self.power_period_s = float(power_period_s)
        self.draft_ahead = bool(draft_ahead)
        self.attached = upstream_urls is not None
        self.legs = self._legs()
        if self.attached:
            assert upstream_urls is not None
            missing = [leg for leg in self.legs if leg not in upstream_urls]
            unknown = [key for key in upstream_urls if key not in (*self.legs, "draft")]
            if missing or unknown:
                raise ConfigError(
                    f"upstream_urls for {self.kind.value}: need {list(self.legs)}"
                    f"{' (+ optional draft)' if self.kind is ConfigKind.DSD else ''}; missing "
                    f"{missing}, unknown {unknown}"
                )
            self.urls = {key: str(url).rstrip("/") for key, url in upstream_urls.items()}
            self.python = None
            self.model_dir = str(model_dir) if model_dir else None
            self.draft_dir = str(draft_dir) if draft_dir else None
        else:
            self.python = find_vllm_python(python)
            self.model_dir = _resolve(model_dir or configuration.target_model)
            draft = draft_dir or configuration.draft_model
            needs_draft = self.kind in (ConfigKind.SPEC_DECODE, ConfigKind.DSD)
            if needs_draft and not draft:
                raise ConfigError(f"{self.kind.value} needs a draft model (draft_dir=...)")
            self.draft_dir = _resolve(draft) if needs_draft and draft else None
            self.urls = {}
        self.scratch = Scratch(scratch_dir, prefix="gllm-serve-")
        self.servers: dict[str, ServerProcess] = {}
        self._healthy: dict[str, bool] = {}
        self._started = False
        self._stopping = False
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._baseline: dict[str, Snapshot] = {}
        self._latest: dict[str, Snapshot] = {}
        self._restarts = 0
        self._active = {"prefill": 0, "decode": 0}  # requests by phase, for the power model
        self._sampler: PowerSampler | None = None
        self.energy_source = "modelled"
        self.start_s: dict[str, float] = {}
        """Seconds each started server took to become healthy (last start)."""

    # ---- the servers ---------------------------------------------------------------------------
    def _legs(self) -> tuple[str, ...]:
        """The HTTP servers requests go to (the DSD draft server is not one)."""
        if self.kind is ConfigKind.DPD:
            return ("prefill", "decode")
        return ("target+draft",) if self.kind is ConfigKind.SPEC_DECODE else ("target",)

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(Device(g, r) for g, r in zip(self.configuration.gpus, self.roles, strict=True))

    def _role_settings(self) -> list[EngineSettings]:
        s, gpus = self.settings, self.configuration.gpus
        if s.device == "cuda":
            return [settings_for(s, COMPUTE_CAPABILITY.get(g)) for g in gpus]
        cores = split_cores(len(os.sched_getaffinity(0))) if len(gpus) == 2 else []
        if not (self.split_cpus and cores and s.cpu_cores is None):
            return [s] * len(gpus)
        return [dataclasses.replace(s, cpu_cores=c) for c in cores]

    def _env(self, st: EngineSettings, index: int) -> dict[str, str]:
        env = {**self.scratch.env(), **st.env()}
        if st.device == "cuda" and len(self.configuration.gpus) == 2:
            env.setdefault("CUDA_VISIBLE_DEVICES", str(index))  # new GPU 0, old GPU 1
        return env

    def build_servers(self) -> dict[str, ServerProcess]:
        """The server processes of the configuration's roles (not started)."""
        assert self.python is not None and self.model_dir is not None
        python = self.python
        sets, logs = self._role_settings(), self.scratch.subdir("logs")
        target, new = self.model_dir, sets[0]

        def server(role: str, kw: dict[str, Any], st: EngineSettings, i: int,
                   extra_env: Mapping[str, str] | None = None) -> VLLMServer:  # fmt: skip
            return VLLMServer(role, kw, python=python, log_path=logs / f"{role}.log",
                              served_model_name=self.model,
                              env={**self._env(st, i), **dict(extra_env or {})})  # fmt: skip

        if self.kind is ConfigKind.STANDALONE:
            return {"target": server("target", standalone_kwargs(target, new), new, 0)}
        if self.kind is ConfigKind.SPEC_DECODE:
            kw = spec_decode_kwargs(target, str(self.draft_dir), self.k, new)
            return {"target+draft": server("target+draft", kw, new, 0)}
        if self.kind is ConfigKind.DPD:
            store = str(self.scratch.subdir("kv-store")) if self.connector == "ExampleConnector" \
                else None  # fmt: skip
            dpd_roles: tuple[Literal["prefill"], Literal["decode"]] = ("prefill", "decode")
            return {
                role: server(role, dpd_kwargs(target, cast(Any, role), st, connector=self.connector,
                                              storage_path=store), st, i)
                for i, (role, st) in enumerate(zip(dpd_roles, sets, strict=True))
            }  # fmt: skip
        old = sets[1]
        draft = DraftServerProcess(self.draft_dir or "", python=python,
                                   log_path=logs / "draft.log", device=old.device,
                                   dtype=self.settings.dtype, cpus=old.cpu_cores or "",
                                   ahead=self.draft_ahead, env=self._env(old, 1))  # fmt: skip
        env = {ADDR_ENV: draft.address, TIMEOUT_ENV: str(self.draft_timeout_s),
               RETRY_ENV: "1.0", LOG_ENV: str(self.proposer_log)}  # fmt: skip
        return {"draft": draft, "target": server("target", dsd_kwargs(target, self.k, new), new, 0,
                                                 env)}  # fmt: skip

    @property
    def proposer_log(self) -> Path:
        """DSD: the proposer's call log (one JSON line per draft call)."""
        return self.scratch.subdir("dsd") / "proposer.jsonl"

    @property
    def kv_store(self) -> Path | None:
        """DPD with ExampleConnector: the folder the prefill server writes KV files to."""
        if self.attached or self.kind is not ConfigKind.DPD or self.connector != "ExampleConnector":
            return None
        return self.scratch.root / "kv-store"

    def url(self, leg: str) -> str:
        """The base URL of a leg (``target``, ``prefill``, ``decode``, ``target+draft``)."""
        if self.attached:
            return self.urls[leg]
        return self.servers[leg].url

    # ---- life ----------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start (or check) every server, then the supervision task; ready when all answer."""
        if self._started:
            return
        try:
            import aiohttp
        except ImportError as err:  # pragma: no cover - the serve extra
            raise missing_extra("aiohttp", "serve") from err
        self._stopping = False
        if self.attached:
            checks = await asyncio.gather(*(self._probe(key) for key in self.urls))
            bad = [key for key, ok in zip(self.urls, checks, strict=True) if not ok]
            if bad:
                raise UpstreamError(
                    f"attached servers not healthy: {[(b, self.urls[b]) for b in bad]}",
                    retryable=True,
                )
            self._healthy = dict.fromkeys(self.urls, True)
        else:
            self.servers = self.build_servers()
            try:
                if "draft" in self.servers:  # the target's proposer connects to it
                    await self._start_one("draft")
                await asyncio.gather(*(self._start_one(r) for r in self.servers if r != "draft"))
            except BaseException:
                await asyncio.to_thread(self._stop_servers)
                raise
        # aiohttp, not httpx, on the path of every token: a streamed request costs it 0.2-0.4x
        # httpx's CPU time, and its first chunk comes 0.85 ms sooner
        # (benchmarks/bench_upstream_client.py; docs/decisions.md)
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s,
                                          sock_read=self.request_timeout_s),
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=0),
            read_bufsize=1 << 20,  # the longest SSE line it reads
        )  # fmt: skip
        self._started = True
        self._baseline = {leg: await self._scrape(leg) for leg in self.legs}
        self._latest = dict(self._baseline)
        self._task = asyncio.create_task(self._supervise(), name="vllm-upstream-supervisor")

    async def _start_one(self, role: str) -> None:
        server = self.servers[role]
        self._healthy[role] = False
        took = await asyncio.to_thread(server.start_and_wait, self.start_timeout_s)
        self.start_s[role] = took
        self._healthy[role] = True

    async def stop(self) -> None:
        """Stop the supervision and every server this upstream started (idempotent)."""
        self._stopping = True
        task, self._task = self._task, None
        await cancel_and_wait(task, quiet=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
        await asyncio.to_thread(self._stop_servers)
        self._started = False
        self._healthy = {}
        if self._sampler is not None:
            self._sampler.stop()

    def _stop_servers(self) -> None:
        for server in reversed(list(self.servers.values())):
            server.stop()
        self.scratch.close()

    def _needed(self) -> tuple[str, ...]:
        """The servers without which nothing can be served: DSD runs the target alone while
        its draft server is down (the proposer proposes nothing), DPD runs both phases on the
        prefill server while decode is down; the other kinds need every server."""
        if self.kind is ConfigKind.DSD:
            return ("target",)
        if self.kind is ConfigKind.DPD:
            return ("prefill",)
        return tuple(self._healthy)

    @property
    def ready(self) -> bool:
        needed = self._needed()
        return self._started and bool(needed) and all(self._healthy.get(k) for k in needed)

    @property
    def degraded(self) -> bool:
        """Ready, but on the configuration's fallback (a draft or decode server is down)."""
        return self.ready and not all(self._healthy.values())

    @property
    def restarts(self) -> int:
        """Servers restarted by the supervision since start."""
        return self._restarts

    async def _probe(self, key: str) -> bool:
        if self.attached:
            url = self.urls[key]
            if key == "draft":
                host, _, port = url.split("://", 1)[-1].rstrip("/").rpartition(":")
                return await asyncio.to_thread(draft_ping, host, int(port), 2.0)
            host_port = url.split("://", 1)[-1].split("/", 1)[0]
            host, _, port = host_port.rpartition(":")
            return await asyncio.to_thread(http_health, host, int(port or 80), 2.0)
        return await asyncio.to_thread(self.servers[key].healthy, 2.0)

    async def _supervise(self) -> None:
        """Every ``health_period_s``: restart dead started servers (exponential backoff), probe
        attached ones, scrape the legs' metrics."""
        delay: dict[str, float] = {}
        next_try: dict[str, float] = {}
        while not self._stopping:
            await asyncio.sleep(self.health_period_s)
            if self.attached:
                for key in self.urls:
                    self._healthy[key] = await self._probe(key)
            else:
                for role, server in self.servers.items():
                    if server.alive:
                        continue
                    self._healthy[role] = False
                    now = time.monotonic()
                    if now < next_try.get(role, 0.0):
                        continue
                    logger.warning("%s died (code %s); restarting it", server.name,
                                   server.returncode)  # fmt: skip
                    try:
                        await self._start_one(role)
                        self._restarts += 1
                        delay.pop(role, None)
                    except Exception as err:
                        d = min(self.backoff[1], delay.get(role, self.backoff[0] / 2) * 2)
                        delay[role], next_try[role] = d, time.monotonic() + d
                        logger.error("restart of %s failed (next try in %.0f s): %s",
                                     server.name, d, err)  # fmt: skip
            for leg in self.legs:
                if self._healthy.get(leg):
                    snap = await self._scrape(leg)
                    if snap:
                        self._latest[leg] = snap

    # ---- metrics -------------------------------------------------------------------------------
    async def _scrape(self, leg: str) -> Snapshot:
        if self._client is None:
            return []
        try:
            import aiohttp

            async with self._client.get(self.url(leg) + "/metrics",
                                        timeout=aiohttp.ClientTimeout(total=10.0)) as resp:
                if resp.status != 200:
                    return []
                return parse_prometheus(await resp.text(), _SCRAPED)
        except Exception as err:  # metrics are best effort
            logger.debug("cannot scrape %s metrics: %s", leg, err)
            return []

    async def refresh_stats(self) -> UpstreamStats:
        """Scrape every leg's ``/metrics`` now and return :meth:`stats`."""
        for leg in self.legs:
            snap = await self._scrape(leg)
            if snap:
                self._latest[leg] = snap
        return self.stats()

    def stats(self) -> UpstreamStats:
        """Speculative tokens proposed/accepted since start (SpecDecode, DSD), DPD's prompt
        tokens by source on the decode server, restarts. From the last ``/metrics`` scrape."""
        first = self.legs[0]
        before, after = self._baseline.get(first, []), self._latest.get(first, [])
        extra: dict[str, float] = {"restarts": float(self._restarts)}
        drafts = counter_delta(before, after, SPEC_DRAFTS)
        if drafts:
            extra["spec_drafts"] = drafts
        if self.kind is ConfigKind.DPD:
            b, a = self._baseline.get("decode", []), self._latest.get("decode", [])
            for source in ("local_compute", "local_cache_hit", "external_kv_transfer"):
                extra[f"decode_prompt_tokens_{source}"] = counter_delta(
                    b, a, TOKENS_BY_SOURCE, source=source
                )
        return UpstreamStats(
            spec_proposed_tokens=round(counter_delta(before, after, SPEC_PROPOSED)),
            spec_accepted_tokens=round(counter_delta(before, after, SPEC_ACCEPTED)),
            extra=extra,
        )

    # ---- energy --------------------------------------------------------------------------------
    def power_sampler(self) -> PowerSampler:
        """NVML over the GPUs when the servers run here on CUDA GPUs NVML sees; otherwise the
        power model of each nominal GPU driven by this upstream's in-flight requests (as the
        vLLM backend models energy on CPU): utilisation 1 while some request is in prefill,
        ``MEMORY_POWER_FRACTION`` while some decodes, idle otherwise."""
        if self._sampler is None:
            keys = [d.key for d in self.devices]
            if not self.attached and self.settings.device == "cuda" and nvml_available():
                self._sampler = _named_nvml(keys, self.power_period_s)
                self.energy_source = "measured"
            else:
                self._sampler = ModelledSampler(self._modelled_w, devices=keys,
                                                period_s=self.power_period_s)  # fmt: skip
                self.energy_source = "modelled"
        return self._sampler

    def _modelled_w(self, _elapsed_s: float) -> dict[str, float]:
        prefill, decode = self._active["prefill"] > 0, self._active["decode"] > 0
        out: dict[str, float] = {}
        for dev in self.devices:
            if dev.role == "prefill":
                u = 1.0 if prefill else 0.0
            elif dev.role in ("decode", "draft"):
                u = MEMORY_POWER_FRACTION if decode else 0.0
            else:
                u = 1.0 if prefill else MEMORY_POWER_FRACTION if decode else 0.0
            out[dev.key] = power_model(dev.gpu).power_w(u)
        return out

    # ---- serving -------------------------------------------------------------------------------
    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(request.max_tokens),
            "temperature": float(request.temperature),
            "top_p": float(request.top_p),
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
        }
        if request.chat:
            body["messages"] = [dict(m) for m in request.messages or ()]
        else:
            prompt = request.prompt
            body["prompt"] = list(prompt) if isinstance(prompt, tuple) else prompt
        if request.seed is not None:
            body["seed"] = int(request.seed)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.ignore_eos:
            body["ignore_eos"] = True
        return body

    def stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        return self._stream(request)

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[TokenChunk]:
        if not self.ready or self._client is None:
            raise UpstreamError(f"vllm upstream {self.configuration.label} is not ready",
                                retryable=True)  # fmt: skip
        path = "/v1/chat/completions" if request.chat else "/v1/completions"
        body = self._body(request)
        headers = {"X-Request-Id": f"{request.request_id}-{uuid.uuid4().hex[:8]}"}
        yielded = False
        phase = "prefill"
        self._active["prefill"] += 1
        try:
            leg = self.legs[-1]
            if self.kind is ConfigKind.DPD and not self._healthy.get("decode"):
                leg = "prefill"  # the fallback: both phases on the new GPU
            elif self.kind is ConfigKind.DPD:
                params = await self._prefill_leg(path, body, headers)
                if params:
                    body["kv_transfer_params"] = params
            async with self._client.post(self.url(leg) + path, json=body,
                                         headers=headers) as resp:  # fmt: skip
                if resp.status != 200:
                    detail = (await resp.read())[:500].decode("utf-8", "replace")
                    raise _http_error(leg, resp.status, detail)
                async for chunk in sse_chunks(resp.content, request.chat, self.clock_s):
                    if phase == "prefill":
                        phase = "decode"
                        self._active["prefill"] -= 1
                        self._active["decode"] += 1
                    yielded = True
                    yield chunk
        except UpstreamError as err:
            err.retryable = err.retryable and not yielded
            raise
        except Exception as err:
            import aiohttp

            if isinstance(err, (aiohttp.ClientError, TimeoutError, json.JSONDecodeError)):
                kind = "timed out" if isinstance(err, TimeoutError) else "failed"
                raise UpstreamError(
                    f"vllm {self.configuration.label}: request {kind}: {type(err).__name__}: "
                    f"{err}", retryable=not yielded,
                ) from err  # fmt: skip
            raise
        finally:
            self._active[phase] -= 1

    async def _prefill_leg(self, path: str, body: dict[str, Any],
                           headers: Mapping[str, str]) -> dict[str, Any] | None:  # fmt: skip
        """DPD's first leg: the request with ``max_tokens=1``, not streamed; returns the
        ``kv_transfer_params`` for the decode leg (NixlConnector), else None."""
        leg = dict(body, max_tokens=1, stream=False)
        leg.pop("stream_options", None)
        if "max_completion_tokens" in leg:
            leg["max_completion_tokens"] = 1
        if self.connector == "NixlConnector":
            leg["kv_transfer_params"] = {
                "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
                "remote_block_ids": None, "remote_host": None, "remote_port": None,
            }  # fmt: skip
        async with self._client.post(self.url("prefill") + path, json=leg,
                                     headers=headers) as resp:  # fmt: skip
            text = await resp.text()
        if resp.status != 200:
            raise _http_error("prefill", resp.status, text[:500])
        params = json.loads(text).get("kv_transfer_params")
        return params if self.connector == "NixlConnector" and params else None


def _http_error(leg: str, status: int, detail: str) -> UpstreamError:
    """A non-200 answer: retryable for 408, 429 and 5xx (another try may work), not for a
    request vLLM refuses (other 4xx)."""
    retryable = status in (408, 429) or status >= 500
    return UpstreamError(f"vLLM {leg} server answered HTTP {status}: {detail}",
                         retryable=retryable)  # fmt: skip


_FINISH: dict[str, Literal["stop", "length"]] = {"stop": "stop", "length": "length"}


async def sse_chunks(
    lines: AsyncIterable[bytes | str], chat: bool, clock: Any
) -> AsyncIterator[TokenChunk]:
    """vLLM's SSE stream (its lines, as a response body yields them) as TokenChunks; the
    finishing chunk is held until the usage chunk so it carries the token counts, and until
    the stream's end: a response read to its end gives its keep-alive connection back to the
    pool (a consumer that stops at the finishing chunk would otherwise close it, and every
    request would open a new one)."""
    pending: TokenChunk | None = None
    final: TokenChunk | None = None
    async for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if final is not None or not line.startswith("data:"):
            continue  # read on to the end: ``[DONE]`` and the body's terminator
        data = line[5:].strip()
        if data == "[DONE]":
            final, pending = pending, None
            continue
        event = json.loads(data)
        if "error" in event and not event.get("choices"):
            err = event["error"]
            message = err.get("message") if isinstance(err, dict) else err
            raise UpstreamError(f"vLLM stream error: {message}", retryable=True)
        usage = event.get("usage")
        for choice in event.get("choices") or ():
            text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            ids = tuple(int(i) for i in choice.get("token_ids") or ())
            reason = choice.get("finish_reason")
            if not text and not ids and reason is None:
                continue  # the role-only first delta of a chat stream
            chunk = TokenChunk(text=text or "", token_ids=ids, time_s=clock())
            if reason is not None:
                if reason not in _FINISH:
                    raise UpstreamError(f"vLLM finished the request with {reason!r}",
                                        retryable=False)  # fmt: skip
                pending = dataclasses.replace(chunk, finish_reason=_FINISH[reason])
            else:
                yield chunk
        if usage and pending is not None:
            final, pending = dataclasses.replace(
                pending,
                prompt_tokens=int(usage["prompt_tokens"]),
                completion_tokens=int(usage["completion_tokens"]),
            ), None  # fmt: skip
    final = final or pending
    if final is None:
        raise UpstreamError("vLLM stream ended without a finish reason", retryable=True)
    yield final


def _resolve(name: str | os.PathLike[str]) -> str:
    from greenllm.engine import resolve_model_dir

    return str(resolve_model_dir(name))


def _named_nvml(keys: list[str], period_s: float) -> PowerSampler:
    """An NVML sampler of GPUs 0..n-1 whose devices are named by ``keys`` (role:gpu)."""
    from greenllm.energy import NVMLSampler

    class _Named(NVMLSampler):
        def _open(self) -> Any:
            names = list(super()._open())
            self._rename = dict(zip(names, keys, strict=False))
            return [self._rename.get(n, n) for n in names]

        def _poll(self, now_s: float, edge: bool) -> Any:
            return [(self._rename.get(d, d), t, w) for d, t, w in super()._poll(now_s, edge)]

    return _Named(period_s, devices=list(range(len(keys))))
