"""One vLLM engine in a child process: ``python -m greenllm.backends.vllm.worker``.

Runs in the vLLM venv. Protocol: JSON lines, commands on stdin, events on stdout (the real
stdout; anything vLLM prints is sent to stderr).

Commands:

* ``{"op": "start", "name", "kind", "device", "engine": {...EngineArgs...}}`` (first line):
  checks the vLLM version and the features ``kind`` needs, builds ``vllm.LLM(**engine)``,
  answers ``{"event": "ready", "version", "device", "start_s", "kv_bytes_per_token"}``.
* ``{"op": "add", "rid", "token_ids", "max_tokens", "at_s", "kv_transfer_params"?}``:
  greedy generation of exactly ``max_tokens`` tokens (``ignore_eos``), submitted to the engine
  when ``time.monotonic()`` reaches ``at_s`` (open loop; now if absent).
* ``{"op": "tokenize", "texts"}`` -> ``{"event": "tokens", "token_ids"}``.
* ``{"op": "metrics"}`` -> ``{"event": "metrics", "metrics": [...]}`` (``LLM.get_metrics()``).
* ``{"op": "shutdown"}``.

Streaming events per engine step: ``{"event": "out", "rid", "ids", "t"}`` (``t`` = the step's
engine-core timestamp, ``time.monotonic()``), and on completion ``{"event": "done", "rid",
"stats", "submit_s", "kv_transfer_params"}``. Failures: ``{"event": "error", "kind",
"message"}`` (kind ``unavailable`` for a missing version or feature).
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import queue
import sys
import threading
import time
import traceback
from typing import IO, Any

from greenllm.backends.vllm.metrics import request_stats, serialize_metrics

logger = logging.getLogger("greenllm.backends.vllm.worker")


class _Out:
    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":"))
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


def _reader(inbox: queue.Queue[dict[str, Any] | None]) -> None:
    for line in sys.stdin:
        line = line.strip()
        if line:
            inbox.put(json.loads(line))
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


def _start(cmd: dict[str, Any], out: _Out) -> Any:
    from greenllm.backends.vllm.versions import check, probe_features

    version, features = probe_features()
    check(version, features, cmd["kind"], device=cmd.get("device", "cpu"))
    from vllm import LLM

    t0 = time.monotonic()
    llm = LLM(**cmd["engine"])
    out(
        "ready",
        version=version,
        device=str(cmd.get("device", "cpu")),
        start_s=time.monotonic() - t0,
        kv_bytes_per_token=_kv_bytes_per_token(llm),
        features=features,
        pid=os.getpid(),
    )
    return llm


def _params(cmd: dict[str, Any]) -> Any:
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
    pending: list[tuple[float, int, dict[str, Any]]] = []  # (at_s, seq, add command)
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
            op = cmd.get("op")
            if op == "add":
                seq += 1
                heapq.heappush(pending, (float(cmd.get("at_s") or 0.0), seq, cmd))
            elif op == "tokenize":
                tok = llm.get_tokenizer()
                out("tokens", token_ids=[list(tok.encode(t)) for t in cmd["texts"]])
            elif op == "metrics":
                out("metrics", metrics=serialize_metrics(llm.get_metrics()))
            elif op == "shutdown":
                return
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
                    out("out", rid=o.request_id, ids=ids, t=t)
                if o.finished:
                    out(
                        "done",
                        rid=o.request_id,
                        stats=request_stats(o),
                        submit_s=submitted.pop(o.request_id, float("nan")),
                        kv_transfer_params=getattr(o, "kv_transfer_params", None),
                    )


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else written to stdout (vLLM logs, C code) goes to stderr
    sys.stdout = sys.stderr
    out = _Out(proto)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_reader, args=(inbox,), daemon=True).start()
    first = inbox.get()
    if not first or first.get("op") != "start":
        out("error", kind="protocol", message=f"first command must be 'start', got {first!r}")
        sys.exit(2)
    try:
        llm = _start(first, out)
    except ImportError as err:  # BackendUnavailableError is an ImportError
        out("error", kind="unavailable", message=str(err))
        sys.exit(3)
    except Exception as err:
        traceback.print_exc()
        out("error", kind="start", message=f"{type(err).__name__}: {err}")
        sys.exit(4)
    try:
        serve(llm, inbox, out)
    except Exception as err:
        traceback.print_exc()
        out("error", kind="serve", message=f"{type(err).__name__}: {err}")
        sys.exit(5)
    finally:
        proto.flush()
    # LLM teardown can hang on CPU; the parent ends the process group anyway
    os._exit(0)


if __name__ == "__main__":
    main()
