"""Drive requests through vLLM workers: one engine, or prefill then decode (DPD's router).

:func:`route` submits every request at its arrival time (open loop: the worker adds it to
its engine when ``time.monotonic()`` reaches the time) and collects the streamed tokens.

Disg-Pref-Decode (Section 3 of the paper): each request goes to the prefill engine with
``max_tokens=1``; when that finishes, the router hands the request to the decode engine, whose
tokens stream back. Two hand-offs:

* ``"append_first_token"`` (ExampleConnector): the prefill engine's token is the first output
  token; the decode engine gets prompt + that token and generates the rest, loading the
  prompt's KV (whole blocks) from the connector's store instead of recomputing it.
* ``"kv_transfer_params"`` (NixlConnector, vLLM's proxy protocol): the prefill request carries
  ``{"do_remote_decode": true}``; its output's ``kv_transfer_params`` go with the original
  request to the decode engine, which pulls the KV and produces every output token.

The hand-off message (token ids, 4 bytes each, plus the transfer parameters) is counted as
link bytes; the KV bytes themselves come from the decode engine's external-KV token count.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from greenllm.backends.vllm.process import WorkerProcess
from greenllm.backends.vllm.protocol import AddCommand, DoneEvent, ExitEvent, OutEvent
from greenllm.errors import ConfigError, WorkerError

__all__ = ["Handoff", "RequestRecord", "route"]

logger = logging.getLogger(__name__)

Handoff = Literal["append_first_token", "kv_transfer_params"]
TOKEN_ID_BYTES = 4  # int32 token ids on the link


@dataclass
class RequestRecord:
    """What happened to one request (times are ``time.monotonic()`` of this host)."""

    index: int
    arrival_s: float
    token_ids: list[int] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine name -> done stats
    submit_s: dict[str, float] = field(default_factory=dict)  # engine name -> submit time
    handoff_bytes: int = 0
    finished: bool = False


def route(
    requests: Sequence[tuple[float, list[int], int]],
    *,
    engine: WorkerProcess | None = None,
    prefill: WorkerProcess | None = None,
    decode: WorkerProcess | None = None,
    handoff: Handoff = "append_first_token",
    run_id: str = "run",
    timeout_s: float = 600.0,
) -> list[RequestRecord]:
    """Serve ``requests`` (``(arrival monotonic s, prompt ids, output tokens)``) and return one
    record per request, in order. Give ``engine`` alone, or ``prefill`` and ``decode``."""
    disaggregated = prefill is not None or decode is not None
    if disaggregated == (engine is not None) or (disaggregated and None in (prefill, decode)):
        raise ConfigError("give engine=..., or both prefill=... and decode=...")
    if handoff not in ("append_first_token", "kv_transfer_params"):
        raise ConfigError(f"handoff {handoff!r}: use 'append_first_token' or 'kv_transfer_params'")
    workers = [w for w in (engine, prefill, decode) if w is not None]
    sink: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
    saved = [w.sink for w in workers]
    for w in workers:
        w.sink = sink
    records = [RequestRecord(i, at) for i, (at, _, _) in enumerate(requests)]
    first = prefill if disaggregated else engine
    assert first is not None
    try:
        for i, (at, ids, n_out) in enumerate(requests):
            remote = disaggregated and handoff == "kv_transfer_params"
            cmd: AddCommand = {
                "type": "add",
                "rid": f"{run_id}-{i}",
                "token_ids": ids,
                "at_s": at,
                "max_tokens": 1 if disaggregated else n_out,
                "kv_transfer_params": {"do_remote_decode": True} if remote else None,
            }
            first.send(cmd)
        _collect(records, requests, sink, first, decode, handoff, run_id, timeout_s)
    finally:
        for w, s in zip(workers, saved, strict=True):
            w.sink = s
    return records


def _index(rid: str, run_id: str) -> int:
    return int(rid.removeprefix(run_id + "-"))


def _collect(
    records: list[RequestRecord],
    requests: Sequence[tuple[float, list[int], int]],
    sink: queue.Queue[tuple[str, dict[str, Any]]],
    first: WorkerProcess,
    decode: WorkerProcess | None,
    handoff: Handoff,
    run_id: str,
    timeout_s: float,
) -> None:
    by_name = {first.name: first, **({decode.name: decode} if decode else {})}
    left = len(records)
    last_arrival = max((at for at, _, _ in requests), default=time.monotonic())
    deadline = max(time.monotonic(), last_arrival) + timeout_s
    while left:
        try:
            name, ev = sink.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() > deadline:
                todo = [r.index for r in records if not r.finished]
                raise WorkerError(
                    f"{len(todo)} requests unfinished after {timeout_s:.0f} s "
                    f"(first: {todo[:5]}); raise request_timeout_s or lower the load"
                ) from None
            continue
        kind = ev["type"]
        if kind == "error":
            raise by_name[name].error_from(ev)
        if kind == "exit":
            code = cast(ExitEvent, ev)["returncode"]
            raise by_name[name].error(f"exited with code {code} during the run")
        if kind == "out":
            step = cast(OutEvent, ev)
            keep = not (
                decode is not None and name == first.name and handoff == "kv_transfer_params"
            )
            if keep:
                rec = records[_index(step["rid"], run_id)]
                rec.token_ids.extend(step["ids"])
                rec.token_times_s.extend([float(step["t"])] * len(step["ids"]))
            continue
        if kind != "done":
            continue
        done = cast(DoneEvent, ev)
        rec = records[_index(done["rid"], run_id)]
        rec.stats[name] = done.get("stats", {})
        rec.submit_s[name] = float(done.get("submit_s", math.nan))
        _, prompt, n_out = requests[rec.index]
        if decode is None or name == decode.name:
            rec.finished = True
            left -= 1
            continue
        # prefill finished: hand the request to the decode engine
        if handoff == "append_first_token":
            if n_out <= 1 or not rec.token_ids:
                rec.finished = True
                left -= 1
                continue
            ids, n_more, params = [*prompt, rec.token_ids[0]], n_out - 1, None
        else:
            ids, n_more, params = list(prompt), n_out, done.get("kv_transfer_params")
        cmd: AddCommand = {"type": "add", "rid": done["rid"], "token_ids": ids,
                           "max_tokens": n_more, "at_s": 0.0,
                           "kv_transfer_params": params}  # fmt: skip
        rec.handoff_bytes += TOKEN_ID_BYTES * len(ids) + (len(json.dumps(params)) if params else 0)
        decode.send(cmd)
