"""A real OpenAI-compatible streaming server on 127.0.0.1 for the load-generator tests.

Stdlib only (``http.server.ThreadingHTTPServer`` on port 0, HTTP/1.1 chunked SSE, like vLLM's
uvicorn). Each request streams ``max_tokens`` chunks (``tokens_per_chunk`` tokens each, fewer if
``eos_after`` tokens is reached and ``ignore_eos`` is not set): the first ``ttft_s`` after the
request was received, then one every ``token_delay_s`` on an absolute schedule (no drift).
``fail(body) -> mode | None`` picks a failure per request: ``"http500"``, ``"drop"`` (close the
connection after two chunks), ``"error_event"`` (an error object in the stream) or ``"stall"``
(stop after one chunk until the server shuts down).

Also a benchmark of the client's accuracy against a stub in another process, quoted in
docs/loadgen.md::

    python -m tests.profiler.loadgen.openai_stub [--qps 20] [--n 200] [--ttft 0.05] [--delay 0.02]
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class StubConfig:
    ttft_s: float = 0.05
    token_delay_s: float = 0.01
    tokens_per_chunk: int = 1
    eos_after: int | None = None  # stop early (EOS) unless the request sets ignore_eos
    send_usage: bool = True  # honour stream_options.include_usage
    empty_text_chunks: frozenset[int] = frozenset()  # chunk indices whose text is "" (special)
    separate_finish: bool = False  # finish_reason in an extra empty chunk (OpenAI) not the last
    prompt_tokens: Callable[[str], int] = lambda text: len(text.split()) + 1  # words + BOS
    fail: Callable[[dict[str, Any]], str | None] = lambda body: None


@dataclass
class Received:
    """One request as the server saw it (``t_perf`` is ``time.perf_counter()`` on receipt)."""

    t_perf: float
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class OpenAIStub:
    """Start with :meth:`start` (or ``with``); ``base_url`` then points at the server."""

    config: StubConfig = field(default_factory=StubConfig)
    received: list[Received] = field(default_factory=list)
    in_flight_max: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closing: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the stub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OpenAIStub:
        stub = self

        class Handler(_Handler):
            owner = stub

        Server = type("Server", (ThreadingHTTPServer,), {"request_queue_size": 1024})
        server = Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # http.server's naming
        t_recv = time.perf_counter()
        stub, cfg = self.owner, self.owner.config
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with stub._lock:
            stub.received.append(Received(t_recv, self.path, body, dict(self.headers)))
            stub._in_flight += 1
            stub.in_flight_max = max(stub.in_flight_max, stub._in_flight)
        try:
            self._serve(t_recv, body, cfg)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with stub._lock:
                stub._in_flight -= 1

    def _serve(self, t_recv: float, body: dict[str, Any], cfg: StubConfig) -> None:
        chat = self.path.endswith("/chat/completions")
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        mode = cfg.fail(body)
        if mode == "http500":
            return self._json(500, {"error": {"message": "stub failure"}})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        n_tokens = int(body["max_tokens"])
        if cfg.eos_after is not None and not body.get("ignore_eos"):
            n_tokens = min(n_tokens, cfg.eos_after)
        k = cfg.tokens_per_chunk
        n_chunks = -(-n_tokens // k)
        reason = "length" if n_tokens == body["max_tokens"] else "stop"
        for c in range(n_chunks):
            _sleep_until(t_recv + cfg.ttft_s + c * cfg.token_delay_s)
            if mode == "drop" and c == 2:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            if mode == "stall" and c == 1:
                self.owner._closing.wait()
                return None
            if mode == "error_event" and c == 1:
                self._event({"object": "error", "message": "stub error event", "code": 500})
                break
            if chat and c == 0:  # vLLM announces the role first, with empty content
                self._choice({"delta": {"role": "assistant", "content": ""}}, None)
            text = "" if c in cfg.empty_text_chunks else " tok" * min(k, n_tokens - c * k)
            last = c == n_chunks - 1 and not cfg.separate_finish
            self._choice({"delta": {"content": text}} if chat else {"text": text},
                         reason if last else None)  # fmt: skip
        if cfg.separate_finish and mode is None:
            self._choice({"delta": {}} if chat else {"text": ""}, reason)
        opts = body.get("stream_options") or {}
        if cfg.send_usage and opts.get("include_usage") and mode is None:
            prompt = body["messages"][0]["content"] if chat else body["prompt"]
            n_in = cfg.prompt_tokens(prompt)
            usage = {"prompt_tokens": n_in, "completion_tokens": n_tokens,
                     "total_tokens": n_in + n_tokens}  # fmt: skip
            self._event({"id": "cmpl-stub", "choices": [], "usage": usage})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")
        return None

    def _choice(self, part: dict[str, Any], finish_reason: str | None) -> None:
        choice = {"index": 0, **part, "finish_reason": finish_reason}
        self._event({"id": "cmpl-stub", "object": "text_completion", "choices": [choice]})

    def _event(self, obj: dict[str, Any]) -> None:
        self._chunk(f"data: {json.dumps(obj)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _sleep_until(t: float) -> None:
    left = t - time.perf_counter()
    if left > 0:
        time.sleep(left)


def _serve_child(ttft_s: float, delay_s: float, conn: Any) -> None:
    """Run a stub in this (child) process; report what it received when told to stop."""
    with OpenAIStub(StubConfig(ttft_s=ttft_s, token_delay_s=delay_s)) as stub:
        conn.send(stub.base_url)
        conn.recv()
        conn.send(([(r.body.get("prompt"), r.t_perf) for r in stub.received], stub.in_flight_max))


def _bench(argv: list[str] | None = None) -> None:
    """Measure the client against the stub, served by another process (JSON out).

    ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, so the server's receive times compare
    with the client's schedule across processes.
    """
    import multiprocessing as mp
    import resource

    import numpy as np

    from greenllm.config import SLO, RequestSize, Workload
    from greenllm.profiler.loadgen import OpenAIEndpoint, run_load

    p = argparse.ArgumentParser(prog="python -m tests.profiler.loadgen.openai_stub")
    p.add_argument("--qps", type=float, default=20.0)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--ttft", type=float, default=0.05)
    p.add_argument("--delay", type=float, default=0.02)
    p.add_argument("--output-tokens", type=int, default=32)
    args = p.parse_args(argv)
    size = RequestSize(input_tokens=128, output_tokens=args.output_tokens)
    w = Workload(application="bench", request_size=size, qps=args.qps,
                 slo=SLO(ttft_s=args.ttft * 2, tpot_s=args.delay * 1.5))  # fmt: skip
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(
        target=_serve_child, args=(args.ttft, args.delay, child), daemon=True
    )
    proc.start()
    try:
        url = parent.recv()
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        res = run_load(OpenAIEndpoint(url, "stub"), w, n=args.n, seed=0)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        parent.send("stop")
        received, in_flight = parent.recv()
    finally:
        proc.join(10)
    index = {prompt: i for i, prompt in enumerate(res.requests.prompts)}
    t0 = res.extra["t0_perf_s"]
    recv_lag = [t - t0 - res.requests.arrival_s[index[pr]] for pr, t in received]
    gaps = np.concatenate(res.inter_token_times_s())
    cpu_s = sum(getattr(cpu1, f) - getattr(cpu0, f) for f in ("ru_utime", "ru_stime"))
    out = {
        "n": len(res),
        "client_cpu_s": round(cpu_s, 3),
        "client_cpu_us_per_chunk": round(cpu_s / len(res.timings.token_times_s) * 1e6, 1),
        "failed": res.n_failed,
        "server_max_in_flight": in_flight,
        "ttft_excess_ms": _pct((res.ttft_s - args.ttft) * 1e3),
        "gap_excess_ms": _pct((gaps - args.delay) * 1e3),
        "send_lag_ms": _pct(res.send_lag_s * 1e3),
        "server_receive_lag_ms": _pct(np.array(recv_lag) * 1e3),
        "slo_attainment_mean_rule": res.slo_attainment()[0],
        "slo_attainment_per_token": res.slo_attainment_per_token()[0],
    }
    print(json.dumps(out, indent=2))


def _pct(x: Any) -> dict[str, float]:
    import numpy as np

    p50, p99 = np.percentile(x, [50, 99])
    return {"p50": round(float(p50), 3), "p99": round(float(p99), 3),
            "max": round(float(np.max(x)), 3)}  # fmt: skip


if __name__ == "__main__":
    _bench()
