"""The gateway's upstream HTTP client: httpx against aiohttp, side by side, on vLLM's stream.

The gateway reads every token of every request from its upstream over HTTP/SSE, so the client
library sits on the path of each token. This script streams the same completions (16 tokens,
vLLM's chunk format with ``token_ids`` and a usage chunk) from a vLLM-like SSE server (in a
subprocess: a 20 ms "prefill", then a token every 5 ms, on uvicorn) with both libraries,
alternating requests, and prints the time to the first data line (p50, p99) and the client
process's CPU time per request, at each concurrency, on uvloop (the gateway's loop).

Run: ``python benchmarks/bench_upstream_client.py [--requests 200] [--concurrency 1,32]``
(needs aiohttp and httpx: the ``serve`` and ``test`` extras).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve_overhead import listening

PREFILL_S, TOKEN_S, TOKENS = 0.020, 0.005, 16
BODY = {"model": "m", "prompt": "tell me about GPUs", "stream": True, "max_tokens": TOKENS,
        "stream_options": {"include_usage": True}, "return_token_ids": True}  # fmt: skip
Probe = Callable[[], Awaitable[float]]  # one streamed request -> seconds to its first data line


def serve() -> None:
    """The vLLM-like SSE server (``--serve``); prints ``listening on URL``."""
    import uvicorn
    import uvloop
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from greenllm.serve import bind_socket

    async def completions(request: Request) -> StreamingResponse:
        body = json.loads(await request.body())
        rid, n = uuid.uuid4().hex, int(body["max_tokens"])

        async def events() -> AsyncIterator[str]:
            await asyncio.sleep(PREFILL_S)
            for i in range(n):
                if i:
                    await asyncio.sleep(TOKEN_S)
                choice = {"index": 0, "text": f" t{i}", "token_ids": [100 + i],
                          "finish_reason": "length" if i == n - 1 else None}  # fmt: skip
                event = {"id": "cmpl-" + rid, "object": "text_completion",
                         "model": body["model"], "choices": [choice]}  # fmt: skip
                yield f"data: {json.dumps(event)}\n\n"
            usage = {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n}
            yield f"data: {json.dumps({'id': 'cmpl-' + rid, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def main() -> None:
        app = Starlette(routes=[Route("/v1/completions", completions, methods=["POST"])])
        sock = bind_socket("127.0.0.1", 0)
        config = uvicorn.Config(app, log_level="warning", loop="uvloop", http="httptools")
        print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr,
              flush=True)  # fmt: skip
        await uvicorn.Server(config).serve(sockets=[sock])

    uvloop.run(main())


async def compare(url: str, levels: list[int], requests: int) -> None:
    import aiohttp
    import httpx

    hx = httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=max(levels) + 4))
    ah = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max(levels) + 4))

    async def with_httpx() -> float:
        t0, first = time.perf_counter(), None
        async with hx.stream("POST", url + "/v1/completions", json=BODY) as resp:
            async for line in resp.aiter_lines():
                if first is None and line.startswith("data: {"):
                    first = time.perf_counter() - t0
        assert first is not None
        return first

    async def with_aiohttp() -> float:
        t0, first = time.perf_counter(), None
        async with ah.post(url + "/v1/completions", json=BODY) as resp:
            async for line in resp.content:
                if first is None and line.startswith(b"data: {"):
                    first = time.perf_counter() - t0
        assert first is not None
        return first

    probes: dict[str, Probe] = {"httpx": with_httpx, "aiohttp": with_aiohttp}
    print(f"{'conc':>5} {'client':>8} {'first line p50':>15} {'p99':>9} {'CPU per request':>16}")
    try:
        for c in levels:
            for probe in probes.values():  # warm both
                await asyncio.gather(*(probe() for _ in range(c)))
            got: dict[str, tuple[list[float], float]] = {k: ([], 0.0) for k in probes}
            rounds = max(1, requests // (4 * c))
            for _ in range(rounds):  # alternate: both see the same machine state
                for name, probe in probes.items():
                    sem = asyncio.Semaphore(c)

                    async def one(p: Probe = probe, s: asyncio.Semaphore = sem) -> float:
                        async with s:
                            return await p()

                    cpu0 = time.process_time()
                    firsts = await asyncio.gather(*(one() for _ in range(4 * c)))
                    times, cpu = got[name]
                    got[name] = (times + list(firsts), cpu + time.process_time() - cpu0)
            for name, (times, cpu) in got.items():
                print(f"{c:>5} {name:>8} {1e3 * np.percentile(times, 50):>12.2f} ms "
                      f"{1e3 * np.percentile(times, 99):>6.2f} ms "
                      f"{1e3 * cpu / len(times):>13.2f} ms")  # fmt: skip
            (hx_t, hx_cpu), (ah_t, ah_cpu) = got["httpx"], got["aiohttp"]
            print(f"{c:>5} aiohttp against httpx: first line p50 "
                  f"{1e3 * (np.percentile(ah_t, 50) - np.percentile(hx_t, 50)):+.2f} ms, "
                  f"CPU per request x{ah_cpu / hx_cpu:.2f}")  # fmt: skip
    finally:
        await hx.aclose()
        await ah.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    ap.add_argument("--requests", type=int, default=256, help="per client and level")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve()
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    import uvloop

    with listening([sys.executable, __file__, "--serve"]) as (url, _):
        uvloop.run(compare(url, levels, args.requests))  # the loop the gateway runs on


if __name__ == "__main__":
    main()
