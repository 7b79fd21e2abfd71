"""Open-loop load generator: Poisson or trace arrivals against a Backend or an HTTP server.

    from greenllm.profiler.loadgen.run import OpenAIEndpoint, run_load
    from greenllm.workloads import workload

    w = workload("sharegpt", qps=2.0, size="p50")
    result = run_load(OpenAIEndpoint("http://localhost:8000", "meta-llama/Llama-2-7b-hf"),
                      w, duration_s=60)
    result.slo_attainment()            # (both, TTFT-only, TPOT-only), the paper's rule
    result.slo_attainment_per_token()  # every inter-token gap <= the TPOT target

Requests arrive at their scheduled times whatever the earlier ones are doing (open loop). For a
:class:`~greenllm.backends.base.Backend` the backend runs the schedule itself and returns the
per-request timings. Rules and caveats: ``docs/loadgen.md``.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from greenllm.backends import Backend, RunResult
from greenllm.config import Configuration, Workload
from greenllm.errors import ConfigError
from greenllm.profiler.loadgen.dispatch import dispatch_open_loop
from greenllm.profiler.loadgen.http import Aborter, OpenAIEndpoint, StreamRecord, stream_request
from greenllm.profiler.loadgen.prompts import (
    PromptSource,
    resolve_prompts,
)
from greenllm.profiler.loadgen.result import LoadInterrupted, LoadResult
from greenllm.slo import RequestTimings
from greenllm.workloads import RequestSet

__all__ = ["build_requests", "run_load"]

logger = logging.getLogger(__name__)

LAG_WARN_S = 0.05  # warn when a request is sent later than this after its scheduled arrival


def build_requests(
    workload: Workload,
    *,
    requests: RequestSet | None = None,
    duration_s: float | None = None,
    n: int | None = None,
    trace: str | None = None,
    seed: int = 0,
) -> RequestSet:
    """The schedule: ``requests`` as given, or Poisson arrivals at ``workload.qps`` with
    ``workload.request_size`` (``duration_s`` or ``n``), or trace ``trace`` replayed at
    ``workload.qps`` (:func:`greenllm.workloads.load_trace`)."""
    if not isinstance(workload, Workload):
        raise ConfigError(f"workload = {workload!r}: expected a greenllm.config.Workload")
    given = [k for k, v in (("requests", requests), ("duration_s", duration_s), ("n", n))
             if v is not None]  # fmt: skip
    if requests is not None:
        if not isinstance(requests, RequestSet):
            raise ConfigError(f"requests = {type(requests).__name__}: expected a RequestSet")
        if len(given) > 1 or trace is not None:
            extra = [*given[1:], *(["trace"] if trace is not None else [])]
            raise ConfigError(f"requests=... is the whole schedule: drop {', '.join(extra)}")
        return requests
    if len(given) != 1:
        raise ConfigError(
            "give exactly one of requests=RequestSet(...), duration_s=... or n=... "
            f"(got {', '.join(given) or 'none'})"
        )
    if trace is not None:
        from greenllm.workloads import load_trace

        return load_trace(trace, qps=workload.qps, n=n, duration_s=duration_s, seed=seed)
    return RequestSet.poisson(
        workload.qps, workload.request_size, duration_s=duration_s, n=n, seed=seed
    )


def run_load(
    target: Backend | OpenAIEndpoint,
    workload: Workload,
    *,
    requests: RequestSet | None = None,
    duration_s: float | None = None,
    n: int | None = None,
    trace: str | None = None,
    seed: int = 0,
    configuration: Configuration | None = None,
    prompts: Sequence[str] | PromptSource | None = None,
    record_token_times: bool = True,
    stop_event: threading.Event | None = None,
    grace_s: float = 5.0,
) -> LoadResult:
    """Send ``workload`` open loop to ``target`` and return per-request timings.

    The schedule comes from :func:`build_requests` (exactly one of ``requests``,
    ``duration_s``, ``n``; ``trace`` replays a real trace). A Backend needs ``configuration``;
    for an :class:`OpenAIEndpoint` it is optional metadata (for :meth:`LoadResult.to_record`).
    ``stop_event`` stops sending early (the result is marked ``interrupted``); Ctrl-C does the
    same, waits up to ``grace_s`` for requests in flight, then raises :class:`LoadInterrupted`
    (a ``KeyboardInterrupt``) carrying the partial result.
    """
    if configuration is not None and not isinstance(configuration, Configuration):
        raise ConfigError(f"configuration = {configuration!r}: expected a Configuration")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: must be an integer >= 0")
    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not grace_s >= 0:
        raise ConfigError(f"grace_s = {grace_s!r}: must be a number of seconds >= 0")
    if isinstance(target, OpenAIEndpoint):
        reqs = build_requests(
            workload, requests=requests, duration_s=duration_s, n=n, trace=trace, seed=seed
        )
        texts = resolve_prompts(reqs, prompts, seed=int(seed))
        return _run_http(target, workload, configuration, reqs, texts, stop_event, grace_s)
    if not isinstance(target, Backend):
        raise ConfigError(
            f"target = {target!r}: expected a greenllm Backend (greenllm.backends.get_backend) "
            "or an OpenAIEndpoint(base_url, model)"
        )
    if configuration is None:
        raise ConfigError(
            f"backend {target.name!r} needs configuration=Configuration(...) to know what to run"
        )
    reqs = build_requests(
        workload, requests=requests, duration_s=duration_s, n=n, trace=trace, seed=seed
    )
    kwargs: dict[str, Any] = {}
    if record_token_times and _accepts(target.run, "record_token_times"):
        kwargs["record_token_times"] = True
    run: RunResult = target.run(configuration, workload, requests=reqs, seed=int(seed), **kwargs)
    t = run.requests
    errors = tuple(None if ok else "not served" for ok in t.served)
    return LoadResult(
        target=target.name,
        workload=workload,
        requests=reqs,
        timings=t,
        duration_s=float(run.duration_s),
        configuration=configuration,
        errors=errors,
        run=run,
    )


def _accepts(func: Any, name: str) -> bool:
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _run_http(
    endpoint: OpenAIEndpoint,
    workload: Workload,
    configuration: Configuration | None,
    reqs: RequestSet,
    prompts: tuple[str, ...],
    stop_event: threading.Event | None,
    grace_s: float,
) -> LoadResult:
    aborter = Aborter()

    def job(i: int, t0: float) -> StreamRecord:
        return stream_request(
            endpoint, prompts[i], int(reqs.output_tokens[i]), t0=t0, aborter=aborter
        )

    def failed(i: int, exc: BaseException) -> StreamRecord:  # a bug, not a server fault
        logger.error("request %d raised %s: %s", i, type(exc).__name__, exc)
        return StreamRecord(np.nan, (), None, None, f"{type(exc).__name__}: {exc}")

    out = dispatch_open_loop(
        reqs.arrival_s,
        job,
        max_workers=endpoint.max_in_flight,
        stop_event=stop_event,
        grace_s=float(grace_s),
        abort=aborter.abort_all,
        on_fail=failed,
    )
    records = out.results
    planned = _head(reqs, prompts, len(records))
    timings = _timings(planned, records)
    lag = np.array([r.sent_s for r in records], dtype=float) - planned.arrival_s
    sent_lag = lag[np.isfinite(lag)]
    if sent_lag.size and sent_lag.max() > LAG_WARN_S:
        logger.warning(
            "requests were sent late (max %.3f s, p99 %.3f s after their arrival time): the "
            "client machine is overloaded, or max_in_flight (%d) is too low",
            sent_lag.max(), np.percentile(sent_lag, 99), endpoint.max_in_flight,
        )  # fmt: skip
    result = LoadResult(
        target=endpoint.name,
        workload=workload,
        requests=planned,
        timings=timings,
        duration_s=out.end_s,
        configuration=configuration,
        errors=tuple(r.error for r in records),
        send_lag_s=lag,
        interrupted=out.interrupted,
        extra={"t0_perf_s": out.t0, "base_url": endpoint.base_url, "model": endpoint.model},
    )
    if out.keyboard_interrupt:
        raise LoadInterrupted(result)
    return result


def _head(reqs: RequestSet, prompts: tuple[str, ...], k: int) -> RequestSet:
    """The first ``k`` requests, with the prompt texts that were sent."""
    return RequestSet(
        reqs.arrival_s[:k], reqs.input_tokens[:k], reqs.output_tokens[:k], prompts[:k]
    )


def _timings(reqs: RequestSet, records: Sequence[StreamRecord]) -> RequestTimings:
    """Columnar timings: arrival = actual send time; failed requests have NaN first/finish."""
    first = np.array([r.token_times_s[0] if r.ok else np.nan for r in records], dtype=float)
    finish = np.array([r.token_times_s[-1] if r.ok else np.nan for r in records], dtype=float)
    ins = np.array([r.prompt_tokens or k for r, k in zip(records, reqs.input_tokens, strict=True)],
                   dtype=np.int64)  # fmt: skip
    outs = np.array(
        [r.output_tokens if r.ok and r.output_tokens else k
         for r, k in zip(records, reqs.output_tokens, strict=True)],
        dtype=np.int64,
    )  # fmt: skip
    counts = np.array([len(r.token_times_s) for r in records], dtype=np.int64)
    times = np.array([t for r in records for t in r.token_times_s], dtype=float)
    return RequestTimings(
        np.array([r.sent_s for r in records], dtype=float),
        first,
        finish,
        ins,
        outs,
        token_times_s=times,
        token_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )
