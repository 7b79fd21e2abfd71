"""One vLLM engine in a child process: ``python -m greenllm.backends.vllm.worker``.

Runs in the vLLM venv. Protocol (:mod:`.protocol`): JSON lines with a ``"type"``, commands on
stdin, events on stdout (the real stdout; anything vLLM prints is sent to stderr).

Commands:

* ``start`` (first line: ``kind``, ``device``, ``engine``): checks the vLLM version and the
  features ``kind`` needs, builds ``vllm.LLM(**engine)``, answers ``ready`` (``version``,
  ``device``, ``start_s``, ``kv_bytes_per_token``, ``features``, ``pid``).
* ``add`` (``rid``, ``token_ids``, ``max_tokens``, ``at_s``, ``kv_transfer_params``): greedy
  generation of exactly ``max_tokens`` tokens (``ignore_eos``), submitted to the engine when
  ``time.monotonic()`` reaches ``at_s`` (open loop; now if 0).
* ``tokenize`` (``texts``) -> ``tokens`` (``token_ids``).
* ``metrics`` -> ``metrics`` (``metrics``: ``LLM.get_metrics()`` as plain data).
* ``shutdown``.

Streaming events per engine step: ``out`` (``rid``, ``ids``, ``t`` = the step's engine-core
timestamp, ``time.monotonic()``), and on completion ``done`` (``rid``, ``stats``,
``submit_s``, ``kv_transfer_params``). Failures: ``error`` (``kind``, ``message``; kind
``unavailable`` for a missing version or feature).
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from typing import IO, Any, cast

from greenllm.backends.vllm.metrics import request_stats, serialize_metrics
from greenllm.backends.vllm.process import end_group_if_orphaned
from greenllm.backends.vllm.protocol import (
    AddCommand,
    DoneEvent,
    ErrorEvent,
    MetricsEvent,
    OutEvent,
    ReadyEvent,
    StartCommand,
    TokensEvent,
    decode,
    encode,
)

__all__ = ["main", "serve"]

logger = logging.getLogger("greenllm.backends.vllm.worker")


class _Out:
    """Writes events to the protocol stream, one line each, from any thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: Mapping[str, Any]) -> None:
        line = encode(event)
        with self.lock:
            self.stream.write(line)
            self.stream.flush()


def _reader(inbox: queue.Queue[dict[str, Any] | None]) -> None:
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            inbox.put(decode(line))
        except ValueError as err:  # answered by the loop that reads the inbox
            inbox.put({"type": "invalid", "message": str(err)})
    inbox.put(None)  # parent closed stdin: shut down


def _kv_bytes_per_token(llm: Any) -> int:
    """Bytes of K and V of one token over all layers, from the model config and KV dtype."""
    cfg = llm.llm_engine.model_config
    hf = cfg.hf_config
    layers = int(hf.num_hidden_layers)
    kv_heads = int(getattr(hf, "num_key_value_heads", hf.num_attention_heads))
    head_dim = int(getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads)
    element = int(getattr(cfg.dtype, "itemsize", 4))
    return 2 * layers * kv_heads * head_dim * element


def _start(cmd: StartCommand, out: _Out) -> Any:
    from greenllm.backends.vllm.versions import check, probe_features

    version, features = probe_features()
    check(version, features, cmd["kind"], device=cmd["device"])
    from vllm import LLM

    t0 = time.monotonic()
    llm = LLM(**cmd["engine"])
    ready: ReadyEvent = {
        "type": "ready",
        "version": version,
        "device": str(cmd["device"]),
        "start_s": time.monotonic() - t0,
        "kv_bytes_per_token": _kv_bytes_per_token(llm),
        "features": features,
        "pid": os.getpid(),
    }
    out(ready)
    return llm


def _params(cmd: AddCommand) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    n = int(cmd["max_tokens"])
    extra = (
        {"kv_transfer_params": cmd["kv_transfer_params"]} if cmd.get("kv_transfer_params") else None
    )
    return SamplingParams(
        temperature=0.0,
        max_tokens=n,
        min_tokens=n,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra,
    )


def serve(llm: Any, inbox: queue.Queue[dict[str, Any] | None], out: _Out) -> None:
    """The engine loop: submit due requests, step while work is pending, answer commands."""
    engine = llm.llm_engine
    pending: list[tuple[float, int, AddCommand]] = []  # (at_s, seq, add command)
    submitted: dict[str, float] = {}
    seq = 0
    while True:
        busy = engine.has_unfinished_requests()
        now = time.monotonic()
        wait = 0.0 if busy else (max(0.0, pending[0][0] - now) if pending else 0.5)
        try:
            cmd: dict[str, Any] | None = inbox.get(timeout=wait) if wait > 0 else inbox.get_nowait()
        except queue.Empty:
            cmd = {}
        while cmd is not None and cmd:
            kind = cmd["type"]
            if kind == "add":
                seq += 1
                add = cast(AddCommand, cmd)
                heapq.heappush(pending, (float(add["at_s"] or 0.0), seq, add))
            elif kind == "tokenize":
                tok = llm.get_tokenizer()
                tokens: TokensEvent = {
                    "type": "tokens",
                    "token_ids": [list(tok.encode(t)) for t in cmd["texts"]],
                }
                out(tokens)
            elif kind == "metrics":
                metrics: MetricsEvent = {
                    "type": "metrics",
                    "metrics": serialize_metrics(llm.get_metrics()),
                }
                out(metrics)
            elif kind == "shutdown":
                return
            else:
                logger.warning("ignoring command %r", cmd)
            try:
                cmd = inbox.get_nowait()
            except queue.Empty:
                cmd = {}
        if cmd is None:
            return
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, add = heapq.heappop(pending)
            rid = str(add["rid"])
            engine.add_request(rid, {"prompt_token_ids": add["token_ids"]}, _params(add))
            submitted[rid] = time.monotonic()
        if engine.has_unfinished_requests():
            for o in engine.step():
                ids = list(o.outputs[0].token_ids) if o.outputs else []
                m = o.metrics
                t = (
                    float(m.last_token_ts)
                    if m is not None and m.last_token_ts
                    else time.monotonic()
                )
                if ids:
                    step: OutEvent = {"type": "out", "rid": o.request_id, "ids": ids, "t": t}
                    out(step)
                if o.finished:
                    done: DoneEvent = {
                        "type": "done",
                        "rid": o.request_id,
                        "stats": request_stats(o),
                        "submit_s": submitted.pop(o.request_id, float("nan")),
                        "kv_transfer_params": getattr(o, "kv_transfer_params", None),
                    }
                    out(done)


def _error(kind: str, message: str) -> ErrorEvent:
    return {"type": "error", "kind": kind, "message": message}


def main() -> None:
    """Serve one engine over stdin/stdout until ``shutdown`` or the end of stdin."""
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (vLLM logs, C code) goes to stderr
    sys.stdout = sys.stderr
    out = _Out(proto)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_reader, args=(inbox,), daemon=True).start()
    first = inbox.get()
    if not first or first["type"] != "start":
        out(_error("protocol", f"first command must be 'start', got {first!r}"))
        sys.exit(2)
    try:
        llm = _start(cast(StartCommand, first), out)
    except ImportError as err:  # BackendUnavailableError is an ImportError
        out(_error("unavailable", str(err)))
        sys.exit(3)
    except Exception as err:
        traceback.print_exc()
        out(_error("start", f"{type(err).__name__}: {err}"))
        sys.exit(4)
    try:
        serve(llm, inbox, out)
    except Exception as err:
        traceback.print_exc()
        out(_error("serve", f"{type(err).__name__}: {err}"))
        sys.exit(5)
    finally:
        proto.flush()
    # LLM teardown can hang on CPU; the parent ends the process group, or, if it died, we do
    end_group_if_orphaned()
    os._exit(0)


if __name__ == "__main__":
    main()
